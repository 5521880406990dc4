"""The platform load generator's bounds: where it may send, how far it steps, when it stops by itself.

The stepping runs for real against a tiny HTTP server on loopback that answers the gateway's routes
(quickly, or 0.6 s late to be saturated), with bounds small enough for a unit test.
"""

from __future__ import annotations

import http.server
import json
import random
import threading
import time
from collections.abc import Iterator

import pytest

from psa_provision.testing import platform_load as pl


@pytest.mark.parametrize("url", ["http://10.0.20.100:3000", "http://10.0.30.10:3000/", "http://127.0.0.1:3000",
                                 "http://[::1]:3000"])
def test_sandbox_guests_and_loopback_are_allowed(url: str) -> None:
    assert pl.check_target(url) == url.rstrip("/")


@pytest.mark.parametrize("url", ["http://10.0.21.5:3000", "http://192.168.1.10:3000", "http://8.8.8.8",
                                 "http://example.org:3000", "http://10.0.2.100:3000"])
def test_anything_else_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="sandbox"):
        pl.check_target(url)


def test_rate_steps_grow_by_the_factor_up_to_the_max_rate() -> None:
    assert pl.rate_steps(pl.Bounds(start_rate=4, factor=2, max_rate=40, step_seconds=10)) == [4, 8, 16, 32]


def test_rate_steps_stay_within_the_request_and_time_budgets() -> None:
    # 5/s, 10/s, 20/s for 10 s each is 50 + 100 + 200 requests: 349 allows only the first two
    assert pl.rate_steps(pl.Bounds(start_rate=5, factor=2, max_rate=100, step_seconds=10,
                                   max_requests=349)) == [5, 10]
    assert pl.rate_steps(pl.Bounds(start_rate=5, factor=2, max_rate=100, step_seconds=10,
                                   max_seconds=25)) == [5, 10]
    default = pl.Bounds()
    steps = pl.rate_steps(default)
    assert steps[0] == 5 and steps[-1] <= default.max_rate
    assert sum(int(r * default.step_seconds) + 1 for r in steps) <= default.max_requests
    assert len(steps) * default.step_seconds <= default.max_seconds


@pytest.mark.parametrize("kwargs", [{"start_rate": 0}, {"factor": 1}, {"step_seconds": 0},
                                    {"max_rate": 1, "start_rate": 2}, {"max_requests": 0}, {"max_seconds": 0},
                                    {"workers": 0}])
def test_bounds_that_would_not_stop_or_not_start_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="bounds"):
        pl.Bounds(**kwargs)  # type: ignore[arg-type]


def test_percentile_is_nearest_rank() -> None:
    values = [i / 100 for i in range(1, 101)]
    assert pl.percentile(values, 99) == 0.99 and pl.percentile(values, 50) == 0.5
    assert pl.percentile([0.2], 99) == 0.2 and pl.percentile([], 99) == 0.0


def test_a_step_is_saturated_by_latency_errors_or_backlog() -> None:
    bounds = pl.Bounds()
    fast = pl.Step(10, seconds=30, latencies=[0.05] * 300)
    assert fast.saturated(bounds) is None and fast.per_minute == 600
    slow = pl.Step(10, seconds=30, latencies=[0.05] * 296 + [0.6] * 4)  # the 297th of 300 is slow
    assert "p99 600 ms" in (slow.saturated(bounds) or "")
    failing = pl.Step(10, seconds=30, latencies=[0.05] * 300, errors=4)
    assert "errors 1.3%" in (failing.saturated(bounds) or "")
    assert failing.per_minute == pytest.approx(592)
    stalled = pl.Step(10, seconds=30, latencies=[0.05] * 10, not_sent=290)
    assert "290 not sent" in (stalled.saturated(bounds) or "")


def test_sustained_is_the_busiest_good_step() -> None:
    bounds = pl.Bounds()
    report = pl.LoadReport([pl.Step(5, 30, [0.01] * 150), pl.Step(7.5, 30, [0.02] * 225),
                            pl.Step(11.25, 30, [0.9] * 338)], "saturated: p99 900 ms >= 500 ms")
    best = report.sustained(bounds)
    assert best is not None and best.rate == 7.5 and best.per_minute == 450
    assert report.saturating is report.steps[-1]
    assert pl.LoadReport([pl.Step(5, 30, [0.9] * 150)]).sustained(bounds) is None


def test_the_mix_picks_every_operation_by_weight() -> None:
    client = pl.Client("http://127.0.0.1:1", "a@b.c", "x", random.Random(7))
    picks = [client.pick() for _ in range(4000)]
    share = {name: picks.count(name) / len(picks) for name, _ in pl.MIX}
    total = sum(w for _, w in pl.MIX)
    for name, weight in pl.MIX:
        assert share[name] == pytest.approx(weight / total, abs=0.03), name


class Gateway(http.server.BaseHTTPRequestHandler):
    """Answers the routes of the mix like the app's gateway; `delay` seconds late."""

    delay = 0.0
    seen: list[str] = []

    def _send(self, status: int, body: object) -> None:
        time.sleep(self.delay)
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.seen.append(f"POST {self.path}")
        if self.path == "/api/auth/login":
            self._send(200, {"token": "t"})
        else:
            self._send(201, {"id": len(self.seen)})

    def do_GET(self) -> None:
        self.seen.append(f"GET {self.path}")
        self._send(200, {"items": [], "total": 0})

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def gateway() -> Iterator[type[Gateway]]:
    handler = type("Handler", (Gateway,), {"delay": 0.0, "seen": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    handler.url = f"http://127.0.0.1:{httpd.server_address[1]}"  # type: ignore[attr-defined]
    yield handler
    httpd.shutdown()
    httpd.server_close()


def test_it_steps_up_to_the_rate_bound_and_stops(gateway: type[Gateway]) -> None:
    bounds = pl.Bounds(start_rate=10, factor=2, max_rate=40, step_seconds=0.5, workers=8)
    client = pl.Client(gateway.url, "a@b.c", "x", random.Random(1))  # type: ignore[attr-defined]
    report = pl.run(client, bounds)
    assert [s.rate for s in report.steps] == [10, 20, 40]
    assert [s.requests for s in report.steps] == [5, 10, 20]
    assert report.stopped.startswith("rate bound") and all(s.errors == 0 for s in report.steps)
    assert gateway.seen[0] == "POST /api/auth/login" and len(gateway.seen) >= 35 + pl.SEED_CUSTOMERS


def test_a_slow_platform_stops_it_at_the_first_saturated_step(gateway: type[Gateway]) -> None:
    bounds = pl.Bounds(start_rate=10, factor=2, max_rate=80, step_seconds=0.5, workers=8)
    client = pl.Client(gateway.url, "a@b.c", "x", random.Random(1))  # type: ignore[attr-defined]
    client.prepare()  # quickly, then every answer comes 0.6 s late
    gateway.delay = 0.6
    report = pl.run(client, bounds)
    assert len(report.steps) == 1 and report.stopped.startswith("saturated: p99")
    assert report.sustained(bounds) is None


def test_the_client_refuses_a_gateway_outside_the_sandbox() -> None:
    with pytest.raises(ValueError, match="sandbox"):
        pl.Client("http://192.0.2.1:3000", "a@b.c", "x", random.Random(1))
