"""Fault injection for tests: rules in state.faults (JSON), set by `pvesim fault`, consumed by the API.

Rules (each with a `count`, decremented when used, removed at 0):
  {"kind": "task-fail", "count": 1, "type": "vzcreate" | null, "id": "202" | null, "message": "..."}
  {"kind": "delay", "count": 3, "seconds": 2.0, "path": "regex" | null}
  {"kind": "http-error", "count": 1, "status": 503, "path": "regex" | null}
  {"kind": "drop", "count": 1, "path": "regex" | null}
`backup_locks` ({vmid, node, upid} of a simulated running backup, see backup_fault.py),
and `ticket_epoch` (bumped by `expire-tickets`: every ticket signed before is invalid), and
`ticket_lifetime` (seconds): overrides PVE's 2 h ticket lifetime.
"""

from __future__ import annotations

import fcntl
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

Rule = dict[str, Any]
KINDS = ("task-fail", "delay", "http-error", "drop")


class Faults:
    """Reads and consumes fault rules; the file is locked so the CLI and the daemon can share it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.seek(0)
            text = f.read()
            data: dict[str, Any] = json.loads(text) if text.strip() else {}
            data.setdefault("rules", [])
            yield data
            f.seek(0)
            f.truncate()
            f.write(json.dumps(data, indent=1))

    def read(self) -> dict[str, Any]:
        """The current rules (for `pvesim fault --list`)."""
        with self._locked() as data:
            return dict(data)

    def add(self, rule: Rule) -> None:
        """Add a rule."""
        if rule.get("kind") not in KINDS:
            raise ValueError(f"unknown fault kind {rule.get('kind')!r}; one of {', '.join(KINDS)}")
        with self._locked() as data:
            data["rules"].append(rule)

    def clear(self) -> None:
        """Remove every rule (ticket expiry stays: it is a moment, not a rule)."""
        with self._locked() as data:
            data["rules"] = []

    def expire_tickets(self) -> None:
        """Every ticket issued until now is rejected from now on (new logins work)."""
        with self._locked() as data:
            data["ticket_epoch"] = int(data.get("ticket_epoch", 0)) + 1

    def set_ticket_lifetime(self, seconds: int | None) -> None:
        """Override PVE's 2 h ticket lifetime (None restores it)."""
        with self._locked() as data:
            if seconds is None:
                data.pop("ticket_lifetime", None)
            else:
                data["ticket_lifetime"] = int(seconds)

    def add_backup_lock(self, entry: dict[str, Any]) -> None:
        """Remember a simulated running backup (released by `fault clear`)."""
        with self._locked() as data:
            data.setdefault("backup_locks", []).append(entry)

    def take_backup_locks(self) -> list[dict[str, Any]]:
        """Forget and return every simulated running backup."""
        with self._locked() as data:
            locks: list[dict[str, Any]] = data.pop("backup_locks", [])
            return locks

    def ticket_policy(self) -> tuple[int, int | None]:
        """(ticket epoch, ticket_lifetime override or None)."""
        if not self.path.exists():
            return 0, None
        with self._locked() as data:
            life = data.get("ticket_lifetime")
            return int(data.get("ticket_epoch", 0)), int(life) if life is not None else None

    def take(self, kind: str, path: str = "", task_type: str = "", task_id: str = "") -> Rule | None:
        """Consume one use of the first matching rule of `kind`; None if none applies."""
        if not self.path.exists():
            return None
        with self._locked() as data:
            for rule in data["rules"]:
                if rule.get("kind") != kind:
                    continue
                if rule.get("path") and not re.search(rule["path"], path):
                    continue
                if rule.get("type") and rule["type"] != task_type:
                    continue
                if rule.get("id") and str(rule["id"]) != task_id:
                    continue
                rule["count"] = int(rule.get("count", 1)) - 1
                data["rules"] = [r for r in data["rules"] if int(r.get("count", 1)) > 0]
                return dict(rule)
        return None

    def task_failure(self, task_type: str, task_id: str = "") -> str | None:
        """The error message for this task (type, id = vmid) if a `task-fail` rule applies to it."""
        rule = self.take("task-fail", task_type=task_type, task_id=task_id)
        if rule is None:
            return None
        return str(rule.get("message") or "injected failure (pvesim fault)")
