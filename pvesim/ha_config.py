"""The HA stack's files as pmxcfs keeps them: etc/pve/ha/{resources,rules,groups}.cfg and manager_status.

The .cfg files use PVE's section config format (PVE::SectionConfig), e.g. resources.cfg:

    ct: 200
        state started
        max_restart 1

(each key line of the file starts with a tab)

and rules.cfg (`resource-affinity: keep-apart` / `node-affinity: on-pve1` sections). A digest is the
SHA-1 of the file's text, as SectionConfig computes it. Pure parsing and printing here, plus the small
locked read/write helpers the handlers and the CRM share; no API or backend knowledge.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Section = dict[str, str]


@dataclass
class SectionConfig:
    """Sections in file order: id -> {"type": ..., key: value}; `order` keeps rule ordinals."""

    ids: dict[str, Section] = field(default_factory=dict)
    digest: str = ""


def parse(text: str) -> SectionConfig:
    """PVE section config text -> SectionConfig (unknown lines are skipped, as PVE warns and skips)."""
    cfg = SectionConfig(digest=hashlib.sha1(text.encode()).hexdigest())  # noqa: S324 - PVE's digest
    current: Section | None = None
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            current = None if not line.strip() else current
            continue
        head = re.fullmatch(r"(\S+):\s*(\S+)\s*", line)
        if head and not line[0].isspace():
            kind, name = head.groups()
            sid = f"{kind}:{name}" if kind in ("ct", "vm") else name
            current = {"type": kind}
            cfg.ids[sid] = current
            continue
        if current is not None:
            key, _, value = line.strip().partition(" ")
            current[key] = value.strip()
    return cfg


def render(cfg: SectionConfig) -> str:
    """SectionConfig -> text, sections separated by a blank line, keys indented with a tab."""
    out = []
    for sid, section in cfg.ids.items():
        kind = section["type"]
        name = sid.split(":", 1)[1] if kind in ("ct", "vm") else sid
        lines = [f"{kind}: {name}"] + [f"\t{k} {v}" for k, v in section.items() if k != "type"]
        out.append("\n".join(lines) + "\n")
    return "\n".join(out)


class HaFiles:
    """etc/pve/ha under a pvesim state root; `locked()` is lock_ha_domain."""

    NAMES = ("resources", "rules", "groups")

    def __init__(self, root: Path) -> None:
        self.dir = root / "etc" / "pve" / "ha"

    def path(self, name: str) -> Path:
        return self.dir / f"{name}.cfg"

    def read(self, name: str) -> SectionConfig:
        """One .cfg (empty if absent)."""
        path = self.path(name)
        return parse(path.read_text() if path.exists() else "")

    def write(self, name: str, cfg: SectionConfig) -> None:
        """Replace one .cfg atomically."""
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path(name).with_suffix(".tmp")
        tmp.write_text(render(cfg))
        os.replace(tmp, self.path(name))

    @contextmanager
    def locked(self) -> Iterator[None]:
        """One writer at a time across the API threads, the CRM thread and the CLI."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with (self.dir / ".lock").open("a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield

    def configured(self, sid: str) -> bool:
        """Config.pm service_is_configured: the resource is in resources.cfg, whatever its state."""
        return sid in self.read("resources").ids

    def request_state(self, sid: str, state: str) -> None:
        """A configured resource's requested state (`ha-manager set SID --state ...`); else nothing."""
        with self.locked():
            cfg = self.read("resources")
            if sid in cfg.ids:
                cfg.ids[sid]["state"] = state
                self.write("resources", cfg)

    def delete_service(self, sid: str, purge: bool) -> bool:
        """Config.pm delete_service_from_config under lock_ha_domain: the resource leaves resources.cfg;
        with `purge` also every rule's `resources`, and a rule left with none is deleted. False when
        the resource was not configured (nothing written)."""
        with self.locked():
            cfg = self.read("resources")
            if sid not in cfg.ids:
                return False
            del cfg.ids[sid]
            self.write("resources", cfg)
            if purge:
                rules = self.read("rules")
                changed = False
                for rid in list(rules.ids):
                    members = split_list(rules.ids[rid].get("resources", ""))
                    if sid not in members:
                        continue
                    changed = True
                    left = [s for s in members if s != sid]
                    if left:
                        rules.ids[rid]["resources"] = ",".join(left)
                    else:
                        del rules.ids[rid]
                if changed:
                    self.write("rules", rules)
        return True

    @property
    def manager_status_path(self) -> Path:
        return self.dir / "manager_status"

    def manager_status(self) -> dict[str, Any]:
        """The CRM's status (master_node, timestamp, node_status, service_status); {} before a round."""
        try:
            data: dict[str, Any] = json.loads(self.manager_status_path.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return data

    def service_status(self, sid: str) -> dict[str, Any]:
        """Config.pm get_service_status: {managed: 0}, or managed 1 with the CRM's state (and group)."""
        conf = self.read("resources").ids.get(sid)
        if conf is None or conf.get("state") == "ignored":
            return {"managed": 0}
        out: dict[str, Any] = {"managed": 1}
        state = self.manager_status().get("service_status", {}).get(sid, {}).get("state")
        if state is not None:
            out["state"] = state
        if "group" in conf:
            out["group"] = conf["group"]
        return out

    def write_manager_status(self, status: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.manager_status_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(status, sort_keys=True))
        os.replace(tmp, self.manager_status_path)


def groups_migrated(groups: SectionConfig) -> bool:
    """PVE::HA::Config::have_groups_been_migrated: true once no HA group is left (also when none ever was)."""
    return not groups.ids


class SidError(ValueError):
    """parse_sid's die text."""


def parse_sid(sid: str, ct_vmids: set[int], vm_vmids: set[int] = frozenset()) -> tuple[str, str, str]:  # type: ignore[assignment]
    """PVE::HA::Config::parse_sid: `200` -> ("ct:200", "ct", "200") when 200 is a container."""
    if re.fullmatch(r"\d+", sid):
        vmid = int(sid)
        if vmid in ct_vmids:
            return f"ct:{sid}", "ct", sid
        if vmid in vm_vmids:
            return f"vm:{sid}", "vm", sid
        raise SidError(f"unable to detect SID from VMID - VM/CT {sid} does not exist")
    found = re.fullmatch(r"(\S+):(\S+)", sid)
    if not found:
        raise SidError(f"unable to parse service id '{sid}'")
    return sid, found.group(1), found.group(2)


def split_list(text: str) -> list[str]:
    """PVE::Tools::split_list: comma, semicolon or whitespace separated."""
    return [p for p in re.split(r"[,;\s]+", text.strip()) if p]


def parse_nodes(text: str) -> dict[str, int]:
    """`pve1:2,pve2` -> {"pve1": 2, "pve2": 0} (pve-ha-node-list)."""
    out: dict[str, int] = {}
    for item in split_list(text):
        node, _, pri = item.partition(":")
        out[node] = int(pri) if pri else 0
    return out
