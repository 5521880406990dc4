"""Fault injection for tests: rules in state.faults (JSON), set by `pvesim fault`, consumed by the API.

Rules (each with a `count`, decremented when used, removed at 0):
  {"kind": "task-fail", "count": 1, "type": "vzcreate" | null, "id": "202" | null, "message": "..."}
  {"kind": "delay", "count": 3, "seconds": 2.0, "path": "regex" | null}
  {"kind": "http-error", "count": 1, "status": 503, "path": "regex" | null}
  {"kind": "drop", "count": 1, "path": "regex" | null}
Every rule may also carry a scope, so that runs sharing the sandbox do not hit each other's faults:
  "vmid": 202          API paths under /lxc/202 (or /qemu/202); for task-fail, tasks whose id is 202
  "user": "u@pve!tok"  requests and tasks of that API token; "u@pve" also covers every token of u@pve
  "prefix": "/nodes/pve1/lxc/202"   API paths at or under it (with or without /api2/json)
and an `owner` tag, so that `pvesim fault clear --owner X` removes X's rules only. `add` numbers each
rule (`rule_id`), for `clear --id N`.
`backup_locks` ({vmid, node, upid, rule_id, owner} of a simulated running backup, see backup_fault.py),
`nodes_down` ({node, since, fence_delay, rule_id, owner} of a node that lost power, see node_fault.py),
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
from urllib.parse import unquote

Rule = dict[str, Any]
KINDS = ("task-fail", "delay", "http-error", "drop")
API_PREFIX = "/api2/json"


def requester(authorization: str, cookie: str = "") -> str:
    """Who a request says it is (`user@realm!token` or a ticket's `user@realm`), read before any
    check: a fault scoped to a user only reaches requests that claim to be that user."""
    if authorization.startswith("PVEAPIToken"):
        value = authorization.split("=", 1)[1] if "=" in authorization else ""
        return value.partition("=")[0].strip()
    found = re.search(r"PVEAuthCookie=([^;\s]+)", f"{authorization};{cookie}")
    if found is None:
        return ""
    parts = unquote(found.group(1)).split(":")
    return parts[1] if len(parts) > 2 and parts[0] == "PVE" else ""


def user_matches(scope: str, who: str) -> bool:
    """A token id matches itself only; a user matches itself and each of its tokens."""
    return who == scope or ("!" not in scope and who.startswith(scope + "!"))


def path_names_vmid(path: str, vmid: str) -> bool:
    """Whether an API path is about guest `vmid` (…/lxc/<vmid> or …/qemu/<vmid>, then / or the end)."""
    return re.search(rf"/(?:lxc|qemu)/{re.escape(vmid)}(?:/|$)", path) is not None


def path_under(prefix: str, path: str) -> bool:
    """Whether `path` is `prefix` or below it, segment by segment; /api2/json is optional on both."""
    def bare(p: str) -> str:
        return (p[len(API_PREFIX):] if p.startswith(API_PREFIX) else p).rstrip("/") or "/"
    want, have = bare(prefix), bare(path)
    return want == "/" or have == want or have.startswith(want + "/")


def applies(rule: Rule, kind: str, path: str = "", task_type: str = "", task_id: str = "",
            user: str = "") -> bool:
    """Whether `rule` covers this request (path, user) or task (type, id, user)."""
    if rule.get("kind") != kind:
        return False
    if rule.get("path") and not re.search(rule["path"], path):
        return False
    if rule.get("type") and rule["type"] != task_type:
        return False
    if rule.get("id") and str(rule["id"]) != task_id:
        return False
    vmid = rule.get("vmid")
    if vmid is not None:
        if kind == "task-fail" and str(vmid) != task_id:
            return False
        if kind != "task-fail" and not path_names_vmid(path, str(vmid)):
            return False
    if rule.get("user") and not user_matches(str(rule["user"]), user):
        return False
    return not (rule.get("prefix") and not path_under(str(rule["prefix"]), path))


def check(rule: Rule) -> None:
    """ValueError naming what is wrong with a rule before it is stored."""
    if rule.get("kind") not in KINDS:
        raise ValueError(f"unknown fault kind {rule.get('kind')!r}; one of {', '.join(KINDS)}")
    if rule.get("vmid") is not None and not str(rule["vmid"]).isdigit():
        raise ValueError(f"vmid {rule['vmid']!r} is not a number")
    if rule.get("user") and "@" not in str(rule["user"]):
        raise ValueError(f"user {rule['user']!r} is not user@realm or user@realm!token")
    if rule.get("prefix"):
        if rule["kind"] == "task-fail":
            raise ValueError("a path prefix scopes API requests; scope a task-fail rule with vmid or user")
        if not str(rule["prefix"]).startswith("/"):
            raise ValueError(f"path prefix {rule['prefix']!r} does not start with /")


def _selected(entry: dict[str, Any], owner: str | None, rule_id: int | None) -> bool:
    """Whether a clear with these filters (None: any) removes `entry`."""
    if owner is not None and entry.get("owner") != owner:
        return False
    return rule_id is None or entry.get("rule_id") == rule_id


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

    @staticmethod
    def _next_id(data: dict[str, Any]) -> int:
        data["next_rule_id"] = int(data.get("next_rule_id", 1)) + 1
        return int(data["next_rule_id"]) - 1

    def read(self, owner: str | None = None) -> dict[str, Any]:
        """The current rules (for `pvesim fault list`), only `owner`'s when given."""
        with self._locked() as data:
            shown = dict(data)
        if owner is not None:
            shown["rules"] = [r for r in shown["rules"] if r.get("owner") == owner]
            shown["backup_locks"] = [b for b in shown.get("backup_locks", []) if b.get("owner") == owner]
        return shown

    def add(self, rule: Rule) -> int:
        """Add a rule; returns its number (for `clear --id`)."""
        check(rule)
        with self._locked() as data:
            rule = {**rule, "rule_id": self._next_id(data)}
            data["rules"].append(rule)
            return int(rule["rule_id"])

    def clear(self, owner: str | None = None, rule_id: int | None = None) -> int:
        """Remove the rules of `owner` / numbered `rule_id` (neither: every rule); how many went.
        Ticket expiry stays: it is a moment, not a rule."""
        with self._locked() as data:
            kept = [r for r in data["rules"] if not _selected(r, owner, rule_id)]
            removed = len(data["rules"]) - len(kept)
            data["rules"] = kept
            return removed

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

    def add_backup_lock(self, entry: dict[str, Any]) -> int:
        """Remember a simulated running backup (released by `fault clear`); returns its number."""
        with self._locked() as data:
            entry = {**entry, "rule_id": self._next_id(data)}
            data.setdefault("backup_locks", []).append(entry)
            return int(entry["rule_id"])

    def take_backup_locks(self, owner: str | None = None, rule_id: int | None = None) -> list[dict[str, Any]]:
        """Forget and return the simulated running backups a clear with these filters removes."""
        with self._locked() as data:
            locks: list[dict[str, Any]] = data.pop("backup_locks", [])
            taken = [b for b in locks if _selected(b, owner, rule_id)]
            kept = [b for b in locks if not _selected(b, owner, rule_id)]
            if kept:
                data["backup_locks"] = kept
            return taken

    def add_node_down(self, entry: dict[str, Any]) -> int:
        """Record a node as down (node_fault.py); returns its number. A node is down once."""
        with self._locked() as data:
            down: list[dict[str, Any]] = data.setdefault("nodes_down", [])
            if any(d.get("node") == entry["node"] for d in down):
                raise ValueError(f"node {entry['node']} is already down")
            entry = {**entry, "rule_id": self._next_id(data)}
            down.append(entry)
            return int(entry["rule_id"])

    def take_nodes_down(self, owner: str | None = None, rule_id: int | None = None,
                        node: str | None = None) -> list[dict[str, Any]]:
        """Forget and return the down nodes a clear with these filters (or `node`) brings back."""
        with self._locked() as data:
            down: list[dict[str, Any]] = data.pop("nodes_down", [])
            hit = [d for d in down if _selected(d, owner, rule_id) and node in (None, d.get("node"))]
            kept = [d for d in down if d not in hit]
            if kept:
                data["nodes_down"] = kept
            return hit

    def nodes_down(self) -> dict[str, dict[str, Any]]:
        """node -> its node-down entry."""
        if not self.path.exists():
            return {}
        with self._locked() as data:
            return {str(d["node"]): dict(d) for d in data.get("nodes_down", [])}

    def ticket_policy(self) -> tuple[int, int | None]:
        """(ticket epoch, ticket_lifetime override or None)."""
        if not self.path.exists():
            return 0, None
        with self._locked() as data:
            life = data.get("ticket_lifetime")
            return int(data.get("ticket_epoch", 0)), int(life) if life is not None else None

    def take(self, kind: str, path: str = "", task_type: str = "", task_id: str = "",
             user: str = "") -> Rule | None:
        """Consume one use of the first matching rule of `kind`; None if none applies."""
        if not self.path.exists():
            return None
        with self._locked() as data:
            for rule in data["rules"]:
                if not applies(rule, kind, path, task_type, task_id, user):
                    continue
                rule["count"] = int(rule.get("count", 1)) - 1
                data["rules"] = [r for r in data["rules"] if int(r.get("count", 1)) > 0]
                return dict(rule)
        return None

    def task_failure(self, task_type: str, task_id: str = "", user: str = "") -> str | None:
        """The error message for this task (type, id = vmid, user) if a `task-fail` rule applies to it."""
        rule = self.take("task-fail", task_type=task_type, task_id=task_id, user=user)
        if rule is None:
            return None
        return str(rule.get("message") or "injected failure (pvesim fault)")
