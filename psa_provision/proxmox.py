"""The Proxmox VE API adapter: the only importer of proxmoxer and requests.

Connects with an API token (or a ticket login), verifies TLS (system CAs, a CA file, or a pinned
certificate fingerprint), waits for UPID tasks, and turns every HTTP failure into one clear
ProxmoxError sentence. Counts API calls so performance work can see the cost of a run.
"""

from __future__ import annotations

import hashlib
import re
import socket
import ssl
import string
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import requests
from proxmoxer import ProxmoxAPI
from proxmoxer.core import AuthenticationError, ResourceException
from requests.adapters import HTTPAdapter

from psa_provision import privileges
from psa_provision.errors import ConnectionFailed, ProvisionError, ProxmoxAuthError, ProxmoxError, TaskError

TASK_POLL_START = 0.2
TASK_POLL_MAX = 2.0
RETRY_PAUSES = (0.5, 1.0, 2.0)  # backoff before retry 1, 2, 3 of a call whose answer was lost
RETRY_STATUS = frozenset({502, 503, 504})  # gateway/overload answers; PVE's 500 is a real error
TASK_CLOCK_SLACK = 5  # seconds: a task the lost call started began at most this long before we asked
Notify = Callable[[str], None]


@dataclass(frozen=True)
class ApiSettings:
    """Everything needed to reach one Proxmox VE API (read from the inventory)."""

    host: str
    port: int = 8006
    user: str = "root@pam"
    token_name: str | None = None
    token_secret: str | None = None
    password: str | None = None
    ca_file: str | None = None
    fingerprint: str | None = None
    insecure: bool = False
    http_timeout: float = 30.0
    task_timeout: float = 900.0

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def who(self) -> str:
        return f"{self.user}!{self.token_name}" if self.token_name else self.user


def normalize_fingerprint(fingerprint: str) -> str:
    """`AB:CD:..` or `abcd..` -> lowercase hex without colons (urllib3's form); checks it is sha256."""
    hexed = fingerprint.replace(":", "").strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", hexed):
        raise ProxmoxError(f"TLS fingerprint {fingerprint!r} is not a SHA-256 fingerprint",
                           hint="write 64 hex digits, colons allowed (as `pvenode cert info` shows)")
    return hexed


def pretty_fingerprint(hexed: str) -> str:
    """lowercase hex -> `AB:CD:...` as Proxmox shows it."""
    return ":".join(hexed[i:i + 2] for i in range(0, len(hexed), 2)).upper()


def peer_fingerprint(host: str, port: int, timeout: float) -> str:
    """The SHA-256 of the certificate the server presents (no CA check: for pinning only)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=timeout) as sock, \
            ctx.wrap_socket(sock, server_hostname=host) as tls:
        der = tls.getpeercert(binary_form=True)
    if not der:
        raise ProxmoxError(f"{host}:{port} presented no TLS certificate")
    return hashlib.sha256(der).hexdigest()


class FingerprintAdapter(HTTPAdapter):
    """A requests adapter that accepts exactly one server certificate, by its SHA-256."""

    def __init__(self, fingerprint: str) -> None:
        self.fingerprint = normalize_fingerprint(fingerprint)
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["assert_fingerprint"] = self.fingerprint
        super().init_poolmanager(*args, **kwargs)


@dataclass
class CallCounter:
    """Counts HTTP requests made to the API (GET vs writes), for the performance report."""

    reads: int = 0
    writes: int = 0
    by_path: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.reads + self.writes

    def hook(self, response: requests.Response, *args: object, **kwargs: object) -> None:
        method = (response.request.method or "GET").upper()
        if method == "GET":
            self.reads += 1
        else:
            self.writes += 1
        path = re.sub(r"^https://[^/]+/api2/json", "", (response.request.url or "").split("?")[0])
        key = f"{method} {re.sub(r'UPID:[^/]+', 'UPID', path)}"
        self.by_path[key] = self.by_path.get(key, 0) + 1


def verify_setting(settings: ApiSettings) -> bool | str:
    """The `verify` value for requests: a CA file path, False (fingerprint/insecure), or True."""
    if settings.ca_file:
        ca = Path(settings.ca_file).expanduser()
        if not ca.is_file():
            raise ProxmoxError(f"CA file {ca} does not exist",
                               hint="fix proxmox.tls.ca_file in the inventory")
        return str(ca)
    return not (settings.fingerprint or settings.insecure)


def map_error(exc: BaseException, settings: ApiSettings, what: str) -> ProxmoxError | ConnectionFailed:
    """One clear sentence for a failed API call (`what` names the call, e.g. `GET /version`)."""
    if isinstance(exc, requests.exceptions.SSLError):
        text = str(exc)
        seen = re.search(r'got "([0-9a-f]+)"', text)
        if seen:
            return ProxmoxError(
                f"TLS fingerprint mismatch for {settings.url}: the server presents "
                f"{pretty_fingerprint(seen.group(1))}",
                hint="if that is your Proxmox host's certificate, put it in proxmox.tls.fingerprint")
        return ProxmoxError(f"TLS verification of {settings.url} failed ({_short(text)}); "
                            f"the server presents {_seen_fingerprint(settings)}",
                            hint="compare that with `pvenode cert info` on the host; if it is the host's, "
                                 "set proxmox.tls.ca_file (its CA) or proxmox.tls.fingerprint")
    if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
        return ConnectionFailed(
            f"Proxmox API {settings.url} is unreachable ({type(exc).__name__}: {_short(str(exc))})",
            hint="check proxmox.host/port in the inventory and that the API is up (sandbox: pvesim up)")
    if isinstance(exc, AuthenticationError):
        return ProxmoxAuthError(f"Proxmox rejected the login of {settings.user} at {settings.url}",
                                hint="check the user and password in the inventory")
    if isinstance(exc, ResourceException):
        return map_http(exc.status_code, str(exc.content or ""), exc.errors, settings, what)
    return ProxmoxError(f"{what} failed: {exc}")


def _seen_fingerprint(settings: ApiSettings) -> str:
    """The SHA-256 fingerprint of the certificate the API presents, for a TLS error message."""
    try:
        seen = peer_fingerprint(settings.host, settings.port, settings.http_timeout)
    except (OSError, ProxmoxError) as exc:
        return f"a certificate whose fingerprint could not be read ({exc})"
    return f"the certificate with SHA-256 fingerprint {pretty_fingerprint(seen)}"


def map_http(status: int, reason: str, errors: object, settings: ApiSettings, what: str) -> ProxmoxError:
    """Map an HTTP status + PVE reason phrase/errors to a ProxmoxError subclass."""
    detail = reason.strip()
    if isinstance(errors, dict) and errors:
        detail = f"{detail} ({'; '.join(f'{k}: {str(v).strip()}' for k, v in errors.items())})"
    if status == 401:
        return ProxmoxAuthError(f"Proxmox rejected the credentials of {settings.who} (401 {detail})",
                                hint="check the token id and its secret (env var or file in the inventory)")
    if status == 403:
        privilege = re.search(r"\(([^)]*)\)", detail)
        named = privilege.group(1) if privilege else detail
        return ProxmoxAuthError(f"{settings.who} lacks a privilege for {what}: {named}",
                                hint="grant the PSAProvision role on /vms, /storage, /nodes, "
                                     "/sdn/zones/localnetwork, not /vms/<vmid>: destroying a container "
                                     "deletes the ACLs of its own path; `psa-provision doctor` lists what "
                                     "is missing")
    return ProxmoxError(f"{what} failed: {status} {detail}".rstrip())


def _create_targets(params: dict[str, Any]) -> tuple[str, str]:
    """(rootfs storage, net0 bridge) of create parameters (`local-lvm:1000`, `...,bridge=vmbr20,...`)."""
    storage = str(params.get("rootfs", "{storage}")).split(":", 1)[0]
    bridge = re.search(r"(?:^|,)bridge=([^,]+)", str(params.get("net0", "")))
    return storage, bridge.group(1) if bridge else "{bridge}"


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


Action = Literal["create", "config", "resize", "start", "stop", "shutdown", "reboot", "delete", "snapshot",
                 "delete-snapshot", "rollback", "firewall-rule-add", "firewall-rule-move",
                 "firewall-rule-delete", "firewall-options", "datacenter-firewall-options",
                 "download-template"]
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
    if write.action == "create":
        vmid = p.get("vmid", "")
        return WriteEffect("exists", write.node, "vzcreate", int(vmid)) if vmid.isdigit() else None
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


def transient(exc: BaseException) -> str | None:
    """Why a call's answer was lost (`503 Service Unavailable`, `timeout`), or None for a real answer."""
    if isinstance(exc, requests.exceptions.SSLError):
        return None
    if isinstance(exc, requests.exceptions.Timeout):
        return "no answer (timeout)"
    if isinstance(exc, requests.exceptions.ConnectionError):
        return "connection lost"
    if isinstance(exc, ResourceException) and exc.status_code in RETRY_STATUS:
        return f"{exc.status_code} {_short(str(exc.status_message or ''), 60)}".strip()
    return None


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


class ProxmoxClient:
    """A connected Proxmox VE API: typed reads, waited writes, errors as ProxmoxError.

    Callers name what they want (`px.snapshot(node, vmid, name)`, `px.perform(Write(...))`); the paths
    are this module's. `request` is the one HTTP call underneath (tests and diagnostics use it too).
    """

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
            except (ResourceException, requests.exceptions.RequestException, AuthenticationError) as exc:
                why = transient(exc)
                if why is None or attempt == len(RETRY_PAUSES) or (method != "GET" and effect is None):
                    raise map_error(exc, self.settings, what) from exc
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
        """One HTTP request; a 401 on a ticket session logs in again once and repeats the request."""
        call: Callable[..., Any] = getattr(self._api(path.strip("/")), method.lower())
        try:
            return call(**(params or {}))
        except ResourceException as exc:
            if exc.status_code != 401 or self.settings.token_name or not self.settings.password:
                raise
        self._login_again()
        self.notify(f"Proxmox API ticket of {self.settings.user} expired: logged in again")
        return call(**(params or {}))

    def _login_again(self) -> None:
        """Renew the ticket + CSRF token of a password session (PVE tickets live 2 h)."""
        if self.settings.fingerprint:
            _check_pin_before_login(self.settings)
        auth = self._api._store["session"].auth  # proxmoxer's ProxmoxHTTPAuth holds the ticket
        auth._get_new_tokens(password=self.settings.password)

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
            needs = privileges.create_needs(write.vmid, *_create_targets(write.body))
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
        """GET /version: proves reachability, TLS and authentication in one call."""
        data = self.request("GET", "/version")
        return dict(data or {})

    def _containers(self, node: str) -> list[dict[str, Any]]:
        return list(self.request("GET", f"/nodes/{node}/lxc") or [])

    def get_container(self, node: str, vmid: int) -> dict[str, Any] | None:
        """The container's config (with `digest`), or None when the node has no such container."""
        if not any(int(c.get("vmid", -1)) == vmid for c in self._containers(node)):
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
    verify = verify_setting(settings)
    if settings.fingerprint:
        _check_pin_before_login(settings)
    common: dict[str, Any] = {"port": settings.port, "verify_ssl": verify, "timeout": settings.http_timeout}
    try:
        if settings.token_name:
            api = ProxmoxAPI(settings.host, user=settings.user, token_name=settings.token_name,
                             token_value=settings.token_secret or "", **common)
        else:
            api = ProxmoxAPI(settings.host, user=settings.user, password=settings.password or "", **common)
    except (requests.exceptions.RequestException, AuthenticationError) as exc:
        raise map_error(exc, settings, "POST /access/ticket") from exc
    session = api._store["session"]  # proxmoxer keeps its requests.Session there
    if settings.fingerprint:
        session.mount(f"{settings.url}/", FingerprintAdapter(settings.fingerprint))
    session.hooks["response"].append(counter.hook)
    client = ProxmoxClient(api, settings, counter, notify)
    client.version()
    return client


def _check_pin_before_login(settings: ApiSettings) -> None:
    """With a pinned fingerprint, check it before any credential is sent (ticket login too)."""
    want = normalize_fingerprint(settings.fingerprint or "")
    try:
        seen = peer_fingerprint(settings.host, settings.port, settings.http_timeout)
    except OSError as exc:
        raise ConnectionFailed(f"Proxmox API {settings.url} is unreachable ({exc})",
                               hint="check proxmox.host/port in the inventory") from exc
    if seen != want:
        raise ProxmoxError(
            f"TLS fingerprint mismatch for {settings.url}: the server presents {pretty_fingerprint(seen)}",
            hint="if that is your Proxmox host's certificate, put it in proxmox.tls.fingerprint")


def settings_from_inventory(inv: Any) -> ApiSettings:
    """ApiSettings from an inventory.Inventory (reads the token secret/password now)."""
    px = inv.proxmox
    host, _, port = px.base_url.removeprefix("https://").partition(":")
    auth = px.auth
    secret = auth.secret()
    user, _, token_name = (auth.token_id or auth.user or "").partition("!")
    return ApiSettings(
        host=host, port=int(port or px.port), user=user,
        token_name=token_name or None,
        token_secret=secret if auth.kind == "token" else None,
        password=secret if auth.kind == "ticket" else None,
        ca_file=str(px.tls.ca_file) if px.tls.ca_file else None,
        fingerprint=px.tls.fingerprint, insecure=px.tls.insecure,
        http_timeout=float(px.http_timeout_s), task_timeout=float(px.task_timeout_s))


def connect(inv: Any, notify: Notify | None = None) -> ProxmoxClient:
    """Connect to the inventory's Proxmox VE API (token or ticket, TLS as configured).

    `notify` gets one line per retried call or renewed login (default: a warning on stderr).
    """
    return connect_settings(settings_from_inventory(inv), notify)
