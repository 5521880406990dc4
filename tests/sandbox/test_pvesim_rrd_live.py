"""rrddata from the real cgroup counters: a running container's rows show its memory and a cpu
fraction within [0, 1], the node's rows show the host. vmid 9070 (conftest's `rrd_container`). Needs
a pvesim daemon started with this code (the sampler runs inside it). A row appears once a whole
minute of samples is closed, a counter's rate from the second: in a whole run the container starts
with the first sandbox test and these tests run last (conftest), so its rows are there by then."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from proxmoxer import ProxmoxAPI
from proxmoxer.core import ResourceException

if TYPE_CHECKING:  # fixtures' types from this directory's conftest.py
    from conftest import RrdContainer

pytestmark = pytest.mark.sandbox

@pytest.fixture(scope="module", autouse=True)
def _removed_after_these_tests(rrd_container: RrdContainer,
                               purge: Callable[[list[int]], None]) -> Iterator[None]:
    """The container goes once these tests end (the e2e tests after them never see it)."""
    yield
    purge([rrd_container.vmid])


ROW_DEADLINE = 240.0  # s: up to two minute boundaries plus the 10 s sampling


def _rows_with(api_call: Any, field: str, since: int = 0) -> list[dict[str, Any]]:
    """Poll rrddata (timeframe hour) until some row from `since` on has `field` (an earlier run's
    rows of the same vmid stay, as PVE keeps a deleted guest's RRD); fail after ROW_DEADLINE."""
    deadline, last = time.monotonic() + ROW_DEADLINE, "no answer yet"
    while time.monotonic() < deadline:
        try:
            rows: list[dict[str, Any]] = api_call.rrddata.get(timeframe="hour")
        except ResourceException as e:  # no RRD before the first sample: RRDs' error, as PVE
            last = str(e)
        else:
            with_field = [r for r in rows if field in r and r["time"] >= since]
            if with_field:
                return with_field
            last = f"{len(rows)} rows, none with {field}"
        time.sleep(5)
    pytest.fail(f"no rrddata row with {field} after {ROW_DEADLINE:.0f}s: {last}")


def test_running_container_rrddata_has_memory_and_a_cpu_fraction(rrd_container: RrdContainer) -> None:
    ct, started = rrd_container.ct, rrd_container.started
    # netin: a counter (DERIVE) has a rate from its second sample on; before that RRD has no value and
    # rrddata leaves the field out, as PVE does, while the gauges (mem) are there from the first row
    rows = _rows_with(ct, "netin", since=started)
    row = rows[-1]
    assert row["time"] % 60 == 0
    assert row["mem"] > 0
    assert 0 <= row["cpu"] <= 1
    assert row["maxmem"] == rrd_container.memory_mb * 1024 * 1024 and row["maxcpu"] == 1
    assert row["netin"] >= 0 and row["diskwrite"] >= 0
    peak = [r for r in ct.rrddata.get(timeframe="hour", cf="MAX") if r["time"] == row["time"]]
    assert peak and peak[0]["mem"] >= row["mem"]


def test_node_rrddata_shows_the_host(proxmox: ProxmoxAPI) -> None:
    rows = _rows_with(proxmox.nodes("pve1"), "memtotal")
    row = rows[-1]
    assert row["memtotal"] > row["memused"] > 0
    assert 0 <= row["cpu"] <= 1 and row["maxcpu"] >= 1 and row["roottotal"] > 0


def test_rrddata_refuses_a_timeframe_outside_the_schema(rrd_container: RrdContainer) -> None:
    with pytest.raises(ResourceException) as e:
        rrd_container.ct.rrddata.get(timeframe="decade")
    assert e.value.status_code == 400 and "timeframe" in str(e.value)
