"""bench/bench.py's pure parts: phase-1 container spans from a journal, the npm proxy summary."""

from __future__ import annotations

from types import ModuleType

import bench_scripts


def load_bench() -> ModuleType:
    return bench_scripts.load("bench", "bench_module")


def part(host: str, name: str, seconds: float, run: str = "r2") -> dict[str, object]:
    return {"ts": "2026-11-27T08:00:00+00:00", "run": run, "event": "container", "host": host, "part": name,
            "seconds": seconds}


def test_a_containers_own_time_adds_its_two_waves_of_the_last_run() -> None:
    bench = load_bench()
    journal = [
        {"ts": "2026-11-27T07:00:00+00:00", "run": "r1", "event": "run-start"},
        part("old", "own", 500.0, run="r1"),
        {"ts": "2026-11-27T08:00:00+00:00", "run": "r2", "event": "run-start"},
        part("app", "own", 50.0), part("pg", "own", 120.0), part("cache", "own", 90.0),
        part("app", "apps", 10.5),
    ]
    assert bench.container_spans(journal) == {"pg": 120.0, "cache": 90.0, "app": 60.5}
    assert bench.container_spans([]) == {}


def test_npm_summary_is_the_difference_of_two_counter_readings() -> None:
    bench = load_bench()
    zero = dict.fromkeys(bench.npmproxy.COUNTERS, 0)
    after = {**zero, "requests": 300, "served_bytes": 21 * 2**20, "upstream_bytes": 0, "hits": 300}
    assert bench.npm_summary(zero, after) == (
        "300 requests, served 21.0 MiB, fetched upstream 0.0 MiB (0 objects)")
    assert bench.npm_summary(zero, zero).startswith("no requests")
