"""Measured load against the seed's limits: pure decisions, no I/O (commands/capacity.py measures).

`decide(limits, phase, measured)` gives one row per figure (value, the phase's limit, status), what
the Decision Matrix recommends, which limit comes first at the current growth, and the exit code:
0 within limits, 3 when one is crossed (cron and CI alert on it).

Growth is the trend of tickets/day over the last 7 days (a least-squares line through seven 24-hour
counts); the other figures are assumed to grow in proportion to it, since tickets are the one figure
with a history.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .limits import FIGURE_NAMES, FIGURES, Limits, PhaseLimits

EXIT_OK = 0
EXIT_CROSSED = 3
OK, CROSSED, BEYOND, UNKNOWN = "ok", "crossed", "beyond safe range", "unknown"
ALERTS = frozenset({CROSSED, BEYOND})


@dataclass(frozen=True)
class ContainerUse:
    """A container's CPU (mean) and memory (highest) in use over the window, in percent; None: no data."""

    vmid: int
    hostname: str
    cpu_percent: float | None
    memory_percent: float | None
    why: str = ""  # why a figure is missing


@dataclass(frozen=True)
class Measured:
    """What was read from the live platform; None where a figure could not be measured."""

    tenants: int | None
    users: int | None
    tickets_per_day: int | None
    daily_tickets: tuple[int, ...] = ()  # tickets per 24 h over the last 7 days, oldest first
    requests_per_minute: float | None = None
    containers: tuple[ContainerUse, ...] = ()
    missing: Mapping[str, str] = field(default_factory=dict)  # figure -> why it is not measured

    def value(self, figure: str) -> float | None:
        value = getattr(self, figure)
        return None if value is None else float(value)


@dataclass(frozen=True)
class Row:
    """One figure against its limit; days_until: when it reaches the limit at the current growth."""

    figure: str
    value: float | None
    limit: str
    status: str
    note: str = ""
    days_until: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"figure": self.figure, "value": self.value, "limit": self.limit, "status": self.status,
                "note": self.note, "days_until": self.days_until}


@dataclass(frozen=True)
class Verdict:
    """Everything `capacity` reports."""

    phase: str
    rows: tuple[Row, ...]
    recommended: str
    matrix_column: str
    uptime_sla: str
    driven_by: tuple[str, ...]  # the figures that call for the recommended phase
    growth_per_day: float | None  # tickets/day gained per day (None: not enough history)
    first_limit: Row | None  # the row whose limit comes first at the current growth
    review_due: tuple[str, ...]  # next-review thresholds reached ("10 tenants")
    advice: str = ""  # "stay", "move to phase1", "phase0 would do"

    @property
    def crossed(self) -> tuple[Row, ...]:
        return tuple(r for r in self.rows if r.status in ALERTS)

    @property
    def exit_code(self) -> int:
        return EXIT_CROSSED if self.crossed else EXIT_OK

    def as_dict(self) -> dict[str, Any]:
        return {"phase": self.phase, "exit_code": self.exit_code, "rows": [r.as_dict() for r in self.rows],
                "crossed": [r.figure for r in self.crossed], "recommended_phase": self.recommended,
                "matrix_column": self.matrix_column, "uptime_sla": self.uptime_sla,
                "driven_by": list(self.driven_by), "growth_tickets_per_day_per_day": self.growth_per_day,
                "first_limit": self.first_limit.as_dict() if self.first_limit else None,
                "review_due": list(self.review_due), "advice": self.advice}


def growth_per_day(counts: Sequence[int]) -> float | None:
    """The slope of the least-squares line through daily counts (oldest first); None for fewer than 2.

    >>> growth_per_day([100, 110, 120, 130])
    10.0
    """
    n = len(counts)
    if n < 2:
        return None
    mean_x = (n - 1) / 2
    mean_y = sum(counts) / n
    num = sum((x - mean_x) * (y - mean_y) for x, y in enumerate(counts))
    den = sum((x - mean_x) ** 2 for x in range(n))
    return num / den


def days_until(value: float, limit: float, growth_fraction: float | None) -> float | None:
    """Days until `value` grows to `limit` at `growth_fraction` of today's level per day (linear);
    0 when already there, None when it does not grow or starts from nothing."""
    if value >= limit:
        return 0.0
    if growth_fraction is None or growth_fraction <= 0 or value <= 0:
        return None
    return (limit / value - 1) / growth_fraction


def recommended_phase(limits: Limits, measured: Measured) -> tuple[str, tuple[str, ...]]:
    """(phase, figures calling for it): per figure the first phase whose band holds the value (a phase
    without a band for it holds any value), then the latest of those."""
    names = list(limits.phases)
    best, why = 0, []
    for figure in FIGURES:
        value = measured.value(figure)
        if value is None:
            continue
        bands = [limits.phases[name].band(figure) for name in names]
        index = next((i for i, band in enumerate(bands) if band is None or band.holds(value)), len(names) - 1)
        if index > best:
            best, why = index, [figure]
        elif index == best and index > 0:
            why.append(figure)
    return names[best], tuple(why)


def _figure_row(phase: PhaseLimits, figure: str, measured: Measured, fraction: float | None) -> Row:
    name = FIGURE_NAMES[figure]
    value = measured.value(figure)
    band = phase.band(figure)
    limit = band.describe() if band is not None else "none in the seed"
    if value is None:
        return Row(name, None, limit, UNKNOWN, measured.missing.get(figure, "not measured"))
    if band is None:
        return Row(name, value, limit, OK)
    safe = phase.safe_range.get(figure)  # type: ignore[call-overload]
    status, note = OK, ""
    if band.outgrown(value):
        status = CROSSED
        if safe is not None:
            low, high = safe
            span = f"{low:g}" if low == high else f"{low:g}-{high:g}"
            beyond = value > high
            status = BEYOND if beyond else CROSSED
            note = f"safe operation range: up to {span}" + (" (beyond it)" if beyond else "")
    elif value < band.from_:
        note = f"below this phase's band (from {band.from_:g})"
    top = band.top
    days = days_until(value, top, fraction) if top is not None else None
    return Row(name, value, limit, status, note, None if days is None else round(days, 1))


def _container_rows(limits: Limits, measured: Measured) -> list[Row]:
    room = limits.headroom
    rows: list[Row] = []
    for c in measured.containers:
        for what, value, top in (("CPU", c.cpu_percent, room.cpu_max_percent),
                                 ("memory", c.memory_percent, room.memory_max_percent)):
            name = f"{what} in use, {c.hostname} ({c.vmid})"
            limit = f"<= {top:g}%"
            if value is None:
                rows.append(Row(name, None, limit, UNKNOWN, c.why or "no rrddata rows"))
                continue
            status = CROSSED if value > top else OK
            rows.append(Row(name, round(value, 1), limit, status,
                            f"mean of the last {room.window_minutes} min" if what == "CPU"
                            else f"highest of the last {room.window_minutes} min"))
    return rows


def decide(limits: Limits, phase: str, measured: Measured) -> Verdict:
    """Judge the measured figures against `phase`'s limits and the Decision Matrix."""
    current = limits.phase(phase)
    slope = growth_per_day(measured.daily_tickets)
    level = measured.tickets_per_day
    fraction = slope / level if slope is not None and level else None
    rows = [_figure_row(current, f, measured, fraction) for f in FIGURES] + _container_rows(limits, measured)
    recommended, why = recommended_phase(limits, measured)
    timed = [r for r in rows if r.days_until is not None]
    first = min(timed, key=lambda r: r.days_until or 0.0) if timed else None
    review = tuple(f"{threshold:g} {FIGURE_NAMES[figure]}" for figure, threshold in limits.next_review.items()
                   if (value := measured.value(figure)) is not None and value >= threshold)
    target = limits.phases[recommended]
    order = list(limits.phases)
    advice = ("stay" if recommended == phase else f"move to {recommended}"
              if order.index(recommended) > order.index(phase) else f"{recommended} would do")
    return Verdict(phase, tuple(rows), recommended, target.matrix_column, target.uptime_sla, why,
                   None if slope is None else round(slope, 2), first, review, advice)


def use_from_rrd(rows: Sequence[Mapping[str, Any]], window_minutes: int) -> tuple[float | None, float | None]:
    """(CPU % mean, memory % highest) over the last `window_minutes` of rrddata rows (timeframe hour).

    `cpu` is the fraction of the container's cores in use; `mem`/`maxmem` bytes. A row without a
    field (PVE leaves unknown values out) does not count. None when no row has the field.
    """
    timed = [r for r in rows if isinstance(r.get("time"), int | float)]
    if not timed:
        return None, None
    newest = max(float(r["time"]) for r in timed)
    recent = [r for r in timed if float(r["time"]) > newest - window_minutes * 60]
    cpus = [float(r["cpu"]) * 100 for r in recent if isinstance(r.get("cpu"), int | float)]
    mems = [100 * float(r["mem"]) / float(r["maxmem"]) for r in recent
            if isinstance(r.get("mem"), int | float) and isinstance(r.get("maxmem"), int | float)
            and float(r["maxmem"]) > 0]
    return (sum(cpus) / len(cpus) if cpus else None), (max(mems) if mems else None)
