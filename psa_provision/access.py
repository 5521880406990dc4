"""What the API token may do: privileges read as Proxmox reports them, checked against privileges.py.

One GET /access/permissions (every ACL path, {privilege: propagate}) answers most questions; a path
where that dump shows something missing is asked about on its own (GET /access/permissions?path=...:
Proxmox computes it with pools and inheritance) before anything is called missing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import privileges
from .errors import ProxmoxAuthError, ProxmoxError
from .proxmox import ProxmoxClient, inherited_privileges

BACKUP_TASK = "vzdump"


class Access:
    """The caller's privileges, read lazily and cached for the run."""

    def __init__(self, px: ProxmoxClient) -> None:
        self.px = px
        self._dump: dict[str, dict[str, int]] | None = None
        self._read = False
        self._asked: dict[str, set[str] | None] = {}

    def dump(self) -> dict[str, dict[str, int]] | None:
        if not self._read:
            self._dump, self._read = self.px.permission_dump(), True
        return self._dump

    def have(self, path: str, want: set[str] | None = None) -> set[str] | None:
        """Privileges on `path` (None: the API cannot list permissions); asks the path itself when the
        dump lacks any of `want`."""
        dump = self.dump()
        if dump is None:
            return None
        found = inherited_privileges(dump, path)
        if want is not None and want <= found:
            return found
        if path not in self._asked:
            self._asked[path] = self.px.permissions(path)
        return self._asked[path]

    def missing(self, need: dict[str, set[str]]) -> list[tuple[str, str]] | None:
        """(privilege, path) pairs not granted, sorted; None when the API cannot tell."""
        have: dict[str, set[str]] = {}
        for path, privs in need.items():
            got = self.have(path, privs)
            if got is None:
                return None
            have[path] = got
        return privileges.missing(need, have)

    def own_path_grants(self, vmids: list[int]) -> list[int]:
        """vmids whose privileges come from an ACL on /vms/<vmid> itself (destroy removes those)."""
        dump = self.dump() or {}
        return [v for v in vmids if f"/vms/{v}" in dump]


def require(access: Access, need: dict[str, set[str]], note: Callable[[str], None]) -> None:
    """ProxmoxAuthError naming every missing privilege and its path; a note when the API cannot tell."""
    lacking = access.missing(need)
    if lacking is None:
        note("the API cannot list permissions (GET /access/permissions): privileges are checked per call")
        return
    if lacking:
        who = access.px.settings.who
        named = "; ".join(f"{priv} on {path}" for priv, path in lacking)
        raise ProxmoxAuthError(f"{who} lacks {named}",
                               hint=f"grant the {privileges.ROLE} role as the README shows "
                                    f"(`psa-provision doctor` lists every privilege and path)")


def datacenter_firewall(px: ProxmoxClient, access: Access, current: dict[str, Any] | None = None) -> bool:
    """True when the datacenter firewall is on; False when it is off and the token may switch it on
    (Sys.Modify on /); else a ProxmoxAuthError naming the one command the admin runs once. `current`:
    the datacenter's firewall options when already read (else read here).

    PUT /cluster/firewall/options needs Sys.Modify on / (pve-firewall API2/Firewall/Cluster.pm
    set_options), which the role leaves out: it also grants node-wide settings.
    """
    if current is None:
        current = px.datacenter_firewall_options()
    if str(current.get("enable", "0")) == "1":
        return True
    have = access.have("/", {privileges.SYS_MODIFY})
    if have is None or privileges.SYS_MODIFY in have:
        return False
    raise ProxmoxAuthError(
        f"the datacenter firewall is off, and {px.settings.who} may not switch it on "
        f"({privileges.SYS_MODIFY} on /): the containers' firewall rules would not be enforced",
        hint=f"run once on a Proxmox node: {privileges.DATACENTER_FIREWALL_COMMAND}")


def lock_diagnosis(px: ProxmoxClient, node: str, vmid: int, lock: str) -> ProxmoxError:
    """The error for a locked container that no task of ours holds: a running backup is named (vzdump
    tasks carry the vmid only when they cover exactly one guest: pve-manager API2/VZDump.pm, so the
    node's active vzdump tasks are read without the vmid filter); `pct unlock` only when none runs."""
    backups = px.tasks(node, typefilter=BACKUP_TASK, source="active")
    if backups:
        upids = ", ".join(str(t.get("upid")) for t in backups)
        return ProxmoxError(f"container {vmid} is locked ({lock}) while a backup runs on node {node} "
                            f"({upids})",
                            hint="wait for the backup to finish, then run again; do not unlock it")
    return ProxmoxError(f"container {vmid} is locked ({lock}) and no task is running for it",
                        hint=f"find out why on node {node}, then `pct unlock {vmid}`")
