"""The record of a migration: its journal (`migrate-<phase>.journal.jsonl`) read as step states.

`migrate` writes it, one `migrate` event per sub-step done; `up` reads it (through moved_away and
migration_finished) to refuse or to keep the old app container a client; `destroy` closes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from psa_provision.journal import Journal, state_dir
from psa_provision.phases import around


@dataclass
class StepState:
    """What the journal says of one step: the sub-steps done, when its writers were quiesced."""

    done: list[str] = field(default_factory=list)
    quiesced_at: float | None = None
    quiesce_s: float | None = None
    rolled_back: int = 0

    @property
    def finished(self) -> bool:
        return "done" in self.done

    @property
    def label(self) -> str:
        if self.finished:
            return "done"
        if self.done:
            return f"interrupted after {self.done[-1]}"
        return "rolled back, to redo" if self.rolled_back else "to do"


def read_states(entries: list[dict[str, Any]]) -> dict[str, StepState]:
    """Step name -> StepState from the migration journal's records (oldest first)."""
    out: dict[str, StepState] = {}
    for entry in entries:
        if entry.get("event") != "migrate":
            continue
        state = out.setdefault(str(entry.get("step")), StepState())
        sub = str(entry.get("state"))
        if sub == "rolled-back":
            out[str(entry.get("step"))] = StepState(rolled_back=state.rolled_back + 1)
            continue
        state.done.append(sub)
        if sub == "quiesce" and entry.get("at") is not None:
            state.quiesced_at = float(entry["at"])
        if sub == "done" and entry.get("quiesce_s") is not None:
            state.quiesce_s = float(entry["quiesce_s"])
    return out


def journal_for(inventory_path: Path, phase: str) -> Journal:
    """The migration's own journal, `migrate-<phase>.journal.jsonl` next to the phase journals."""
    return Journal(migration_journal(inventory_path, phase))


def migration_journal(inventory_path: Path, phase: str) -> Path:
    """`migrate-<phase>.journal.jsonl`, next to the phase journals."""
    return state_dir(inventory_path) / f"migrate-{phase}.journal.jsonl"


def close_migration_record(inventory_path: Path, phase: str) -> Path | None:
    """Close the record of the migration into `phase` (its containers are gone, so are the data it
    moved): the journal is kept as `migrate-<phase>.journal.jsonl.closed-<time>` for the record, and
    `up` of the phase before is no longer refused on its account. Returns the closed file, if any."""
    path = migration_journal(inventory_path, phase)
    if not path.is_file():
        return None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    closed = path.with_name(f"{path.name}.closed-{stamp}")
    path.rename(closed)
    return closed


def migration_finished(inventory_path: Path, phase: str) -> bool:
    """Whether `migrate <phase>` has recorded its finish step done."""
    return read_states(journal_for(inventory_path, phase).entries()).get("finish", StepState()).finished


def moved_away(inventory_path: Path, phase: str, phases_dir: Path) -> str | None:
    """Why `up <phase>` would be wrong now: a migration from `phase` to the next phase has started
    (its services are being or were moved; converging `phase` again would restart them on stale data).
    None when no such migration is journaled (or its record was closed by a destroy of the new phase)."""
    _, after = around(phase, phases_dir)
    if not after:
        return None
    new = after[0].name
    states = read_states(journal_for(inventory_path, new).entries())
    started = [name for name, st in states.items() if st.done and name != "prepare"]
    if not started:
        return None
    state = "complete" if states.get("finish", StepState()).finished else "under way"
    return (f"the migration {phase} -> {new} is {state} ({', '.join(started)} moved or moving): "
            f"`up {phase}` would start the old services again on stale data")
