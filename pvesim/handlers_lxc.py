"""Container endpoints: list, create, destroy, config (live vs pending), status and power."""

from __future__ import annotations

import re
import secrets
from typing import Any

from pvesim import handlers_lxcstore as store
from pvesim import pveconf
from pvesim.auth import require
from pvesim.backend import Log
from pvesim.handlers_cluster import STORAGES, check_node
from pvesim.pveconf import PveConf, Section
from pvesim.server import ApiError, Request, route

# Parameters of `pct create` that are actions or secrets, never config keys.
NOT_CONFIG = {"node", "vmid", "ostemplate", "password", "ssh-public-keys", "start", "storage", "force",
              "unique", "restore", "pool", "ignore-unpack-errors", "bwlimit", "ha-managed", "digest",
              "delete", "revert"}
# What PVE changes on a running container at once (pve-container's LXC_FASTPLUG_OPTIONS plus
# vmconfig_hotplug_pending: cgroup limits, network; mp/dev only when new); the rest becomes pending.
FASTPLUG = {"description", "onboot", "startup", "protection", "hostname", "hookscript", "cores", "tags",
            "lock"}
HOTPLUG = FASTPLUG | {"memory", "swap", "cpulimit", "cpuunits"}
HOT_DELETE = FASTPLUG | {"swap", "cpulimit", "cpuunits"}
PVE_OUI = "BC:24:11"  # Proxmox's default MAC prefix


def _vmid(req: Request) -> tuple[str, int]:
    node = check_node(req)
    return node, req.int("vmid")


def _mac() -> str:
    tail = secrets.token_bytes(3)
    return PVE_OUI + "".join(f":{b:02X}" for b in tail)


def _net(value: str, old: str | None = None) -> str:
    """A net[n] value as PVE stores it: hwaddr kept or generated, type=veth, name first."""
    props = pveconf.parse_property_string(value)
    old_props = pveconf.parse_property_string(old) if old else {}
    props.setdefault("hwaddr", old_props.get("hwaddr") or _mac())
    props.setdefault("type", "veth")
    return pveconf.print_property_string(props, first=("name",))


def _rootfs(value: str, vmid: int, index: int = 0) -> tuple[str, int]:
    """`local-lvm:8` -> (`local-lvm:vm-<vmid>-disk-0,size=8G`, bytes); existing volumes kept."""
    props = pveconf.parse_property_string(value, "volume")
    volume = props["volume"]
    storage, _, rest = volume.partition(":")
    if storage not in STORAGES:
        raise ApiError(500, f"storage '{storage}' does not exist")
    if "rootdir" not in STORAGES[storage]["content"].split(","):
        raise ApiError(500, f"storage '{storage}' does not support container directories")
    if re.fullmatch(r"\d+(\.\d+)?", rest):
        size = int(float(rest) * 1024**3)
        props["volume"] = f"{storage}:vm-{vmid}-disk-{index}"
        props["size"] = pveconf.format_size(size)
    else:
        size = pveconf.parse_size(props.get("size", "0")) or 0
    return pveconf.print_property_string(props, "volume"), size


def _template(req: Request) -> Any:
    """Path of `local:vztmpl/NAME` in the template cache."""
    volid = req.params["ostemplate"]
    storage, _, rest = volid.partition(":")
    name = rest.removeprefix("vztmpl/")
    path = req.app.state.template_cache / name
    if storage != "local" or not rest.startswith("vztmpl/") or "/" in name or not path.is_file():
        raise ApiError(500, f"volume '{volid}' does not exist")
    return path


def _ostype(template_name: str) -> str:
    for os_ in ("debian", "ubuntu", "centos", "fedora", "alpine", "archlinux", "opensuse", "devuan"):
        if template_name.startswith(os_):
            return os_
    return "unmanaged"


@route("GET", "/nodes/{node}/lxc")
def lxc_list(req: Request) -> list[dict[str, Any]]:
    """Containers on this node with status and limits."""
    node = check_node(req)
    return [store.status_entry(req.app, node, vmid) for vmid in store.vmids(req.app, node)]


def _create_conf(req: Request, vmid: int, template: Any) -> PveConf:
    conf = PveConf()
    values: dict[str, str] = {"arch": "amd64", "ostype": _ostype(template.name), "memory": "512",
                              "swap": "512", "hostname": f"CT{vmid}"}
    for key, value in req.params.items():
        if key in NOT_CONFIG:
            continue
        if key == "description":
            conf.main.description = value
        elif re.fullmatch(r"net\d+", key):
            values[key] = _net(value)
        elif key == "rootfs" or re.fullmatch(r"mp\d+", key):
            index = 0 if key == "rootfs" else int(key[2:]) + 1
            values[key], _ = _rootfs(value, vmid, index)
        else:
            values[key] = value
    if "rootfs" not in values:
        values["rootfs"], _ = _rootfs(f"{req.params.get('storage', 'local')}:4", vmid)
    values["lock"] = "create"
    conf.main.values = values
    return conf


@route("POST", "/nodes/{node}/lxc")
def lxc_create(req: Request) -> str:
    """`pct create`: config written with lock=create at once, the rootfs built in a vzcreate task."""
    app = req.app
    node, vmid = _vmid(req)
    require(req.identity, f"/vms/{vmid}", "VM.Allocate")
    if req.flag("restore"):
        raise ApiError(501, "restore is not supported by pvesim")
    if req.params.get("unprivileged") != "1":
        require(req.identity, "/", "Sys.Modify")
    template = _template(req)
    with app.conf_lock:
        other = store.locate(app, vmid)
        if other is not None:
            raise ApiError(500, f"CT {vmid} already exists on node '{other}'")
        conf = _create_conf(req, vmid, template)
        require(req.identity, "/storage/local-lvm", "Datastore.AllocateSpace")
        store.save(app, node, vmid, conf)
    keys = req.params.get("ssh-public-keys")
    password = req.params.get("password")
    start = req.flag("start")

    def work(log: Log) -> None:
        app.backend.create(vmid, _backend_values(conf), template, keys, log)
        set_password = getattr(app.backend, "set_password", None)
        if password and callable(set_password):
            set_password(vmid, password, log)
        with app.conf_lock:
            current, _ = store.load(app, node, vmid)
            current.main.values.pop("lock", None)
            store.save(app, node, vmid, current)
        if start:
            app.backend.start(vmid, log)

    def finalize(log: Log, ok: bool) -> None:
        if not ok:
            _discard(req, node, vmid, log)

    return app.tasks.start(node, "vzcreate", str(vmid), req.identity.name, work, vmid=vmid, finalize=finalize)


def _discard(req: Request, node: str, vmid: int, log: Log) -> None:
    """Undo a failed create: remove what the backend made and the config (PVE does the same)."""
    try:
        if req.app.backend.exists(vmid):
            req.app.backend.destroy(vmid, log)
    except Exception as e:  # the create error is the one to report
        log(f"cleanup after failed create: {e}")
    req.app.state.lxc_conf(node, vmid).unlink(missing_ok=True)


@route("GET", "/nodes/{node}/lxc/{vmid}")
def lxc_index(req: Request) -> list[dict[str, str]]:
    """Directory index of a container."""
    node, vmid = _vmid(req)
    store.load(req.app, node, vmid)
    return [{"subdir": s} for s in ("config", "pending", "status", "snapshot", "interfaces", "resize",
                                    "rrd", "rrddata", "firewall")]


@route("DELETE", "/nodes/{node}/lxc/{vmid}")
def lxc_destroy(req: Request) -> str:
    """Destroy a container (refused while running unless force=1); a vzdestroy task."""
    app = req.app
    node, vmid = _vmid(req)
    with app.conf_lock:
        conf, _ = store.load(app, node, vmid)
        store.check_lock(conf)
        force = req.flag("force")
        if store.is_running(app, vmid) and not force:
            raise ApiError(500, f"unable to destroy CT {vmid} - container is running")
        conf.main.values["lock"] = "destroyed"
        store.save(app, node, vmid, conf)

    def work(log: Log) -> None:
        if force and store.is_running(app, vmid):
            app.backend.stop(vmid, log)
        if app.backend.exists(vmid):
            app.backend.destroy(vmid, log)
        app.state.lxc_conf(node, vmid).unlink(missing_ok=True)
        if req.flag("purge"):
            log(f"purging CT {vmid} from related configurations..")

    def finalize(log: Log, ok: bool) -> None:
        if not ok:
            with app.conf_lock:
                current, _ = store.load(app, node, vmid)
                current.main.values.pop("lock", None)
                store.save(app, node, vmid, current)

    return app.tasks.start(node, "vzdestroy", str(vmid), req.identity.name, work, vmid=vmid,
                           finalize=finalize)


# --- config ----------------------------------------------------------------------------------

@route("GET", "/nodes/{node}/lxc/{vmid}/config")
def config_get(req: Request) -> dict[str, Any]:
    """Config with digest; pending values shown unless current=1; a snapshot's with snapshot=NAME."""
    node, vmid = _vmid(req)
    conf, digest = store.load(req.app, node, vmid)
    if "snapshot" in req.params:
        snap = conf.snapshots.get(req.params["snapshot"])
        if snap is None:
            raise ApiError(500, f"snapshot '{req.params['snapshot']}' does not exist")
        values: dict[str, Any] = snap.as_dict()
    else:
        values = conf.main.as_dict() if req.flag("current") else store.effective(conf)
    values["digest"] = digest
    return {k: _typed(k, v) for k, v in values.items()}


def _typed(key: str, value: str) -> Any:
    """Integer-valued keys come back as JSON numbers, as PVE returns them."""
    if key in {"cores", "memory", "swap", "cpuunits", "onboot", "unprivileged", "protection", "tty",
               "snaptime", "template", "console", "debug"} and value.lstrip("-").isdigit():
        return int(value)
    if key == "cpulimit":
        return float(value)
    return value


def _is_live(key: str, current: dict[str, str]) -> bool:
    """Whether setting `key` applies now on a running container."""
    if key in HOTPLUG or re.fullmatch(r"net\d+", key):
        return True
    return bool(re.fullmatch(r"(mp|dev)\d+", key)) and key not in current


def _is_live_delete(key: str) -> bool:
    """Whether deleting `key` applies now on a running container."""
    return key in HOT_DELETE or bool(re.fullmatch(r"(net|unused)\d+", key))


def _set(section: Section, key: str, value: str) -> None:
    if key == "description":
        section.description = value
    else:
        section.values[key] = value


def _unset(section: Section, key: str) -> None:
    if key == "description":
        section.description = ""
    else:
        section.values.pop(key, None)


@route("PUT", "/nodes/{node}/lxc/{vmid}/config")
def config_put(req: Request) -> None:
    """Change config: live keys apply now on a running container, the others become pending."""
    app = req.app
    node, vmid = _vmid(req)
    changes = {k: v for k, v in req.params.items() if k not in NOT_CONFIG}
    deletes = [k for k in re.split(r"[,;\s]+", req.params.get("delete", "")) if k]
    reverts = [k for k in re.split(r"[,;\s]+", req.params.get("revert", "")) if k]
    for key in deletes:
        if key in changes:
            raise ApiError(400, "Parameter verification failed.",
                           {"delete": f"unable to delete '{key}' - option is also set"})
        if key in ("rootfs", "hostname", "arch", "ostype"):
            raise ApiError(400, "Parameter verification failed.",
                           {"delete": f"unable to delete required option '{key}'"})
    with app.conf_lock:
        conf, digest = store.load(app, node, vmid)
        if "digest" in req.params and not digest.startswith(req.params["digest"]):
            raise ApiError(500, "detected modified configuration - file changed by other user? Try again.")
        if "lock" not in changes and "lock" not in deletes:
            store.check_lock(conf)
        running = store.is_running(app, vmid)
        applied = _apply_changes(conf, vmid, changes, deletes, reverts, running)
        store.save(app, node, vmid, conf)
    if applied and app.backend.exists(vmid):
        logged: list[str] = []
        app.backend.update(vmid, _backend_values(conf), logged.append)


def _apply_changes(conf: PveConf, vmid: int, changes: dict[str, str], deletes: list[str],
                   reverts: list[str], running: bool) -> bool:
    """Edit the config in place; True if the main section changed (the backend must follow)."""
    applied = False
    for key in reverts:
        conf.pending.pop(key, None)
        conf.pending_delete = [k for k in conf.pending_delete if k != key]
    for key in deletes:
        conf.pending.pop(key, None)
        if running and not _is_live_delete(key):
            if key not in conf.pending_delete:
                conf.pending_delete.append(key)
        else:
            _unset(conf.main, key)
            applied = True
    for key, value in changes.items():
        if re.fullmatch(r"net\d+", key):
            value = _net(value, conf.main.values.get(key))
        elif key == "rootfs" or re.fullmatch(r"mp\d+", key):
            value, _ = _rootfs(value, vmid, 0 if key == "rootfs" else int(key[2:]) + 1)
        conf.pending_delete = [k for k in conf.pending_delete if k != key]
        if running and not _is_live(key, conf.main.values):
            conf.pending[key] = value
        else:
            conf.pending.pop(key, None)
            _set(conf.main, key, value)
            applied = True
    return applied


def _backend_values(conf: PveConf) -> dict[str, str]:
    """The main section as the backend sees it (description included, lock left out)."""
    values = {k: v for k, v in conf.main.values.items() if k != "lock"}
    if conf.main.description:
        values["description"] = conf.main.description
    return values


@route("GET", "/nodes/{node}/lxc/{vmid}/pending")
def pending(req: Request) -> list[dict[str, Any]]:
    """Every key with its current value, pending value and pending delete flag."""
    node, vmid = _vmid(req)
    conf, _ = store.load(req.app, node, vmid)
    current = conf.main.as_dict()
    out = []
    for key in sorted(set(current) | set(conf.pending) | set(conf.pending_delete)):
        entry: dict[str, Any] = {"key": key}
        if key in current:
            entry["value"] = current[key]
        if key in conf.pending:
            entry["pending"] = conf.pending[key]
        if key in conf.pending_delete:
            entry["delete"] = 1
        out.append(entry)
    return out


# --- status and power ------------------------------------------------------------------------

@route("GET", "/nodes/{node}/lxc/{vmid}/status")
def status_index(req: Request) -> list[dict[str, str]]:
    """Directory index of status."""
    node, vmid = _vmid(req)
    store.load(req.app, node, vmid)
    return [{"subdir": s} for s in ("current", "start", "stop", "shutdown", "reboot", "suspend", "resume")]


@route("GET", "/nodes/{node}/lxc/{vmid}/status/current")
def status_current(req: Request) -> dict[str, Any]:
    """Runtime status of a container."""
    node, vmid = _vmid(req)
    return store.status_entry(req.app, node, vmid)


def _power(req: Request, kind: str, must_run: bool | None, action: Any) -> str:
    """Common part of start/stop/shutdown/reboot: checks as PVE, then a task of `kind`."""
    app = req.app
    node, vmid = _vmid(req)
    with app.conf_lock:
        conf, _ = store.load(app, node, vmid)
        if not req.flag("skiplock"):
            store.check_lock(conf)
        running = store.is_running(app, vmid)
        if must_run is True and not running:
            raise ApiError(500, f"CT {vmid} not running")
        if must_run is False and running:
            raise ApiError(500, f"CT {vmid} already running")
    return app.tasks.start(node, kind, str(vmid), req.identity.name,
                           lambda log: action(app, node, vmid, log), vmid=vmid)


def _start(app: Any, node: str, vmid: int, log: Log) -> None:
    """Apply pending changes (as PVE does at start), regenerate, start."""
    with app.conf_lock:
        conf, _ = store.load(app, node, vmid)
        changed = store.apply_pending(conf)
        if changed:
            store.save(app, node, vmid, conf)
    if changed:
        app.backend.update(vmid, _backend_values(conf), log)
    app.backend.start(vmid, log)


@route("POST", "/nodes/{node}/lxc/{vmid}/status/start")
def start(req: Request) -> str:
    """Start (vzstart)."""
    return _power(req, "vzstart", False, _start)


@route("POST", "/nodes/{node}/lxc/{vmid}/status/stop")
def stop(req: Request) -> str:
    """Hard stop (vzstop)."""
    return _power(req, "vzstop", True, lambda app, node, vmid, log: app.backend.stop(vmid, log))


@route("POST", "/nodes/{node}/lxc/{vmid}/status/shutdown")
def shutdown(req: Request) -> str:
    """Clean shutdown with timeout (vzshutdown)."""
    timeout = req.int("timeout", 60)
    return _power(req, "vzshutdown", True,
                  lambda app, node, vmid, log: app.backend.shutdown(vmid, timeout, log))


@route("POST", "/nodes/{node}/lxc/{vmid}/status/reboot")
def reboot(req: Request) -> str:
    """Shutdown then start, applying pending changes (vzreboot)."""
    timeout = req.int("timeout", 60)

    def action(app: Any, node: str, vmid: int, log: Log) -> None:
        app.backend.shutdown(vmid, timeout, log)
        _start(app, node, vmid, log)

    return _power(req, "vzreboot", True, action)


@route("GET", "/nodes/{node}/lxc/{vmid}/interfaces")
def interfaces(req: Request) -> list[dict[str, str]]:
    """Network interfaces seen inside the running container."""
    node, vmid = _vmid(req)
    store.load(req.app, node, vmid)
    if not store.is_running(req.app, vmid):
        raise ApiError(500, f"CT {vmid} is not running")
    return [_interface(i) for i in req.app.backend.interfaces(vmid)]


def _interface(entry: dict[str, str]) -> dict[str, Any]:
    """Add PVE 8+'s `hardware-address` and `ip-addresses` next to hwaddr/inet/inet6."""
    out: dict[str, Any] = dict(entry)
    out.setdefault("hardware-address", entry.get("hwaddr", ""))
    addresses = []
    for family, key in (("ipv4", "inet"), ("ipv6", "inet6")):
        if entry.get(key):
            address, _, prefix = entry[key].partition("/")
            addresses.append({"ip-address": address, "ip-address-type": family,
                              "prefix": int(prefix) if prefix.isdigit() else 0})
    out.setdefault("ip-addresses", addresses)
    return out
