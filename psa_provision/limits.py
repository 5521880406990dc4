"""The seed's limits per phase and its decision matrix, read from data/limits.yml (data, not code).

`load_limits()` validates the packaged file (or another one) and reports every problem as `file:line`:
unknown keys, a band whose bound is missing or upside down, a gap between one phase's band and the
next one's. capacity.py judges measured figures against what this returns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from .errors import InputError
from .loader import Loc, line_of, load_model_and_lines
from .packaged import DATA_DIR

LIMITS_FILE = DATA_DIR / "limits.yml"
Figure = Literal["tenants", "users", "tickets_per_day", "requests_per_minute"]
FIGURES: tuple[Figure, ...] = ("tenants", "users", "tickets_per_day", "requests_per_minute")
# The seed's words for each figure (table and messages).
FIGURE_NAMES: dict[str, str] = {
    "tenants": "tenants", "users": "concurrent users", "tickets_per_day": "tickets/day",
    "requests_per_minute": "API requests/minute",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Band(_Strict):
    """The load a phase is meant for: from `from_` up to (not reaching) `below`, or up to `max`."""

    from_: float = Field(alias="from", ge=0, examples=[0])
    below: float | None = Field(default=None, gt=0, examples=[200])
    max: float | None = Field(default=None, gt=0, examples=[1000])

    @model_validator(mode="after")
    def _one_bound(self) -> Band:
        if self.below is not None and self.max is not None:
            raise ValueError("give `below` (reaching it is too much) or `max` (more is too much), not both")
        top = self.top
        if top is not None and top <= self.from_:
            raise ValueError(f"the upper bound {top:g} is not above `from: {self.from_:g}`")
        return self

    @property
    def top(self) -> float | None:
        """The upper bound, whichever kind (None: no upper bound)."""
        return self.below if self.below is not None else self.max

    def outgrown(self, value: float) -> bool:
        """True when `value` is at `below` or more, or above `max`."""
        if self.below is not None:
            return value >= self.below
        return self.max is not None and value > self.max

    def holds(self, value: float) -> bool:
        return not self.outgrown(value)

    def describe(self) -> str:
        """`< 200`, `<= 1000`, `50+` (as the seed writes them)."""
        if self.below is not None:
            return f"< {self.below:g}"
        if self.max is not None:
            return f"<= {self.max:g}"
        return f"{self.from_:g}+"


def _low_high(pair: tuple[float, float]) -> tuple[float, float]:
    if pair[0] > pair[1]:
        raise ValueError(f"{pair[0]:g} is above {pair[1]:g}: write [low, high]")
    return pair


class PhaseLimits(_Strict):
    """One phase: its Decision Matrix column, uptime SLA, a band per figure, phase 0's safe range."""

    matrix_column: str = Field(examples=["Single Container"])
    uptime_sla: str = Field(examples=["99%"])
    tenants: Band | None = None
    users: Band | None = None
    tickets_per_day: Band | None = None
    requests_per_minute: Band | None = None
    safe_range: dict[Figure, Annotated[tuple[float, float], AfterValidator(_low_high)]] = Field(
        default={}, examples=["{tenants: [10, 20]}"])

    def band(self, figure: str) -> Band | None:
        value = getattr(self, figure)
        return value if isinstance(value, Band) else None


class Headroom(_Strict):
    """Ours, not the seed's: the share of a container's CPU and memory in use that counts as saturated."""

    cpu_max_percent: float = Field(gt=0, le=100, examples=[80])
    memory_max_percent: float = Field(gt=0, le=100, examples=[90])
    window_minutes: int = Field(ge=1, le=60, examples=[10])


class Limits(_Strict):
    """data/limits.yml: phases in order, the next-review thresholds, headroom."""

    phases: dict[str, PhaseLimits]
    next_review: dict[Figure, float] = {}
    headroom: Headroom

    def phase(self, name: str) -> PhaseLimits:
        if name not in self.phases:
            raise InputError(f"the limits know no phase {name!r}",
                             hint=f"one of {', '.join(self.phases)} (data/limits.yml)")
        return self.phases[name]


def gaps(limits: Limits) -> list[tuple[Loc, str]]:
    """(location, message) where a figure's band starts above the end of the previous phase's band,
    or follows a band without an upper bound: the bands of a figure must follow on, phase after phase."""
    found: list[tuple[Loc, str]] = []
    for figure in FIGURES:
        top: float | None = 0.0
        before = "the start"
        for name, phase in limits.phases.items():
            band = phase.band(figure)
            if band is None:
                continue
            loc: Loc = ("phases", name, figure)
            if top is None:
                found.append((loc, f"{before}'s band has no upper bound, so no phase can follow it"))
            elif band.from_ > top:
                found.append((loc, f"`from: {band.from_:g}` leaves a gap after {before}'s {top:g}"))
            top, before = band.top, name
    return found


def load_limits(path: Path = LIMITS_FILE) -> Limits:
    """Validate the limits file; any problem -> InputError naming file:line."""
    limits, lines = load_model_and_lines(path, Limits)
    if not limits.phases:
        raise InputError(f"{path}:{line_of(('phases',), lines)}: phases: none listed",
                         hint="list phase0 and the phases after it")
    problems = [f"{path}:{line_of(loc, lines)}: {'.'.join(map(str, loc))}: {msg}"
                for loc, msg in gaps(limits)]
    if problems:
        raise InputError("\n".join(problems), hint="make each phase's `from` the previous phase's bound")
    return limits
