"""bench/bench.py's pure parts: phase-1 container spans from a journal, the npm proxy summary."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench.py"


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_module", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_module"] = module
    spec.loader.exec_module(module)
    return module


def step(ts: str, host: str, component: str, run: str = "r2") -> dict[str, object]:
    return {"ts": f"2026-11-27T08:{ts}+00:00", "run": run, "event": "step", "host": host,
            "component": component}


def test_spans_count_app_containers_from_the_end_of_the_store_wave() -> None:
    bench = load_bench()
    journal = [
        {"ts": "2026-11-27T07:00:00+00:00", "run": "r1", "event": "run-start"},
        step("00:00", "old", "base", run="r1"),
        {"ts": "2026-11-27T08:00:00+00:00", "run": "r2", "event": "run-start"},
        step("01:40", "pg", "postgresql"), step("02:00", "pg", "postgresql"),
        step("01:30", "cache", "redis"),
        step("02:10", "app", "base"), step("03:00", "app", "app"),
    ]
    assert bench.container_spans(journal) == {"pg": 120.0, "cache": 90.0, "app": 60.0}
    assert bench.container_spans([]) == {}


def test_npm_summary_is_the_difference_of_two_counter_readings() -> None:
    bench = load_bench()
    zero = dict.fromkeys(bench.npmproxy.COUNTERS, 0)
    after = {**zero, "requests": 300, "served_bytes": 21 * 2**20, "upstream_bytes": 0, "hits": 300}
    assert bench.npm_summary(zero, after) == (
        "300 requests, served 21.0 MiB, fetched upstream 0.0 MiB (0 objects)")
    assert bench.npm_summary(zero, zero).startswith("no requests")
