"""A bounded, stepped load on the app's gateway with a realistic mix, for bench/run --figure platform.

The mix (MIX): logins, ticket create, read and search, CRM reads, the tickets report. Requests are sent
open-loop at a target rate (latency counts from when a request was due, so a saturated platform shows
as latency, not as a slower sender), in steps of `step_seconds`, the rate multiplied by `factor` after
each step, until a step's p99 reaches 500 ms or its errors pass `max_error_rate`. Bounded three ways:
the rate (`max_rate`), the number of requests (`max_requests`) and the time (`max_seconds`); it only
targets the sandbox's guest networks or loopback (check_target). Stdlib only.
"""

from __future__ import annotations

import ipaddress
import math
import random
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .loadgen import request

ALLOWED = tuple(ipaddress.ip_network(n) for n in ("10.0.20.0/24", "10.0.30.0/24", "127.0.0.0/8", "::1/128"))
P99_LIMIT_S = 0.5
# (operation, weight): a PSA day is mostly reading tickets and customers, some writing, few reports
MIX: tuple[tuple[str, int], ...] = (
    ("login", 3), ("ticket-create", 15), ("ticket-read", 25), ("ticket-list", 10), ("ticket-search", 15),
    ("crm-list", 12), ("crm-read", 15), ("report", 5),
)
SEED_CUSTOMERS = 10


def check_target(url: str) -> str:
    """The gateway URL when its host is a sandbox guest (10.0.20.0/24, 10.0.30.0/24) or loopback."""
    host = urllib.parse.urlsplit(url).hostname or ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{url}: give the gateway as an IP address of the sandbox (10.0.20.x)") from None
    if not any(address in net for net in ALLOWED):
        raise ValueError(f"{url}: the platform load only targets the sandbox's guests (10.0.20.0/24, "
                         "10.0.30.0/24) or loopback")
    return url.rstrip("/")


@dataclass(frozen=True)
class Bounds:
    """How far the load may go: start rate, growth per step, step length, and the three hard stops."""

    start_rate: float = 5.0  # requests per second
    factor: float = 1.5
    step_seconds: float = 30.0
    max_rate: float = 150.0
    max_requests: int = 60_000
    max_seconds: float = 900.0
    max_error_rate: float = 0.01
    workers: int = 48

    def __post_init__(self) -> None:
        if (self.start_rate <= 0 or self.factor <= 1 or self.step_seconds <= 0
                or self.max_rate < self.start_rate):
            raise ValueError("bounds: start_rate > 0, factor > 1, step_seconds > 0, max_rate >= start_rate")
        if self.max_requests < 1 or self.max_seconds <= 0 or self.workers < 1:
            raise ValueError("bounds: max_requests, max_seconds and workers must be positive")


def backlog_limit(bounds: Bounds) -> int:
    """Requests that may wait for an answer at once before a step stops sending (keeps a stalled
    platform from stretching a step past its time: at most this many more request timeouts)."""
    return 2 * bounds.workers


def rate_steps(bounds: Bounds) -> list[float]:
    """The target rates, start_rate times factor**n, up to max_rate and within the request and time budget."""
    rates: list[float] = []
    rate, spent, seconds = bounds.start_rate, 0, 0.0
    while rate <= bounds.max_rate * (1 + 1e-9):
        count = math.ceil(rate * bounds.step_seconds)
        if spent + count > bounds.max_requests or seconds + bounds.step_seconds > bounds.max_seconds:
            break
        rates.append(round(rate, 2))
        spent, seconds = spent + count, seconds + bounds.step_seconds
        rate *= bounds.factor
    return rates


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (p99 of 100 values is the 99th smallest); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


@dataclass
class Step:
    """One step: its target rate, each request's latency (s, from when it was due) and outcome."""

    rate: float
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    not_sent: int = 0  # requests left out because too many were still waiting for an answer
    by_operation: dict[str, int] = field(default_factory=dict)
    started: float = 0.0  # time.time() at its start, to find its rrddata rows

    @property
    def requests(self) -> int:
        return len(self.latencies)

    @property
    def p99(self) -> float:
        return percentile(self.latencies, 99)

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def per_minute(self) -> float:
        """Answered requests per minute (errors excluded)."""
        return 60 * (self.requests - self.errors) / self.seconds if self.seconds else 0.0

    def saturated(self, bounds: Bounds) -> str | None:
        """Why this step is past what the platform sustains, or None."""
        if self.p99 >= P99_LIMIT_S:
            return f"p99 {self.p99 * 1000:.0f} ms >= {P99_LIMIT_S * 1000:.0f} ms"
        if self.error_rate > bounds.max_error_rate:
            return f"errors {100 * self.error_rate:.1f}% > {100 * bounds.max_error_rate:g}%"
        if self.not_sent:
            return f"{self.not_sent} not sent: over {backlog_limit(bounds)} waited for an answer"
        return None


@dataclass
class LoadReport:
    steps: list[Step] = field(default_factory=list)
    stopped: str = ""  # why the stepping ended

    def sustained(self, bounds: Bounds) -> Step | None:
        """The busiest step the platform sustained (p99 < 500 ms and few errors)."""
        good = [s for s in self.steps if s.saturated(bounds) is None]
        return max(good, key=lambda s: s.per_minute) if good else None

    @property
    def saturating(self) -> Step | None:
        return self.steps[-1] if self.steps and self.stopped.startswith("saturated") else None


class Client:
    """The operations of the mix against one gateway, with a shared token and the ids seen so far."""

    def __init__(self, gateway: str, email: str, password: str, rng: random.Random) -> None:
        self.gateway, self.email, self.password = check_target(gateway), email, password
        self.rng = rng
        self.token = ""
        self.tickets: list[int] = []
        self.customers: list[int] = []
        self.lock = threading.Lock()

    def login(self) -> int:
        status, body = request("POST", f"{self.gateway}/api/auth/login",
                               {"email": self.email, "password": self.password})
        if status == 200 and isinstance(body, dict):
            self.token = str(body.get("token", ""))
        return status

    def prepare(self) -> None:
        """Log in and make sure there are customers and tickets to read."""
        if self.login() != 200:
            raise RuntimeError(f"login at {self.gateway} failed: check the admin credentials")
        status, body = request("GET", f"{self.gateway}/api/crm/customers?size=50", token=self.token)
        items = body.get("items", []) if status == 200 and isinstance(body, dict) else []
        found = [int(i["id"]) for i in items]
        for n in range(max(0, SEED_CUSTOMERS - len(found))):
            status, body = request("POST", f"{self.gateway}/api/crm/customers",
                                   {"name": f"bench customer {n}"}, self.token)
            if status == 201 and isinstance(body, dict):
                found.append(int(body["id"]))
        self.customers = found
        self.op("ticket-create")

    def pick(self) -> str:
        return self.rng.choices([name for name, _ in MIX], weights=[w for _, w in MIX])[0]

    def op(self, name: str) -> int:
        """One operation of the mix; its HTTP status (0: no answer)."""
        g, t = self.gateway, self.token
        with self.lock:
            ticket = self.rng.choice(self.tickets) if self.tickets else 1
            customer = self.rng.choice(self.customers) if self.customers else 1
            word = self.rng.choice(("printer", "vpn", "mail", "backup", "laptop"))
        if name == "login":
            return self.login()
        if name == "ticket-create":
            status, body = request("POST", f"{g}/api/tickets", {"title": f"{word} broken",
                                                                "body": "opened by the platform bench"}, t)
            if status == 201 and isinstance(body, dict):
                with self.lock:
                    self.tickets.append(int(body["id"]))
            return status
        paths = {"ticket-read": f"/api/tickets/{ticket}", "ticket-list": "/api/tickets?size=20",
                 "ticket-search": f"/api/tickets?q={word}", "crm-list": "/api/crm/customers?size=20",
                 "crm-read": f"/api/crm/customers/{customer}", "report": "/api/reports/tickets"}
        return request("GET", f"{g}{paths[name]}", token=t)[0]


def run_step(client: Client, rate: float, bounds: Bounds, pool: ThreadPoolExecutor,
             clock: Callable[[], float] = time.monotonic) -> Step:
    """Send rate * step_seconds requests of the mix at `rate` per second; wait for their answers."""
    step = Step(rate, started=time.time())
    count = math.ceil(rate * bounds.step_seconds)
    lock = threading.Lock()
    begin = clock()

    def one(name: str, due: float) -> None:
        status = client.op(name)
        latency = clock() - due
        with lock:
            step.latencies.append(latency)
            step.by_operation[name] = step.by_operation.get(name, 0) + 1
            if not 200 <= status < 300:
                step.errors += 1

    futures: list[Future[Any]] = []
    for i in range(count):
        if sum(not f.done() for f in futures[-backlog_limit(bounds) * 2:]) > backlog_limit(bounds):
            step.not_sent = count - i
            break
        due = begin + i / rate
        pause = due - clock()
        if pause > 0:
            time.sleep(pause)
        futures.append(pool.submit(one, client.pick(), due))
    for future in futures:
        future.result()
    step.seconds = clock() - begin
    return step


def run(client: Client, bounds: Bounds, note: Callable[[str], None] = lambda _: None,
        on_step: Callable[[Step | None], None] = lambda _: None) -> LoadReport:
    """Step the rate up until saturated or a bound is reached; stops by itself. `on_step` is called
    once before the first step (None) and after each one (e.g. to read the guests' counters)."""
    report = LoadReport()
    client.prepare()
    started = time.monotonic()
    on_step(None)
    with ThreadPoolExecutor(max_workers=bounds.workers, thread_name_prefix="platform-load") as pool:
        for rate in rate_steps(bounds):
            if time.monotonic() - started + bounds.step_seconds > bounds.max_seconds:
                report.stopped = f"time bound ({bounds.max_seconds:g} s)"
                break
            step = run_step(client, rate, bounds, pool)
            report.steps.append(step)
            on_step(step)
            why = step.saturated(bounds)
            why_text = f" ({why})" if why else ""
            note(f"  {rate:g}/s: {step.requests} requests, {step.per_minute:.0f}/min answered, p99 "
                 f"{step.p99 * 1000:.0f} ms, errors {100 * step.error_rate:.1f}%{why_text}")
            if why:
                report.stopped = f"saturated: {why}"
                break
        else:
            report.stopped = report.stopped or f"rate bound ({bounds.max_rate:g}/s) or request bound reached"
    return report
