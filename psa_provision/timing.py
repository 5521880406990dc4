"""Where the time of a run goes: seconds per category (Proxmox, packages, configuration, app build,
facts, waiting), so `up` can report its cost and bench/run can split a cold provisioning.

A Stopwatch adds up timed blocks; StepTimer wraps apply's progress and charges each applied change
to its category. Nothing here changes what a run does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from psa_provision.changes import ApiCall, Change, Command, Package, PutTree

CATEGORIES = ("proxmox", "packages", "configuration", "app build", "facts", "waiting")


def category(change: Change) -> str:
    """The category a change's time is charged to (see CATEGORIES)."""
    if isinstance(change, ApiCall):
        return "proxmox"
    summary = change.summary.lower()
    if isinstance(change, Package) or summary.startswith(("apt-get", "npm install -g", "fetch apt key")):
        return "packages"
    if isinstance(change, PutTree) or (isinstance(change, Command) and summary.startswith("npm ci")):
        return "app build"
    return "configuration"


@dataclass
class Stopwatch:
    """Seconds per category, added up over timed blocks."""

    totals: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, name: str, seconds: float) -> None:
        with self._lock:  # containers of a phase run in threads
            self.totals[name] = self.totals.get(name, 0.0) + seconds

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Charge the time spent in the block to `name` (also when it raises)."""
        started = time.monotonic()
        try:
            yield
        finally:
            self.add(name, time.monotonic() - started)

    def rounded(self) -> dict[str, float]:
        """Totals rounded to 0.1 s, in CATEGORIES order, for the journal and the report."""
        order = {name: i for i, name in enumerate(CATEGORIES)}
        return {k: round(v, 1) for k, v in sorted(self.totals.items(), key=lambda kv: order.get(kv[0], 99))}


class StepTimer:
    """A progress wrapper for apply: forwards every call, charges each change to its category."""

    def __init__(self, inner: Any, watch: Stopwatch) -> None:
        self.inner = inner
        self.watch = watch
        self._started: dict[int, float] = {}

    def begin(self, change: Change) -> None:
        self._started[id(change)] = time.monotonic()
        self.inner.begin(change)

    def end(self, change: Change, changed: bool) -> None:
        self._charge(change)
        self.inner.end(change, changed)

    def fail(self, change: Change) -> None:
        self._charge(change)
        self.inner.fail(change)

    def _charge(self, change: Change) -> None:
        started = self._started.pop(id(change), None)
        if started is not None:
            self.watch.add(category(change), time.monotonic() - started)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


WATCH = Stopwatch()  # this process's run (one CLI command per process), like ssh.COUNTER
