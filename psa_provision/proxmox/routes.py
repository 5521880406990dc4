"""Proxmox VE writes as their callers name them, and the table that turns them into REST paths.

Only this package knows PVE paths: a Write carries an action, node, vmid and parameters; ROUTES gives
its method and path; write_effect says how a write whose answer was lost can be read back.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from psa_provision.errors import ProxmoxError


def create_targets(params: dict[str, Any]) -> tuple[str, str]:
    """(rootfs storage, net0 bridge) of create parameters (`local-lvm:1000`, `...,bridge=vmbr20,...`)."""
    storage = str(params.get("rootfs", "{storage}")).split(":", 1)[0]
    bridge = re.search(r"(?:^|,)bridge=([^,]+)", str(params.get("net0", "")))
    return storage, bridge.group(1) if bridge else "{bridge}"



Action = Literal["create", "config", "resize", "start", "stop", "shutdown", "reboot", "delete", "snapshot",
                 "delete-snapshot", "rollback", "firewall-rule-add", "firewall-rule-move",
                 "firewall-rule-delete", "firewall-options", "datacenter-firewall-options",
                 "download-template", "ha-resource-create", "ha-resource-update", "ha-rule-create",
                 "ha-rule-update", "ha-group-create", "ha-group-update", "vzdump", "restore"]
_CT = "/nodes/{node}/lxc/{vmid}"
# action -> (method, path); a {field} of the path other than node and vmid is taken from the params
ROUTES: dict[str, tuple[str, str]] = {
    "create": ("POST", "/nodes/{node}/lxc"),
    "config": ("PUT", f"{_CT}/config"),
    "resize": ("PUT", f"{_CT}/resize"),
    "start": ("POST", f"{_CT}/status/start"),
    "stop": ("POST", f"{_CT}/status/stop"),
    "shutdown": ("POST", f"{_CT}/status/shutdown"),
    "reboot": ("POST", f"{_CT}/status/reboot"),
    "delete": ("DELETE", _CT),
    "snapshot": ("POST", f"{_CT}/snapshot"),
    "delete-snapshot": ("DELETE", f"{_CT}/snapshot/{{snapname}}"),
    "rollback": ("POST", f"{_CT}/snapshot/{{snapname}}/rollback"),
    "firewall-rule-add": ("POST", f"{_CT}/firewall/rules"),
    "firewall-rule-move": ("PUT", f"{_CT}/firewall/rules/{{pos}}"),
    "firewall-rule-delete": ("DELETE", f"{_CT}/firewall/rules/{{pos}}"),
    "firewall-options": ("PUT", f"{_CT}/firewall/options"),
    "datacenter-firewall-options": ("PUT", "/cluster/firewall/options"),
    "download-template": ("POST", "/nodes/{node}/aplinfo"),
    # pve-ha-manager API2/HA/{Resources,Rules,Groups}.pm: each write needs Sys.Console on /
    "ha-resource-create": ("POST", "/cluster/ha/resources"),
    "ha-resource-update": ("PUT", "/cluster/ha/resources/{sid}"),
    "ha-rule-create": ("POST", "/cluster/ha/rules"),  # PVE 9
    "ha-rule-update": ("PUT", "/cluster/ha/rules/{rule}"),
    "ha-group-create": ("POST", "/cluster/ha/groups"),  # PVE 8
    "ha-group-update": ("PUT", "/cluster/ha/groups/{group}"),
    "vzdump": ("POST", "/nodes/{node}/vzdump"),  # pve-manager API2/VZDump.pm: a `vzdump` task
    "restore": ("POST", "/nodes/{node}/lxc"),  # create_vm with restore=1, ostemplate=<backup volid>
}
PURGE: dict[str, Any] = {"purge": 1, "destroy-unreferenced-disks": 1}  # delete: also its jobs/ACLs and disks


@dataclass(frozen=True)
class Write:
    """One API write as its caller names it: an action on a node (and container), with PVE's parameters.

    Example: Write("delete-snapshot", "pve1", 200, {"snapname": "s"}) is DELETE
    /nodes/pve1/lxc/200/snapshot/s; only this module turns actions into paths (ROUTES).
    """

    action: Action
    node: str = ""
    vmid: int | None = None
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def method(self) -> str:
        return ROUTES[self.action][0]

    @property
    def path(self) -> str:
        return ROUTES[self.action][1].format(node=self.node, vmid=self.vmid, **self._in_path())

    @property
    def body(self) -> dict[str, Any]:
        """The parameters sent in the request (those not in the path)."""
        inside = self._in_path()
        return {k: v for k, v in self.params.items() if k not in inside}

    def _in_path(self) -> dict[str, Any]:
        names = {name for _, name, _, _ in string.Formatter().parse(ROUTES[self.action][1]) if name}
        return {k: v for k, v in self.params.items() if k in names - {"node", "vmid"}}


@dataclass(frozen=True)
class WriteEffect:
    """What a write does, readable afterwards: lets a write whose answer was lost be checked, not repeated.

    kind: `exists` / `absent` (container), `running` / `stopped` (status), `config` (values set),
    `template` (volid on a storage). task: the PVE task type the write starts (None: synchronous).
    """

    kind: str
    node: str
    task: str | None
    vmid: int | None = None
    values: tuple[tuple[str, str], ...] = ()

    @property
    def task_id(self) -> str:
        """The `id` field of the task the write starts (vmid, or the template name for a download)."""
        return dict(self.values).get("template", "") if self.kind == "template" else str(self.vmid)


# action -> (effect kind, task type) of the writes on one container whose effect can be read back
_READ_BACK: dict[str, tuple[str, str]] = {
    "delete": ("absent", "vzdestroy"), "start": ("running", "vzstart"), "stop": ("stopped", "vzstop"),
    "shutdown": ("stopped", "vzshutdown"),
}


def write_effect(write: Write) -> WriteEffect | None:
    """The read-back for a write that may be retried after a lost answer; None: never retried.

    POST create is not idempotent (a second create fails or duplicates): after a lost answer the
    container is looked up (and its create task waited for) instead. A reboot or snapshot has no
    effect one can read back, so those are never retried.
    """
    p = {k: str(v) for k, v in write.params.items()}
    if write.action == "download-template":
        if "template" not in p:
            return None
        return WriteEffect("template", write.node, "download",
                           values=(("storage", p.get("storage", "local")), ("template", p["template"])))
    if write.action in ("create", "restore"):
        vmid = p.get("vmid", "")
        task = "vzcreate" if write.action == "create" else "vzrestore"
        return WriteEffect("exists", write.node, task, int(vmid)) if vmid.isdigit() else None
    if write.vmid is None:
        return None
    if write.action in _READ_BACK:
        kind, task = _READ_BACK[write.action]
        return WriteEffect(kind, write.node, task, write.vmid)
    if write.action == "config":
        values = tuple(sorted((k, v) for k, v in p.items() if k != "digest"))
        return WriteEffect("config", write.node, None, write.vmid, values)
    return None


def config_has(config: dict[str, Any], values: tuple[tuple[str, str], ...]) -> bool:
    """True when a GET config shows every value of a PUT (and none of the keys it deletes)."""
    for key, value in values:
        if key == "delete":
            if any(k.strip() in config for k in re.split(r"[,;\s]+", value) if k.strip()):
                return False
        elif str(config.get(key)) != value:
            return False
    return True


def task_succeeded(exitstatus: str | None) -> bool:
    """PVE task success: `OK`, or `WARNINGS: n` (the task did its work and logged warnings)."""
    return exitstatus == "OK" or bool(exitstatus and exitstatus.startswith("WARNINGS"))


def upid_node(upid: str) -> str:
    """The node a UPID ran on (`UPID:node:pid:...`)."""
    parts = upid.split(":")
    if len(parts) < 3 or parts[0] != "UPID":
        raise ProxmoxError(f"not a task id: {upid!r}")
    return parts[1]


class TaskTrack(Protocol):
    """Told of a write's task before it is waited for and when it ends (apply.JournaledTask journals it)."""

    def started(self, upid: str, write: Write) -> None: ...
    def ended(self, upid: str, status: dict[str, Any] | None) -> None: ...  # None: it failed

