"""pvesim's RRD model with synthetic samples: steps, counters to rates, AVERAGE/MAX, xff, the cpu
fraction, the timeframes' rows and the persisted form (pve-cluster status.c, PVE/RRD.pm)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Mapping

import pytest

from pvesim.cgroup import blkio_bytes, io_stat_bytes
from pvesim.hoststats import cpu_fractions, cpu_times, memory, pressure
from pvesim.rrd import ARCHIVES, GUEST_SOURCES, TIMEFRAMES, Database, cpu_fraction, rate

T0 = 1_699_999_200  # a multiple of 1800: day, week and month rows start here
assert T0 % 1800 == 0


def feed(db: Database, start: float, seconds: int, values: Callable[[int], Mapping[str, float | None]],
         every: int = 10) -> None:
    """Samples every `every` s over [start, start + seconds]; `values(t)` gives each sample."""
    for t in range(int(start), int(start) + seconds + 1, every):
        db.update(t, values(t))


def test_rate_is_per_second_and_unknown_when_the_counter_goes_back() -> None:
    assert rate(1000, 3000, 10) == 200.0
    assert rate(3000, 1000, 10) is None  # DERIVE min 0: a restarted container's counter
    assert rate(None, 1000, 10) is None
    assert rate(1000, 1000, 0) is None


def test_cpu_fraction_is_of_the_containers_cores() -> None:
    assert cpu_fraction((100.0, 5.0), (110.0, 10.0), cores=1) == 0.5
    assert cpu_fraction((100.0, 5.0), (110.0, 10.0), cores=2) == 0.25
    assert cpu_fraction(None, (110.0, 10.0), cores=1) is None
    assert cpu_fraction((100.0, 10.0), (110.0, 1.0), cores=1) is None


def test_gauges_average_over_each_minute_and_rows_sit_on_step_boundaries() -> None:
    db = Database(GUEST_SOURCES)
    feed(db, T0, 180, lambda t: {"mem": 100.0 if t < T0 + 60 else 300.0})
    rows = db.rows("hour", "AVERAGE", now=T0 + 185)
    assert len(rows) == 60  # RRD.pm: hour is [60, 60]
    assert [r["time"] for r in rows[-3:]] == [T0, T0 + 60, T0 + 120]
    # as in rrdtool, a gauge sample holds for the time since the previous one: the sample at T0+60
    # (300) covers (T0+50, T0+60], the last sixth of the first minute
    assert rows[-3]["mem"] == pytest.approx((5 * 100 + 300) / 6)
    assert rows[-2]["mem"] == 300
    assert rows[0] == {"time": T0 + 180 - 3600}  # no data: only `time`


def test_counters_become_rates_per_second() -> None:
    db = Database(GUEST_SOURCES)
    feed(db, T0, 120, lambda t: {"netin": (t - T0) * 500.0, "diskwrite": 7.0})
    rows = db.rows("hour", "AVERAGE", now=T0 + 125)
    assert rows[-1]["netin"] == 500
    assert rows[-1]["diskwrite"] == 0


def test_a_counter_reset_leaves_only_that_interval_unknown() -> None:
    db = Database(GUEST_SOURCES)
    feed(db, T0, 120, lambda t: {"netout": (t - T0) * 10.0 if t < T0 + 65 else (t - T0 - 65) * 10.0})
    rows = db.rows("hour", "AVERAGE", now=T0 + 125)
    assert rows[-1]["netout"] == 10  # 50 of 60 s known: the rate of those


def test_a_minute_less_than_half_covered_is_unknown_and_the_empty_newest_row_is_dropped() -> None:
    db = Database(GUEST_SOURCES)
    feed(db, T0 + 40, 80, lambda t: {"mem": 1.0})  # (T0+40, T0+60] is only 20 s of the first minute
    rows = db.rows("hour", "AVERAGE", now=T0 + 125)
    assert rows[-1] == {"time": T0 + 60, "mem": 1}
    assert "mem" not in rows[-2]
    later = db.rows("hour", "AVERAGE", now=T0 + 185)  # the minute after the last sample: empty
    assert later[-1]["time"] == T0 + 60


def test_a_gap_longer_than_the_heartbeat_is_unknown() -> None:
    db = Database(GUEST_SOURCES)
    feed(db, T0, 60, lambda t: {"mem": 5.0})
    feed(db, T0 + 300, 120, lambda t: {"mem": 7.0})
    rows = {r["time"]: r for r in db.rows("hour", "AVERAGE", now=T0 + 425)}
    assert rows[T0]["mem"] == 5
    assert "mem" not in rows[T0 + 120] and "mem" not in rows[T0 + 240]
    assert rows[T0 + 360]["mem"] == 7


def test_longer_frames_consolidate_average_and_max_with_xff() -> None:
    db = Database(GUEST_SOURCES)
    # 30 minutes of cpu 0.2 with one minute at 0.8, then 10 minutes of data in the next half hour
    feed(db, T0, 1800, lambda t: {"cpu": 0.8 if T0 + 600 < t <= T0 + 660 else 0.2})
    feed(db, T0 + 1810, 600, lambda t: {"cpu": 0.5})
    now = T0 + 3 * 1800 + 5
    average = {r["time"]: r for r in db.rows("week", "AVERAGE", now)}
    peak = {r["time"]: r for r in db.rows("week", "MAX", now)}
    assert len(db.rows("month", "AVERAGE", now)) <= 1440
    assert average[T0]["cpu"] == pytest.approx((29 * 0.2 + 0.8) / 30)
    assert peak[T0]["cpu"] == pytest.approx(0.8)
    assert "cpu" not in average[T0 + 1800]  # 10 of 30 steps known: more than xff 0.5 unknown


def test_rows_per_timeframe_follow_rrd_pm() -> None:
    db = Database(GUEST_SOURCES)
    feed(db, T0, 60, lambda t: {"maxmem": 512.0})
    for timeframe, (reso, count) in TIMEFRAMES.items():
        rows = db.rows(timeframe, "AVERAGE", now=T0 + 7 * 86400)
        end = reso * ((T0 + 7 * 86400) // reso)
        assert rows[0]["time"] == end - reso * count, timeframe
        assert all(b["time"] - a["time"] == reso for a, b in itertools.pairwise(rows)), timeframe


def test_archives_keep_at_most_their_row_count() -> None:
    db = Database({"mem": False})
    feed(db, T0, 2 * 86400, lambda t: {"mem": 1.0}, every=60)
    assert len(db.archives[60]) == ARCHIVES[60]
    assert len(json.dumps(db.to_json())) < 100_000


def test_the_persisted_form_reads_back_to_the_same_rows() -> None:
    db = Database(GUEST_SOURCES)
    feed(db, T0, 3700, lambda t: {"mem": float(t % 7), "netin": (t - T0) * 3.0, "cpu": 0.25})
    copy = Database.from_json(GUEST_SOURCES, json.loads(json.dumps(db.to_json())))
    for timeframe in ("hour", "day", "week"):
        for cf in ("AVERAGE", "MAX"):
            assert copy.rows(timeframe, cf, T0 + 3800) == db.rows(timeframe, cf, T0 + 3800)
    db.update(T0 + 3710, {"mem": 1.0})
    copy.update(T0 + 3710, {"mem": 1.0})
    assert copy.to_json() == db.to_json()


def test_an_unknown_persisted_version_starts_empty() -> None:
    db = Database.from_json(GUEST_SOURCES, {"version": 99, "last_time": 5})
    assert db.last_time is None


def test_block_io_bytes_sum_read_and_write_over_devices() -> None:
    text = ("8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 12288\n8:0 Total 12288\n"
            "253:0 Read 100\n253:0 Write 1\nTotal 12389\n")
    assert blkio_bytes(text) == (4196, 8193)
    assert blkio_bytes("Total 0\n") == (0, 0)
    assert blkio_bytes(None) == (0, 0)
    v2 = "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n253:0 rbytes=100 wbytes=1\n"
    assert io_stat_bytes(v2) == (4196, 8193)
    assert io_stat_bytes(None) == (0, 0)


PROC_STAT = ("cpu  1000 50 300 8000 200 10 40 0 100 0\n"
             "cpu0 500 25 150 4000 100 5 20 0 50 0\ncpu1 500 25 150 4000 100 5 20 0 50 0\n")


def test_host_cpu_fractions_as_read_proc_stat_computes_them() -> None:
    before = cpu_times(PROC_STAT)
    assert before == (1400, 9600, 200)  # guest time (100) is already inside user
    after = (before[0] + 30, before[1] + 200, before[2] + 20)
    assert cpu_fractions(before, after) == (0.15, 0.1)
    assert cpu_fractions(None, after) == (0.0, 0.0)


def test_host_memory_used_is_total_minus_available() -> None:
    text = ("MemTotal:        2000 kB\nMemFree:          300 kB\nMemAvailable:     800 kB\n"
            "SwapTotal:        100 kB\nSwapFree:          40 kB\nHugePages_Total:       0\n")
    mem = memory(text)
    assert mem["memused"] == 1200 * 1024 and mem["memavailable"] == 800 * 1024
    assert mem["swapused"] == 60 * 1024 and mem["arcsize"] == 0


def test_pressure_reads_avg10_of_some_and_full() -> None:
    text = ("some avg10=5.76 avg60=5.52 avg300=3.76 total=28579534\n"
            "full avg10=0.92 avg60=0.37 avg300=0.50 total=10589465\n")
    assert pressure(text) == {"some": 5.76, "full": 0.92}
