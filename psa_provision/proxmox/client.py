"""The typed Proxmox VE client: reads, waited writes and tasks, each named for what it does.

Callers say what they want (`px.snapshot(node, vmid, name)`, `px.perform(Write(...))`); the paths are
this package's (routes.py) and the HTTP underneath is session.py's.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Literal

from psa_provision import privileges
from psa_provision.errors import ProvisionError, ProxmoxAuthError, ProxmoxError, TaskError
from psa_provision.proxmox import session
from psa_provision.proxmox.routes import (
    PURGE,
    TaskTrack,
    Write,
    WriteEffect,
    config_has,
    create_targets,
    task_succeeded,
    upid_node,
    write_effect,
)
from psa_provision.proxmox.session import CallCounter, Notify
from psa_provision.proxmox.settings import ApiSettings, settings_from_inventory

TASK_POLL_START = 0.2
TASK_POLL_MAX = 2.0
RETRY_PAUSES = (0.5, 1.0, 2.0)  # backoff before retry 1, 2, 3 of a call whose answer was lost
TASK_CLOCK_SLACK = 5  # seconds: a task the lost call started began at most this long before we asked


class ProxmoxClient:
    """A connected Proxmox VE API: typed reads, waited writes, errors as ProxmoxError.

    Callers name what they want (`px.snapshot(node, vmid, name)`, `px.perform(Write(...))`); the paths
    are routes.py's. `request` is the one HTTP call underneath (tests and diagnostics use it too).
    """

    _version: dict[str, Any] | None = None  # GET /version, read at connect

    def __init__(self, api: Any, settings: ApiSettings, counter: CallCounter,
                 notify: Notify | None = None) -> None:
        self._api = api
        self.settings = settings
        self.counter = counter
        self.notify: Notify = notify or _stderr_warning

    # -- generic ---------------------------------------------------------------------------------
    def request(self, method: str, path: str, params: dict[str, Any] | None = None,
                effect: WriteEffect | None = None) -> Any:
        """One API call (`GET /nodes`) with PVE's answer (a UPID for a task).

        A lost answer (502/503/504, timeout, dropped connection) is retried with backoff, each retry
        announced via `notify`: a GET as it is, a write only when its `effect` can be read back
        (write_effect): then the task it started is found and returned, or the effect seen, before
        the write is sent again. An expired ticket is renewed once, transparently.
        """
        what = f"{method} {path}"
        asked = time.time()
        for attempt in range(len(RETRY_PAUSES) + 1):
            try:
                return self._send(method, path, params)
            except session.TRANSPORT_ERRORS as exc:
                why = session.transient(exc)
                if why is None or attempt == len(RETRY_PAUSES) or (method != "GET" and effect is None):
                    raise session.map_error(exc, self.settings, what) from exc
                pause = RETRY_PAUSES[attempt]
                self.notify(f"Proxmox API {what}: {why}; retry {attempt + 1}/{len(RETRY_PAUSES)} "
                            f"in {pause:g} s")
                time.sleep(pause)
                if effect is not None:
                    found, upid = self._look_for(effect, asked)
                    if found:
                        self.notify(f"Proxmox API {what}: it took effect"
                                    + (f" (task {upid})" if upid else "") + ", not sent again")
                        return upid
        raise AssertionError("unreachable")  # pragma: no cover

    def _send(self, method: str, path: str, params: dict[str, Any] | None) -> Any:
        return session.send(self._api, self.settings, method, path, params, self.notify)

    def _look_for(self, effect: WriteEffect, asked: float) -> tuple[bool, str | None]:
        """(took effect, UPID of the task it started): the read-back of a write whose answer was lost."""
        if effect.task:
            upid = self._task_since(effect, asked)
            if upid:
                return True, upid
        if effect.kind == "exists":
            return self.find_vmid(effect.vmid or 0) == effect.node, None
        if effect.kind == "absent":
            return self.find_vmid(effect.vmid or 0) is None, None
        if effect.kind in ("running", "stopped"):
            return self.status(effect.node, effect.vmid or 0).get("status") == effect.kind, None
        if effect.kind == "config":
            config = self.get_container(effect.node, effect.vmid or 0) or {}
            return config_has(config, effect.values), None
        values = dict(effect.values)
        volid = f"{values['storage']}:vztmpl/{values['template']}"
        return volid in self.templates(effect.node, values["storage"]), None

    def _task_since(self, effect: WriteEffect, asked: float) -> str | None:
        """The newest task of the write's type for its guest that began since we sent the write."""
        try:  # the node's clock, not ours: task start times are the node's
            now = float(dict(self.request("GET", f"/nodes/{effect.node}/time") or {}).get("time") or 0)
        except ProxmoxError:
            now = 0.0
        now = now or time.time()
        since = int(now - (time.time() - asked)) - TASK_CLOCK_SLACK
        params: dict[str, Any] = {"typefilter": effect.task, "source": "all", "since": since, "limit": 10}
        if effect.vmid is not None:
            params["vmid"] = effect.vmid
        for task in self.request("GET", f"/nodes/{effect.node}/tasks", params) or []:
            if str(task.get("id", "")) == effect.task_id:
                return str(task["upid"])
        return None

    def send(self, write: Write) -> Any:
        """The write, not waited for: PVE's answer (a UPID when it starts a task)."""
        try:
            return self.request(write.method, write.path, write.body, write_effect(write))
        except ProxmoxAuthError as exc:
            if write.action != "create" or write.vmid is None or not exc.message.endswith(
                    "Permission check failed"):
                raise
            needs = privileges.create_needs(write.vmid, *create_targets(write.body))
            raise ProxmoxAuthError(f"{exc.message} (Proxmox names no privilege for a create; it needs "
                                   f"{needs})", hint=exc.hint) from None

    def perform(self, write: Write, *, track: TaskTrack | None = None, timeout: float | None = None) -> Any:
        """The write; a task it starts is told to `track`, waited for, and its final status returned."""
        data = self.send(write)
        if not (isinstance(data, str) and data.startswith("UPID:")):
            return data
        if track is not None:
            track.started(data, write)
        try:
            status = self.wait_task(upid_node(data), data, timeout)
        except ProvisionError:
            stopped = track is not None and self.task_status(upid_node(data), data, quiet=True).get(
                "status") == "stopped"
            if track is not None and stopped:
                track.ended(data, None)
            raise
        if track is not None:
            track.ended(data, status)
        return status

    # -- reads -----------------------------------------------------------------------------------
    def version(self) -> dict[str, Any]:
        """GET /version: proves reachability, TLS and authentication in one call (kept: pve_major)."""
        data = dict(self.request("GET", "/version") or {})
        self._version = data
        return data

    def pve_major(self) -> int:
        """The major Proxmox VE version (`9.0.3` -> 9), from the /version read at connect (0: unknown)."""
        info = self._version if self._version is not None else self.version()
        text = str(info.get("release") or info.get("version") or "")
        head = text.split(".", 1)[0]
        return int(head) if head.isdigit() else 0

    def ha_resources(self) -> list[dict[str, Any]]:
        """HA resources (`sid` ct:<vmid>, `state`, `max_restart`, `max_relocate`, `group` on PVE 8)."""
        return [dict(r) for r in self.request("GET", "/cluster/ha/resources") or []]

    def ha_rules(self) -> list[dict[str, Any]]:
        """PVE 9's HA rules (`rule`, `type`, `resources`, `affinity`, `disable`, ...)."""
        return [dict(r) for r in self.request("GET", "/cluster/ha/rules") or []]

    def ha_groups(self) -> list[dict[str, Any]]:
        """PVE 8's HA groups (`group`, `nodes`, `restricted`, `nofailback`)."""
        return [dict(g) for g in self.request("GET", "/cluster/ha/groups") or []]

    def containers(self, node: str) -> list[dict[str, Any]]:
        """The node's containers as the node sees them now (GET /nodes/{node}/lxc, pve-container's
        vmstatus): `status` is live here, where /cluster/resources carries pvestatd's last sample."""
        return list(self.request("GET", f"/nodes/{node}/lxc") or [])

    def get_container(self, node: str, vmid: int) -> dict[str, Any] | None:
        """The container's config (with `digest`), or None when the node has no such container."""
        if not any(int(c.get("vmid", -1)) == vmid for c in self.containers(node)):
            return None
        return dict(self.request("GET", f"/nodes/{node}/lxc/{vmid}/config") or {})

    def find_vmid(self, vmid: int) -> str | None:
        """The node holding guest `vmid` anywhere in the cluster (nextid reserves nothing)."""
        for res in self.request("GET", "/cluster/resources", {"type": "vm"}) or []:
            if int(res.get("vmid", -1)) == vmid:
                return str(res.get("node"))
        return None

    def cluster_guests(self) -> list[dict[str, Any]]:
        return list(self.request("GET", "/cluster/resources", {"type": "vm"}) or [])

    def cluster_resources(self) -> list[dict[str, Any]]:
        """Nodes, guests and storages of the whole cluster in ONE call (type node|lxc|qemu|storage)."""
        return list(self.request("GET", "/cluster/resources") or [])

    def container_config(self, node: str, vmid: int) -> dict[str, Any]:
        """GET the config (with `digest`) of a container known to exist (e.g. from cluster_resources)."""
        return dict(self.request("GET", f"/nodes/{node}/lxc/{vmid}/config") or {})

    def container_pending(self, node: str, vmid: int) -> tuple[dict[str, Any], set[str]]:
        """(config as the next start will have it, keys whose change is pending) in ONE call.

        GET config merges pending values by default, so a change left pending (a run that died before
        its reboot) would look done; GET .../pending lists each key with `value`, `pending` and `delete`
        (pve-container API2/LXC.pm vm_pending). `digest` is among the keys on Proxmox.
        """
        config: dict[str, Any] = {}
        pending: set[str] = set()
        for entry in self.request("GET", f"/nodes/{node}/lxc/{vmid}/pending") or []:
            key = str(entry.get("key"))
            if entry.get("delete"):
                pending.add(key)
                continue
            if "pending" in entry:
                pending.add(key)
                config[key] = entry["pending"]
            elif "value" in entry:
                config[key] = entry["value"]
        return config, pending

    def bridges(self, node: str) -> list[str]:
        data = self.request("GET", f"/nodes/{node}/network", {"type": "any_bridge"}) or []
        return [str(n["iface"]) for n in data if "iface" in n]

    def templates(self, node: str, storage: str) -> list[str]:
        """Volume ids of the container templates on a storage (`local:vztmpl/debian-12-...`)."""
        data = self.request("GET", f"/nodes/{node}/storage/{storage}/content", {"content": "vztmpl"})
        return [str(v["volid"]) for v in data or []]

    def backup_volumes(self, node: str, storage: str, vmid: int | None = None) -> list[dict[str, Any]]:
        """vzdump archives on a storage (`volid`, `vmid`, `ctime`, `size`, `notes`), oldest first; those
        of guests the token may not back up are not listed (pve-storage check_volume_access)."""
        params: dict[str, Any] = {"content": "backup", **({"vmid": vmid} if vmid is not None else {})}
        data = self.request("GET", f"/nodes/{node}/storage/{storage}/content", params) or []
        return sorted((dict(v) for v in data), key=lambda v: (int(v.get("ctime") or 0), str(v.get("volid"))))

    def available_templates(self, node: str) -> list[str]:
        """Template names the node can download (`GET /nodes/{node}/aplinfo`)."""
        return [str(t.get("template")) for t in self.request("GET", f"/nodes/{node}/aplinfo") or []]

    def permissions(self, path: str) -> set[str] | None:
        """The caller's effective privileges on `path`, or None when the API cannot tell (501).

        Every key counts: the value is the privilege's propagate flag, not whether it is granted
        (GET /access/permissions returns `{path: {privilege: propagate}}`, pve-access-control
        API2/AccessControl.pm permissions), so a pool grant or a non-propagated ACL shows 0.
        """
        try:
            data = self.request("GET", "/access/permissions", {"path": path}) or {}
        except ProxmoxError as exc:
            if " failed: 501 " in exc.message:
                return None
            raise
        return set(dict(data.get(path) or {}))

    def permission_dump(self) -> dict[str, dict[str, int]] | None:
        """The caller's privileges on every ACL path in ONE call ({path: {priv: propagate}}), None on 501."""
        try:
            data = self.request("GET", "/access/permissions") or {}
        except ProxmoxError as exc:
            if " failed: 501 " in exc.message:
                return None
            raise
        return {str(path): dict(privs or {}) for path, privs in dict(data).items()}

    def status(self, node: str, vmid: int) -> dict[str, Any]:
        return dict(self.request("GET", f"/nodes/{node}/lxc/{vmid}/status/current") or {})

    def snapshots(self, node: str, vmid: int) -> list[str]:
        """Names of the container's snapshots (`current` included, as PVE lists it)."""
        return [str(s.get("name")) for s in self.request("GET", f"/nodes/{node}/lxc/{vmid}/snapshot") or []]

    def firewall_rules(self, node: str, vmid: int) -> list[dict[str, Any]]:
        """The container's firewall rules, each with its `pos`."""
        return list(self.request("GET", f"/nodes/{node}/lxc/{vmid}/firewall/rules") or [])

    def firewall_options(self, node: str, vmid: int) -> dict[str, Any]:
        return dict(self.request("GET", f"/nodes/{node}/lxc/{vmid}/firewall/options") or {})

    def datacenter_firewall_options(self) -> dict[str, Any]:
        return dict(self.request("GET", "/cluster/firewall/options") or {})

    def tasks(self, node: str, **filters: Any) -> list[dict[str, Any]]:
        """The node's tasks (`vmid`, `typefilter`, `source`: active|all, `since`, `limit`)."""
        return list(self.request("GET", f"/nodes/{node}/tasks", filters) or [])

    # rrddata (pve-manager API2/Nodes.pm, pve-container API2/LXC.pm `rrddata`): a node's needs Sys.Audit
    # on /nodes/{node}, a container's VM.Audit on /vms/{vmid}. One row per step (60 s for `hour`).
    RRD_ROUTES: dict[str, str] = {"node": "/nodes/{node}/rrddata",
                                  "container": "/nodes/{node}/lxc/{vmid}/rrddata"}

    def rrddata(self, node: str, vmid: int | None = None, *, timeframe: str = "hour",
                cf: Literal["AVERAGE", "MAX"] = "AVERAGE") -> list[dict[str, Any]]:
        """Statistics rows of a container (`cpu` fraction of its cores, `mem`/`maxmem` bytes, ...) or,
        without vmid, of the node; fields PVE does not know for a step are left out of its row."""
        path = self.RRD_ROUTES["node" if vmid is None else "container"].format(node=node, vmid=vmid)
        return [dict(r) for r in self.request("GET", path, {"timeframe": timeframe, "cf": cf}) or []]

    # -- writes (each waits for its task; `track` is told of it first) ------------------------------
    def download_template(self, node: str, storage: str, name: str) -> Any:
        return self.perform(Write("download-template", node, params={"storage": storage, "template": name}))

    def start(self, node: str, vmid: int, *, track: TaskTrack | None = None) -> Any:
        return self.perform(Write("start", node, vmid), track=track)

    def stop(self, node: str, vmid: int, *, track: TaskTrack | None = None) -> Any:
        return self.perform(Write("stop", node, vmid), track=track)

    def reboot(self, node: str, vmid: int) -> Any:
        return self.perform(Write("reboot", node, vmid))

    def delete(self, node: str, vmid: int, *, track: TaskTrack | None = None) -> Any:
        """Delete the container with its disks, jobs and ACLs (purge)."""
        return self.perform(Write("delete", node, vmid, PURGE), track=track)

    def snapshot(self, node: str, vmid: int, name: str, description: str = "", *,
                 track: TaskTrack | None = None) -> Any:
        params = {"snapname": name, **({"description": description} if description else {})}
        return self.perform(Write("snapshot", node, vmid, params), track=track)

    def delete_snapshot(self, node: str, vmid: int, name: str, *, track: TaskTrack | None = None) -> Any:
        return self.perform(Write("delete-snapshot", node, vmid, {"snapname": name}), track=track)

    def add_firewall_rule(self, node: str, vmid: int, rule: Mapping[str, Any]) -> Any:
        """POST a rule: PVE puts it first whatever `pos` says (pve-firewall Rules.pm register_create_rule)."""
        return self.perform(Write("firewall-rule-add", node, vmid, rule))

    def move_firewall_rule(self, node: str, vmid: int, pos: int, moveto: int) -> Any:
        return self.perform(Write("firewall-rule-move", node, vmid, {"pos": pos, "moveto": moveto}))

    def delete_firewall_rule(self, node: str, vmid: int, pos: int) -> Any:
        return self.perform(Write("firewall-rule-delete", node, vmid, {"pos": pos}))

    def vzdump(self, node: str, vmid: int, storage: str, *, notes: str = "",
               track: TaskTrack | None = None) -> Any:
        """A snapshot-mode, zstd-compressed backup of one container into `storage` (a `vzdump` task)."""
        params: dict[str, Any] = {"vmid": vmid, "mode": "snapshot", "storage": storage, "compress": "zstd",
                                  **({"notes-template": notes} if notes else {})}
        return self.perform(Write("vzdump", node, params=params), track=track)

    def restore(self, node: str, vmid: int, volid: str, storage: str, *, force: bool = False,
                track: TaskTrack | None = None, **config: Any) -> Any:
        """A container `vmid` from the backup volume `volid`, its rootfs on `storage`; `config` (hostname,
        net0, ...) overrides the backed-up values. force=1 replaces a stopped container of that vmid
        (Proxmox refuses a running one).

        Never unique=1: Proxmox's restore (LXC/Create.pm sanitize_and_merge_config) then writes every
        backed-up netN with a new MAC over the netN the request gives, so the copy would come up on its
        original's address. A netN given without hwaddr gets a new MAC anyway (parse_lxc_network)."""
        params: dict[str, Any] = {"vmid": vmid, "ostemplate": volid, "restore": 1, "storage": storage,
                                  **({"force": 1} if force else {}), **config}
        return self.perform(Write("restore", node, params=params), track=track)

    # -- tasks -----------------------------------------------------------------------------------
    def task_status(self, node: str, upid: str, *, quiet: bool = False) -> dict[str, Any]:
        """GET the task's status; with `quiet` an API error gives {} (the caller is already failing)."""
        try:
            return dict(self.request("GET", f"/nodes/{node}/tasks/{upid}/status") or {})
        except ProvisionError:
            if quiet:
                return {}
            raise

    def wait_task(self, node: str, upid: str, timeout: float | None = None) -> dict[str, Any]:
        """Poll the task until `stopped`; OK / `WARNINGS: n` returns its status, else TaskError."""
        limit = self.settings.task_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        pause = TASK_POLL_START
        while True:
            status = self.task_status(node, upid)
            if status.get("status") == "stopped":
                if task_succeeded(status.get("exitstatus")):
                    return status
                raise TaskError(
                    f"Proxmox task {status.get('type', '?')} on {node} failed: "
                    f"{status.get('exitstatus')}\n{self.task_log_tail(node, upid)}",
                    hint=f"task id {upid}")
            if time.monotonic() >= deadline:
                raise TaskError(f"Proxmox task {upid} still running after {limit:.0f} s",
                                hint="raise proxmox.task_timeout in the inventory if the host is slow")
            time.sleep(pause)
            pause = min(pause * 1.5, TASK_POLL_MAX)

    def task_log_tail(self, node: str, upid: str, lines: int = 10) -> str:
        """The last lines of a task's log, indented, for error messages."""
        try:
            log = self.request("GET", f"/nodes/{node}/tasks/{upid}/log", {"limit": 100000}) or []
        except ProxmoxError as exc:
            return f"    (task log unavailable: {exc.message})"
        texts = [str(entry.get("t", "")) for entry in log][-lines:]
        return "\n".join(f"    {t}" for t in texts)


def inherited_privileges(dump: dict[str, dict[str, int]], path: str) -> set[str]:
    """Privileges on `path` by a permission dump: its own entry, else the nearest ancestor's propagated ones.

    Example: {"/vms": {"VM.Audit": 1}} gives /vms/200 VM.Audit. A dump lists only paths with ACLs, so
    a grant it cannot show (e.g. through a pool) is missed: callers ask about that path before refusing.
    """
    if path in dump:
        return set(dump[path])
    parts = path.rstrip("/").split("/")
    for end in range(len(parts) - 1, 0, -1):
        parent = "/".join(parts[:end]) or "/"
        if parent in dump:
            return {priv for priv, propagate in dump[parent].items() if propagate}
    return set()


def _stderr_warning(text: str) -> None:
    """Default `notify`: one warning line on stderr (through output.py, the terminal's one writer)."""
    from psa_provision.output import Output  # late: output imports the plan types, not us

    Output().warn(text)



def connect_settings(settings: ApiSettings, notify: Notify | None = None) -> ProxmoxClient:
    """Open an authenticated API session and prove it with GET /version."""
    counter = CallCounter()
    client = ProxmoxClient(session.open_api(settings, counter), settings, counter, notify)
    client.version()
    return client


def connect(inv: Any, notify: Notify | None = None) -> ProxmoxClient:
    """Connect to the inventory's Proxmox VE API (token or ticket, TLS as configured).

    `notify` gets one line per retried call or renewed login (default: a warning on stderr).
    """
    return connect_settings(settings_from_inventory(inv), notify)
