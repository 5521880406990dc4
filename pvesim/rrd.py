"""Round-robin statistics kept as Proxmox's RRD files keep them, served as PVE's rrddata rows.

What Proxmox does (pve-cluster src/pmxcfs/status.c, rrd_def_vm_pve9_0 / rrd_def_node_pve9_0 and
create_rrd_file): one RRD per guest and per node with a 60 s step, every data source with a 120 s
heartbeat, counters (netin, netout, diskread, diskwrite) as DERIVE with minimum 0 (a rate per
second; a counter going back is unknown), and AVERAGE and MAX archives of 1, 30, 360 and 10080
steps (1440, 1440, 1440 and 570 rows) with xff 0.5. pvestatd feeds it every 10 s.
PVE/RRD.pm create_rrd_data reads it back: a resolution and a row count per timeframe, rows from
`reso * (count)` before the last resolution boundary, `time` on each row's boundary, unknown fields
left out, and the newest row dropped when it holds nothing but `time`.

A Database here is the same thing in memory: samples are spread over the 60 s steps by time (as
rrdtool does), each closed step is folded into the four archives, each archive keeps at most its
row count, and the whole state is a small JSON document.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

STEP = 60  # status.c create_rrd_file: rrd_create_r(filename, 60, ...)
HEARTBEAT = 120  # "DS:cpu:GAUGE:120:0:U": a gap longer than this leaves the interval unknown
XFF = 0.5  # "RRA:AVERAGE:0.5:30:1440": a row is known when at most half its steps are unknown
ARCHIVES = {60: 1440, 1800: 1440, 21600: 1440, 604800: 570}  # resolution (s) -> rows kept
# PVE/RRD.pm create_rrd_data, $setup: timeframe -> [resolution, number of rows]
TIMEFRAMES = {
    "hour": (60, 60),
    "day": (60, 1440),
    "week": (1800, 336),
    "month": (1800, 1440),
    "year": (21600, 1440),
    "decade": (604800, 570),
}
CFS = ("AVERAGE", "MAX")

# name -> True for a counter (DERIVE), False for a gauge; in the order of status.c's DS lines.
# memhost and the pressure sources are left out for containers: pvestatd passes undef for memhost
# and cgroup v1 has no per-container pressure files.
GUEST_SOURCES = {"maxcpu": False, "cpu": False, "maxmem": False, "mem": False, "maxdisk": False,
                 "disk": False, "netin": True, "netout": True, "diskread": True, "diskwrite": True}
NODE_SOURCES = {"loadavg": False, "maxcpu": False, "cpu": False, "iowait": False, "memtotal": False,
                "memused": False, "swaptotal": False, "swapused": False, "roottotal": False,
                "rootused": False, "netin": True, "netout": True, "memavailable": False,
                "arcsize": False, "pressurecpusome": False, "pressureiosome": False,
                "pressureiofull": False, "pressurememorysome": False, "pressurememoryfull": False}

Values = Mapping[str, float | None]
Row = dict[str, float | int]


def rate(before: float | None, after: float | None, seconds: float) -> float | None:
    """A counter's change per second (DERIVE with minimum 0): None when unknown or gone back.

    >>> rate(1000, 3000, 10)
    200.0
    """
    if before is None or after is None or seconds <= 0 or after < before:
        return None
    return (after - before) / seconds


Reading = tuple[float, float]  # (wall time, cpu seconds used so far)


def cpu_fraction(before: Reading | None, after: Reading, cores: float) -> float | None:
    """CPU use as a fraction of the container's cores from two (wall time, cpu seconds) readings.

    PVE/LXC.pm vmstatus: `(delta_used / delta_wall)` spread over `$d->{cpus}` (cores, else the
    host's cpus), so 1.0 means every core it may use was busy. None when there is no earlier
    reading or the counter went back (the container restarted).
    """
    if before is None:
        return None
    per_second = rate(before[1], after[1], after[0] - before[0])
    return None if per_second is None else per_second / max(cores, 1)


def _number(value: float) -> float | int:
    """A value as Perl's JSON prints a double: integral values without a fraction."""
    return int(value) if value.is_integer() and abs(value) < 2**53 else value


class Database:
    """One guest's or node's RRD: feed `update(time, values)`, read `rows(timeframe, cf, now)`."""

    def __init__(self, sources: Mapping[str, bool]) -> None:
        self.sources = dict(sources)
        self.last_time: float | None = None
        self.last_values: dict[str, float | None] = {}
        self.step_start = 0  # the open 60 s step
        self.open: dict[str, list[float]] = {}  # name -> [value * seconds, known seconds]
        # resolution -> row time -> name -> [sum, count, max] of the closed steps in that row
        self.archives: dict[int, dict[int, dict[str, list[float]]]] = {r: {} for r in ARCHIVES}

    # --- writing ---------------------------------------------------------------------------------

    def update(self, when: float, values: Values) -> int:
        """Record one sample taken at `when` (epoch seconds); returns how many steps it closed.

        Gauges hold for the time since the previous sample, counters become that interval's rate;
        a sample older than the last one is ignored (rrdtool refuses it too).
        """
        if self.last_time is not None and when <= self.last_time:
            return 0
        closed = 0
        if self.last_time is None:
            self.step_start = int(when // STEP) * STEP
        elif when - self.last_time > HEARTBEAT:
            if when >= self.step_start + STEP:
                self._close_step()
                closed = 1
            self.step_start = int(when // STEP) * STEP
        else:
            closed = self._spread(self.last_time, when, self._rates(when - self.last_time, values))
        self.last_time, self.last_values = when, dict(values)
        return closed

    def _rates(self, seconds: float, values: Values) -> dict[str, float]:
        """What holds over the last interval: a gauge's value, a counter's rate (unknown left out)."""
        out = {}
        for name, counter in self.sources.items():
            value = values.get(name)
            if counter:
                value = rate(self.last_values.get(name), value, seconds)
            if value is not None and math.isfinite(value):
                out[name] = float(value)
        return out

    def _spread(self, start: float, end: float, rates: Mapping[str, float]) -> int:
        """Add the interval (start, end] to the steps it covers, closing each step it passes."""
        closed = 0
        while start < end:
            boundary = self.step_start + STEP
            stop = min(end, boundary)
            for name, value in rates.items():
                acc = self.open.setdefault(name, [0.0, 0.0])
                acc[0] += value * (stop - start)
                acc[1] += stop - start
            if stop >= boundary:
                self._close_step()
                self.step_start = boundary
                closed += 1
            start = stop
        return closed

    def _close_step(self) -> None:
        """Fold the open step into every archive: known when at least half of it was covered."""
        for name, (total, seconds) in self.open.items():
            if seconds < STEP / 2:
                continue
            value = total / seconds
            for reso, archive in self.archives.items():
                cell = archive.setdefault(self.step_start // reso * reso, {}).setdefault(
                    name, [0.0, 0, -math.inf])
                cell[0] += value
                cell[1] += 1
                cell[2] = max(cell[2], value)
        for reso, archive in self.archives.items():
            while len(archive) > ARCHIVES[reso]:  # rows are added in time order: the first is oldest
                del archive[next(iter(archive))]
        self.open = {}

    # --- reading ---------------------------------------------------------------------------------

    def rows(self, timeframe: str, cf: str, now: float) -> list[Row]:
        """PVE's rrddata rows for a timeframe and consolidation function (AVERAGE or MAX)."""
        reso, count = TIMEFRAMES[timeframe]
        archive = self.archives[reso]
        steps = reso // STEP
        end = reso * int(now // reso)
        out: list[Row] = []
        for when in range(end - reso * count, end, reso):
            row: Row = {"time": when}
            for name, (total, known, peak) in archive.get(when, {}).items():
                if steps - known <= steps * XFF:
                    row[name] = _number(total / known if cf == "AVERAGE" else peak)
            out.append(row)
        if out and len(out[-1]) == 1:  # RRD.pm: the newest bucket can still be empty
            out.pop()
        return out

    # --- persistence -----------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The state as a JSON-able document (a one-step cell is stored as its bare value)."""
        def cell(c: list[float]) -> Any:
            return c[0] if c[1] == 1 else [c[0], c[1], c[2]]

        return {
            "version": 1, "last_time": self.last_time, "last_values": self.last_values,
            "step_start": self.step_start, "open": self.open,
            "archives": {str(reso): {str(t): {n: cell(c) for n, c in cells.items()}
                                     for t, cells in rows.items()}
                         for reso, rows in self.archives.items()},
        }

    @classmethod
    def from_json(cls, sources: Mapping[str, bool], doc: Mapping[str, Any]) -> Database:
        """A database from `to_json` output; sources no longer defined are dropped."""
        db = cls(sources)
        if doc.get("version") != 1:
            return db
        db.last_time = doc.get("last_time")
        db.last_values = {k: v for k, v in doc.get("last_values", {}).items() if k in db.sources}
        db.step_start = int(doc.get("step_start", 0))
        db.open = {k: [float(x) for x in v] for k, v in doc.get("open", {}).items() if k in db.sources}
        for reso_text, rows in doc.get("archives", {}).items():
            reso = int(reso_text)
            if reso not in db.archives:
                continue
            for when in sorted(rows, key=int):
                cells = {n: ([float(c), 1, float(c)] if not isinstance(c, list) else [float(x) for x in c])
                         for n, c in rows[when].items() if n in db.sources}
                db.archives[reso][int(when)] = cells
        return db
