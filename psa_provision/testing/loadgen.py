"""A bounded load generator: one thread creating tickets through the app's gateway, recording every ack.

Used by the migration test (and the benchmark) to prove that no acknowledged write is lost: a ticket
counts as acknowledged only when the gateway answered 201 with its id. When a gateway refuses (its
PM2 apps stopped for a migration step, or moved away), the generator tries the next gateway of the
list, logging in there first. Bounded in rate, count and time. Stdlib only (urllib).
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field

from psa_provision.drill.writer import TIMEOUT_S, login, request

__all__ = ["LoadResult", "TicketLoad", "request"]



@dataclass
class LoadResult:
    """What the generator saw: acknowledged ticket ids, when each write succeeded, failures."""

    acked: list[int] = field(default_factory=list)
    success_times: list[float] = field(default_factory=list)  # time.monotonic() of each ack
    failures: int = 0
    switches: list[str] = field(default_factory=list)  # "t=12.3s -> http://10.0.20.230:3000"
    started: float = 0.0
    ended: float = 0.0

    @property
    def longest_gap_s(self) -> float:
        """Write downtime: the longest time without a successful write (start and end included)."""
        marks = [self.started, *self.success_times, self.ended]
        return max((b - a for a, b in itertools.pairwise(marks)), default=0.0)

    @property
    def seconds(self) -> float:
        return self.ended - self.started


class TicketLoad:
    """Creates tickets at up to `rate` per second until stopped, `max_seconds` or `max_tickets`."""

    def __init__(self, gateways: list[str], email: str, password: str, *, rate: float = 5.0,
                 max_seconds: float = 900.0, max_tickets: int = 10_000, label: str = "load") -> None:
        self.gateways = gateways
        self.email, self.password = email, password
        self.rate, self.max_seconds, self.max_tickets = rate, max_seconds, max_tickets
        self.label = label
        self.result = LoadResult()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ticket-load", daemon=True)
        self._current = 0
        self._token: str | None = None

    def start(self) -> TicketLoad:
        self.result.started = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> LoadResult:
        """Stop, wait for the thread (its last request is bounded by TIMEOUT_S), return the result."""
        self._stop.set()
        self._thread.join(timeout=TIMEOUT_S * 3)
        self.result.ended = time.monotonic()
        return self.result

    def _login(self, base: str) -> bool:
        self._token = login(base, self.email, self.password)[0]
        return self._token is not None

    def _next_gateway(self) -> None:
        self._current = (self._current + 1) % len(self.gateways)
        self._token = None
        self.result.switches.append(f"t={time.monotonic() - self.result.started:.1f}s -> "
                                    f"{self.gateways[self._current]}")

    def _run(self) -> None:
        interval = 1.0 / self.rate
        n = 0
        while not self._stop.is_set() and n < self.max_tickets:
            if time.monotonic() - self.result.started > self.max_seconds:
                break
            began = time.monotonic()
            base = self.gateways[self._current]
            if self._token is None and not self._login(base):
                self.result.failures += 1
                self._next_gateway()
                self._stop.wait(interval)
                continue
            n += 1
            status, body = request("POST", f"{base}/api/tickets",
                                   {"title": f"{self.label} {n}", "body": "created during a migration"},
                                   self._token)
            if status == 201 and isinstance(body, dict) and body.get("id") is not None:
                self.result.acked.append(int(body["id"]))
                self.result.success_times.append(time.monotonic())
            else:
                self.result.failures += 1
                if status in (0, 401, 502, 503, 504):  # refused / gone: the next gateway
                    self._next_gateway()
            self._stop.wait(max(0.0, interval - (time.monotonic() - began)))
