"""Terminal output: the only importer of rich. Plans, progress, tables, errors, JSON for machines.

Human output goes to stdout (plans, summaries, tables) and stderr (progress, warnings, errors);
`--output json` prints exactly one JSON document on stdout.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from typing import Any, TextIO

from rich.console import Console
from rich.markup import escape
from rich.prompt import Confirm
from rich.status import Status
from rich.table import Table

from psa_provision.changes import ApiCall, Change, Command, Package, Plan, PutFile, Service
from psa_provision.errors import ProvisionError
from psa_provision.sensitive import MASK, Secret, Sensitive

SYMBOL = {"create": "+", "recreate": "-/+", "restart": "~!", "live": "~"}


def change_json(change: Change) -> dict[str, Any]:
    """A Change as JSON-safe data: no file contents, no stdin, no script; Secret/Sensitive as `***`."""
    data: dict[str, Any] = {"host": change.host, "component": change.component, "kind": change.kind,
                            "summary": change.summary}
    if isinstance(change, ApiCall):  # the request as well as the action: what a reader of the plan checks
        data.update(method=change.method, path=change.path)
    if is_dataclass(change):
        fields = asdict(change)
        for key in ("content", "stdin", "script"):
            fields.pop(key, None)
        data.update({k: _safe(v) for k, v in fields.items() if k not in data})
    return data


def _safe(value: Any) -> Any:
    """JSON-safe copy of a field: a masked value (kept whole by asdict) becomes `***`."""
    if isinstance(value, Secret | Sensitive):
        return MASK
    if isinstance(value, dict):
        return {str(k): _safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_safe(v) for v in value]
    return value


def plan_json(plan: Plan, **extra: Any) -> dict[str, Any]:
    """The machine form of `plan`: changes, counts, and any extra context (phase, warnings)."""
    return {**extra, "changes": [change_json(c) for c in plan.actions],
            "unchanged": [change_json(c) for c in plan.noops],
            "counts": {"changes": len(plan.actions), "unchanged": len(plan.noops)}}


class Output:
    """One place that writes to the terminal."""

    def __init__(self, *, json_mode: bool = False, stdout: TextIO | None = None,
                 stderr: TextIO | None = None, verbose: bool = False) -> None:
        self.json_mode = json_mode
        self.verbose = verbose
        self.out = Console(file=stdout or sys.stdout, highlight=False, soft_wrap=True)
        self.err = Console(file=stderr or sys.stderr, highlight=False, soft_wrap=True)

    # -- lines -----------------------------------------------------------------------------------
    def line(self, text: str = "", style: str | None = None) -> None:
        if not self.json_mode:
            self.out.print(text, style=style, markup=False)

    def note(self, text: str) -> None:
        """Progress-like information (stderr, so stdout stays a clean plan or JSON)."""
        self.err.print(text, style="dim", markup=False)

    def warn(self, text: str) -> None:
        self.err.print(f"warning: {text}", style="yellow", markup=False)

    def error(self, exc: ProvisionError) -> None:
        """One red line (+ indented detail lines) and the hint; never a traceback."""
        first, *rest = exc.message.splitlines() or [type(exc).__name__]
        self.err.print(f"error: {first}", style="bold red", markup=False)
        for line in rest:
            self.err.print(line, style="red", markup=False)
        if exc.hint:
            self.err.print(f"  -> {exc.hint}", style="yellow", markup=False)

    def json(self, data: Any) -> None:
        """Print one JSON document on stdout (plain, no markup)."""
        self.out.file.write(json.dumps(data, indent=2, default=str) + "\n")
        self.out.file.flush()

    def confirm(self, question: str) -> bool:
        return Confirm.ask(question, console=self.err, default=False)

    # -- plans -----------------------------------------------------------------------------------
    def plan(self, plan: Plan, title: str) -> None:
        """Print what would change, per host: Proxmox parameters, file diffs, packages, services."""
        self.out.print(f"[bold]{escape(title)}[/bold]")
        if plan.empty:
            self.out.print(f"  nothing to change ({len(plan.noops)} checks up to date)", style="green")
        for change in plan.actions:
            self._change(change)
        if self.verbose:
            for change in plan.noops:
                line = f"  = {change.host} {change.component}: {change.summary}"
                self.out.print(line, style="dim", markup=False)
        self.out.print(f"Plan: {len(plan.actions)} to change, {len(plan.noops)} unchanged.", style="bold")

    def _change(self, change: Change) -> None:
        head = f"{escape(change.host)} [cyan]{escape(change.component)}[/cyan]: {escape(change.summary)}"
        if isinstance(change, ApiCall):
            self.out.print(f"  [yellow]{SYMBOL.get(change.effect, '~')}[/yellow] {head} "
                           f"[dim]({change.method} {escape(change.path)}, {change.effect})[/dim]")
            for key, (old, new) in sorted(change.diff.items()):
                self.out.print(f"      {escape(key)}: {escape(str(_safe(old)))} -> {escape(str(_safe(new)))}")
        elif isinstance(change, PutFile):
            self.out.print(f"  [yellow]~[/yellow] {head} [dim]({change.path} {change.mode:o} "
                           f"{change.owner}:{change.group})[/dim]")
            self._diff(change.diff)
        elif isinstance(change, Package):
            self.out.print(f"  [green]+[/green] {head} [dim]({' '.join(change.names)})[/dim]")
        elif isinstance(change, Service):
            self.out.print(f"  [magenta]>[/magenta] {head} [dim]({change.action} {change.name})[/dim]")
        elif isinstance(change, Command):
            self.out.print(f"  [blue]$[/blue] {head}")
        else:
            self.out.print(f"  [yellow]~[/yellow] {head} [dim]({change.kind})[/dim]")

    def _diff(self, diff: str) -> None:
        for line in diff.splitlines():
            style = "green" if line.startswith("+") else "red" if line.startswith("-") else "dim"
            self.out.print(f"      {line}", style=style, markup=False)

    # -- progress --------------------------------------------------------------------------------
    @contextmanager
    def steps(self) -> Iterator[StepProgress]:
        progress = StepProgress(self)
        try:
            yield progress
        finally:
            progress.stop()

    def summary(self, changed: int, unchanged: int, failed: int) -> None:
        style = "bold red" if failed else "bold green"
        self.out.print(f"{changed} changed, {unchanged} unchanged, {failed} failed", style=style)

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[object]],
              whole: Sequence[str] = ()) -> None:
        """`whole`: columns never wrapped (ids a user copies into the next command); when they and a
        narrow rest do not fit the console, the table is printed wider than the console."""
        table = Table(title=title, title_justify="left")
        cells = [[str(cell) for cell in row] for row in rows]
        needed = 1
        for i, column in enumerate(columns):
            longest = max([len(column)] + [len(r[i]) for r in cells if i < len(r)])
            needed += 3 + (longest if column in whole else min(longest, 24))
            # wrap long names (checks, hosts), never cut them
            table.add_column(column, overflow="fold", no_wrap=column in whole,
                             min_width=longest if column in whole else None)
        for row in cells:
            table.add_row(*(escape(cell) for cell in row))
        console = self.out
        if whole and needed > console.width:
            console = Console(file=self.out.file, width=needed, highlight=False, soft_wrap=True)
        console.print(table)


class StepProgress:
    """Shows the running step (spinner on a terminal) and one line per finished change."""

    def __init__(self, output: Output) -> None:
        self.output = output
        self._status: Status | None = None
        if output.err.is_terminal and not output.json_mode:
            self._status = output.err.status("starting")
            self._status.start()

    def begin(self, change: Change) -> None:
        if self._status is not None:
            self._status.update(f"{escape(change.host)} {escape(change.component)}: {escape(change.summary)}")

    def end(self, change: Change, changed: bool) -> None:
        if changed:
            self.output.err.print(f"  [green]✓[/green] {escape(change.host)} [cyan]{escape(change.component)}"
                                  f"[/cyan]: {escape(change.summary)}")
        elif self.output.verbose:
            self.output.err.print(f"  = {escape(change.host)} {escape(change.component)}: "
                                  f"{escape(change.summary)}", style="dim")

    def fail(self, change: Change) -> None:
        self.output.err.print(f"  [red]✗[/red] {escape(change.host)} [cyan]{escape(change.component)}"
                              f"[/cyan]: {escape(change.summary)}")

    def message(self, text: str) -> None:
        """A waiting message (`waiting for SSH on 10.0.20.100`)."""
        if self._status is not None:
            self._status.update(escape(text))
        else:
            self.output.note(text)

    def stop(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None
