"""The drill's bounded writer: tickets created through the VIP, each try recorded (stdlib only, urllib).

Each ticket has a unique key in its title (`drill <run> <n>`); a try that fails is retried with the
same key until acknowledged or `retries` tries, as a careful client does, so a duplicate in the
database means a commit the client was told had failed. Bounded in rate, count and time; it talks
only to the address it is given (the phase's VIP).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from psa_provision.drill.measure import Attempt

TIMEOUT_S = 5.0
ERROR_CHARS = 120  # of an error's message kept per attempt


def request(method: str, url: str, body: dict[str, Any] | None = None, token: str | None = None,
            timeout: float = TIMEOUT_S) -> tuple[int, Any]:
    """(HTTP status, decoded JSON body); status 0 when nothing answered (refused, timed out), with why."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - http to the phase's own VIP
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - http to the phase's own VIP
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, raw.decode(errors="replace")
    except (OSError, ValueError) as exc:
        return 0, str(getattr(exc, "reason", None) or exc)


def login(base: str, email: str, password: str) -> tuple[str | None, str]:
    """The app's bearer token from POST /api/auth/login at `base`, or None and what the client saw."""
    status, body = request("POST", f"{base}/api/auth/login", {"email": email, "password": password})
    token = body.get("token") if status == 200 and isinstance(body, dict) else None
    return (str(token), "") if token else (None, error_of(status, body))


def error_of(status: int, body: Any) -> str:
    """What a failed write's client saw, short enough to count alike ones: `HTTP 503: <message>`,
    `no answer: timed out`."""
    if isinstance(body, dict):
        body = body.get("error") or body.get("message") or json.dumps(body)
    text = " ".join(str(body or "").split())[:ERROR_CHARS]
    return f"no answer: {text}" if status == 0 else f"HTTP {status}: {text}" if text else f"HTTP {status}"


class TicketWriter:
    """Creates tickets at up to `rate` per second until stopped, `max_seconds` or `max_tickets`."""

    def __init__(self, base: str, email: str, password: str, run: str, *, rate: float = 5.0,
                 max_seconds: float = 600.0, max_tickets: int = 5_000, retries: int = 20) -> None:
        self.base, self.email, self.password, self.run = base, email, password, run
        self.rate, self.max_seconds, self.max_tickets, self.retries = rate, max_seconds, max_tickets, retries
        self.attempts: list[Attempt] = []
        self.started = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="drill-writer", daemon=True)
        self._token: str | None = None
        self._login_error = ""

    def now(self) -> float:
        """Seconds since the writer started (the drill's clock)."""
        return time.monotonic() - self.started

    def start(self) -> TicketWriter:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> list[Attempt]:
        self._stop.set()
        self._thread.join(timeout=TIMEOUT_S * 3)
        return list(self.attempts)

    def key(self, n: int) -> str:
        return f"drill {self.run} {n}"

    def _login(self) -> bool:
        self._token, self._login_error = login(self.base, self.email, self.password)
        return self._token is not None

    def _loop(self) -> None:
        interval = 1.0 / self.rate
        n, tries = 1, 0
        while not self._stop.is_set() and n <= self.max_tickets and self.now() < self.max_seconds:
            began = time.monotonic()
            sent = self.now()
            ok, error = False, ""
            if self._token is not None or self._login():
                status, body = request("POST", f"{self.base}/api/tickets",
                                       {"title": self.key(n), "body": "written by psa-provision drill"},
                                       self._token)
                ok = status == 201 and isinstance(body, dict) and body.get("id") is not None
                if status == 401:
                    self._token = None
                error = "" if ok else error_of(status, body)
            else:
                error = f"login failed: {self._login_error}"
            self.attempts.append(Attempt(self.key(n), sent, self.now(), ok, error=error))
            tries += 1
            if ok or tries >= self.retries:
                n, tries = n + 1, 0
            self._stop.wait(max(0.0, interval - (time.monotonic() - began)))
