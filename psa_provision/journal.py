"""The run journal and the phase lock, kept next to the inventory in `<inventory name>.journal/`.

The journal is JSON lines: one record per step (host, component, kind, summary, state, task id),
never secrets (summaries are masked by construction, see plan.Change). The lock stops two runs
from changing the same phase at once; a lock left by a dead process is taken over.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from psa_provision.errors import LockHeld


def state_dir(inventory_path: Path) -> Path:
    """`<inventory dir>/<inventory name>.journal/` (created on demand; git-ignored)."""
    return inventory_path.resolve().parent / f"{inventory_path.stem}.journal"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Journal:
    """Append-only JSON-lines record of one phase's runs."""

    def __init__(self, path: Path, run_id: str | None = None) -> None:
        self.path = path
        self.run_id = run_id or f"{int(time.time())}-{os.getpid()}"

    @classmethod
    def for_phase(cls, inventory_path: Path, phase: str) -> Journal:
        return cls(state_dir(inventory_path) / f"{phase}.journal.jsonl")

    def record(self, event: str, **fields: Any) -> None:
        """Append one record (`event` e.g. `step`, `run-start`, `run-end`)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        entry = {"ts": _now(), "run": self.run_id, "event": event, **fields}
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry, default=str) + "\n")

    def entries(self) -> list[dict[str, Any]]:
        """Every record so far (oldest first); empty when there is no journal yet."""
        if not self.path.exists():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:  # a record cut short by a kill: skip it, the run is redone anyway
                continue
        return out

    def task_started(self, upid: str, step: str, **fields: Any) -> None:
        """Record a Proxmox task before waiting for it, so a rerun after a kill can wait for it too."""
        self.record("task", upid=upid, step=step, state="running", **fields)

    def task_ended(self, upid: str, state: str, **fields: Any) -> None:
        """Record the end of a task (`done` or `failed`) that task_started announced."""
        self.record("task", upid=upid, state=state, **fields)

    def open_tasks(self) -> list[dict[str, Any]]:
        """Tasks some run started and no run saw end (its process was killed while waiting)."""
        running: dict[str, dict[str, Any]] = {}
        for entry in self.entries():
            if entry.get("event") != "task" or not entry.get("upid"):
                continue
            if entry.get("state") == "running":
                running[str(entry["upid"])] = entry
            else:
                running.pop(str(entry["upid"]), None)
        return list(running.values())


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class PhaseLock:
    """An exclusive lock on one phase: `{pid, host, since}` in `<phase>.lock`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def for_phase(cls, inventory_path: Path, phase: str) -> PhaseLock:
        return cls(state_dir(inventory_path) / f"{phase}.lock")

    def holder(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def acquire(self) -> None:
        """Take the lock, or LockHeld naming who holds it; a dead holder's lock is taken over."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": _now()}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                held = self.holder()
                if held and not self._stale(held):
                    raise LockHeld(
                        f"phase lock {self.path} is held by pid {held.get('pid')} on {held.get('host')} "
                        f"since {held.get('since')}",
                        hint="wait for that run to finish; if it is gone, delete the lock file") from None
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(me, handle)
            return
        raise LockHeld(f"could not take the phase lock {self.path}", hint="another run raced for it; retry")

    @staticmethod
    def _stale(held: dict[str, Any]) -> bool:
        """A lock is stale when its holder ran on this machine and that pid is gone."""
        if held.get("host") != socket.gethostname():
            return False
        try:
            return not pid_alive(int(held.get("pid", -1)))
        except (TypeError, ValueError):
            return True

    def release(self) -> None:
        held = self.holder()
        if held and held.get("pid") == os.getpid():
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()


# -- what a migration in progress asks `up` to keep ---------------------------------------------------
def grants_path(inventory_path: Path, phase: str) -> Path:
    """`<phase>.migration-grants.json` next to the journals (present only while a migration runs)."""
    return state_dir(inventory_path) / f"{phase}.migration-grants.json"


def migration_grants(inventory_path: Path | None, phase: str) -> dict[str, Any]:
    """{"clients": [IP, ...], "hold_app": bool} while `migrate <phase>` is under way, else {}.

    `up <phase>` reads it so that a run in the middle of a migration keeps the temporary pg_hba lines
    of the old containers (their app still writes to the moved stores) and leaves the new app
    container's PM2 apps stopped until the migration's app step starts them.
    """
    if inventory_path is None:
        return {}
    try:
        data = json.loads(grants_path(inventory_path, phase).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_migration_grants(inventory_path: Path, phase: str, grants: dict[str, Any] | None) -> None:
    """Write (atomically) or, with None, remove the migration's grants file."""
    path = grants_path(inventory_path, phase)
    if grants is None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(grants, sort_keys=True), encoding="utf-8")
    tmp.replace(path)
