"""Container endpoints: list, create, destroy, config (live vs pending), status and power."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from typing import Any

from pvesim import acl, ctperm, pveconf
from pvesim import handlers_lxcstore as store
from pvesim.acl import PermissionDenied
from pvesim.backend import Log
from pvesim.ha_config import HaFiles
from pvesim.handlers_firewall import forget as forget_firewall
from pvesim.handlers_ha import ha_request
from pvesim.handlers_storage import STORAGES
from pvesim.pveconf import PveConf
from pvesim.server import ApiError, App, Request, route

# Parameters of `pct create` that are actions or secrets, never config keys.
NOT_CONFIG = {"node", "vmid", "ostemplate", "password", "ssh-public-keys", "start", "storage", "force",
              "unique", "restore", "pool", "ignore-unpack-errors", "bwlimit", "ha-managed", "digest",
              "delete", "revert"}
PVE_OUI = "BC:24:11"  # Proxmox's default MAC prefix


def _vmid(req: Request) -> tuple[str, int]:
    node = req.node()
    return node, req.int("vmid")


def _mac() -> str:
    tail = secrets.token_bytes(3)
    return PVE_OUI + "".join(f":{b:02X}" for b in tail)


def normalize_net(value: str, old: str | None = None) -> str:
    """A net[n] value as PVE stores it: hwaddr kept or generated, type=veth, name first."""
    props = pveconf.parse_property_string(value)
    old_props = pveconf.parse_property_string(old) if old else {}
    props.setdefault("hwaddr", old_props.get("hwaddr") or _mac())
    props.setdefault("type", "veth")
    return pveconf.print_property_string(props, first=("name",))


def normalize_volume(value: str, vmid: int, index: int = 0) -> tuple[str, int]:
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
    node = req.node()
    return [store.status_entry(req.app, node, vmid) for vmid in store.vmids(req.app, node)
            if req.allowed(f"/vms/{vmid}", "VM.Audit")]


def _create_conf(req: Request, vmid: int, template: Any) -> PveConf:
    conf = PveConf()
    values: dict[str, str] = {"arch": "amd64", "ostype": _ostype(template.name), "memory": "512",
                              "swap": "512", "hostname": f"CT{vmid}"}
    for key, value in req.params.items():
        if key in NOT_CONFIG or key == "unprivileged":
            continue
        if key == "description":
            conf.main.description = value
        elif re.fullmatch(r"net\d+", key):
            values[key] = normalize_net(value)
        elif key == "rootfs" or re.fullmatch(r"mp\d+", key):
            index = 0 if key == "rootfs" else int(key[2:]) + 1
            values[key], _ = normalize_volume(value, vmid, index)
        else:
            values[key] = value
    if "rootfs" not in values:
        values["rootfs"], _ = normalize_volume(f"{req.params.get('storage', 'local')}:4", vmid)
    if req.params.get("unprivileged", "1") != "0":
        values["unprivileged"] = "1"  # API2/LXC.pm create_vm: `$conf->{unprivileged} = 1 if $unprivileged`
    values["lock"] = "create"
    conf.main.values = values
    return conf


@route("POST", "/nodes/{node}/lxc")
def lxc_create(req: Request) -> str:
    """`pct create`: config written with lock=create at once, the rootfs built in a vzcreate task."""
    app = req.app
    node, vmid = _vmid(req)
    if req.flag("restore"):
        from pvesim.handlers_vzrestore import restore  # imports this module

        return restore(req)
    unprivileged = req.params.get("unprivileged", "1") != "0"
    pool = req.params.get("pool")
    _check_create(req, vmid, unprivileged, pool)
    template = _template(req)
    with app.conf_lock:
        other = store.locate(app, vmid)
        if other is not None:
            raise ApiError(500, f"CT {vmid} already exists on node '{other}'")
        conf = _create_conf(req, vmid, template)
        store.save(app, node, vmid, conf)
    keys = req.params.get("ssh-public-keys")
    password = req.params.get("password")
    start = req.flag("start")

    def work(log: Log) -> None:
        app.backend.create(vmid, store.backend_values(conf), template, keys, log)
        set_password = getattr(app.backend, "set_password", None)
        if password and callable(set_password):
            set_password(vmid, password, log)
        with app.conf_lock:
            current, _ = store.load(app, node, vmid)
            current.main.values.pop("lock", None)
            store.save(app, node, vmid, current)
        if pool:
            app.acl.update(lambda cfg: cfg.pools[pool].vms.add(vmid) if pool in cfg.pools else None)
        if start:
            app.backend.start(vmid, log)

    def finalize(log: Log, ok: bool) -> None:
        if not ok:
            _discard(req, node, vmid, log)

    return app.tasks.start(node, "vzcreate", str(vmid), req.identity.name, work, vmid=vmid, finalize=finalize)


def _check_create(req: Request, vmid: int, unprivileged: bool, pool: str | None) -> None:
    """API2/LXC.pm create_vm, in its order: Sys.Modify on / for a privileged container, the pool,
    VM.Allocate on /vms/<vmid> or the pool, check_ct_modify_config_perm for the options given,
    the template (check_volume_access) and Datastore.AllocateSpace on each storage used."""
    cfg, me = req.cfg(), req.identity.name
    if not unprivileged:
        acl.check(cfg, me, "/", ["Sys.Modify"])
    if pool and pool not in cfg.pools:
        raise PermissionDenied(f"pool '{pool}' does not exist")
    if not (acl.check(cfg, me, f"/vms/{vmid}", ["VM.Allocate"], noerr=True)
            or (pool and acl.check(cfg, me, f"/pool/{pool}", ["VM.Allocate"], noerr=True))):
        raise PermissionDenied()
    options = {k: v for k, v in req.params.items() if k not in NOT_CONFIG and k != "unprivileged"}
    ctperm.check_modify(cfg, me, vmid, pool, None, options, [], unprivileged)
    storage, _, _ = req.params["ostemplate"].partition(":")
    if me != acl.ROOT and not acl.check(cfg, me, f"/storage/{storage}", ["Datastore.Allocate"], noerr=True):
        acl.check(cfg, me, f"/storage/{storage}", ["Datastore.AllocateSpace", "Datastore.Audit"], any_=True)
    volumes = [v for k, v in options.items() if k == "rootfs" or re.fullmatch(r"mp\d+", k)]
    used = {pveconf.parse_property_string(v, "volume")["volume"].partition(":")[0] for v in volumes}
    for sid in sorted(used or {req.params.get("storage", "local")}):
        acl.check(cfg, me, f"/storage/{sid}", ["Datastore.AllocateSpace"])


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
    """Destroy a container, a vzdestroy task, as pve-container API2/LXC.pm destroy_vm: refused while
    protected, locked, running (unless force=1) or an HA resource without purge=1. ACLs and the
    firewall always go; with purge the HA resource too (HA::Config delete_service_from_config, also
    from the rules). pvesim keeps no backup or replication jobs, the other configurations purge cleans.
    With destroy-unreferenced-disks every volume of the vmid on the storage goes too, also those no
    config names (LXC.pm destroy_lxc_container: vdisk_list of the vmid), e.g. what an interrupted
    destroy left."""
    app = req.app
    node, vmid = _vmid(req)
    force, purge = req.flag("force"), req.flag("purge")
    ha = HaFiles(app.state.root)
    sid = f"ct:{vmid}"

    def ha_check() -> bool:  # early_checks' HA part: before the task, and again in it
        managed = ha.configured(sid)
        if managed and not purge:
            raise ApiError(500, f"unable to remove CT {vmid} - used in HA resources and purge parameter "
                                "not set.")
        return managed

    with app.conf_lock:
        conf, _ = store.load(app, node, vmid)
        if conf.main.values.get("protection") == "1":  # AbstractConfig check_protection
            raise ApiError(500, f"can't remove CT {vmid} - protection mode enabled")
        store.check_lock(conf)
        ha_check()
        if store.is_running(app, vmid) and not force:
            raise ApiError(500, f"unable to destroy CT {vmid} - container is running")
        conf.main.values["lock"] = "destroyed"
        store.save(app, node, vmid, conf)

    def work(log: Log) -> None:
        ha_managed = ha_check()
        if force and store.is_running(app, vmid):
            log(f"forced to stop CT {vmid} before destroying!")
            if ha_managed:  # `ha-manager crm-command stop ct:ID 120`: the CRM's stop sets `stopped`
                ha.request_state(sid, "stopped")
            else:
                app.backend.stop(vmid, log)
        if app.backend.exists(vmid):
            app.backend.destroy(vmid, log)
        if req.flag("destroy-unreferenced-disks"):
            store.free_unreferenced_volumes(app, vmid, log)
        app.acl.update(lambda cfg: acl.remove_vm_access(cfg, vmid))  # AccessControl.pm remove_vm_access
        if app.state.vm_firewall(vmid).exists():
            forget_firewall(app, vmid)
        if purge:
            log(f"purging CT {vmid} from related configurations..")
            if ha_managed and ha.delete_service(sid, purge=True):
                log(f"NOTE: removed CT {vmid} from HA resource configuration.")
        app.state.lxc_conf(node, vmid).unlink(missing_ok=True)  # last, else the vmid could be reused

    def finalize(log: Log, ok: bool) -> None:
        if not ok:
            with app.conf_lock:
                current, _ = store.load(app, node, vmid)
                current.main.values.pop("lock", None)
                store.save(app, node, vmid, current)

    return app.tasks.start(node, "vzdestroy", str(vmid), req.identity.name, work, vmid=vmid,
                           finalize=finalize)


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


def _power(req: Request, kind: str, must_run: bool | None, action: Any,
           lock_check: str | None = "strict") -> str:
    """Common part of start/stop/shutdown/reboot as API2/LXC/Status.pm has them: the running state is
    checked before the task; the config lock inside it (vm_start/vm_stop tolerate `mounted`,
    vm_shutdown tolerates nothing, vm_reboot does not look), so a lock fails the task, not the call."""
    app = req.app
    node, vmid = _vmid(req)
    skiplock = req.flag("skiplock")
    if skiplock and req.identity.name != acl.ROOT:
        raise ApiError(400, "Parameter verification failed.", {"skiplock": "Only root may use this option."})
    with app.conf_lock:
        store.load(app, node, vmid)
        running = store.is_running(app, vmid)
        if must_run is True and not running:
            raise ApiError(500, f"CT {vmid} not running")
        if must_run is False and running:
            raise ApiError(500, f"CT {vmid} already running")

    def work(log: Log) -> None:
        if lock_check is not None and not skiplock:
            with app.conf_lock:
                conf, _ = store.load(app, node, vmid)
            if not (lock_check == "mounted" and conf.main.values.get("lock") == "mounted"):
                store.check_lock(conf)
        action(app, node, vmid, log)

    return app.tasks.start(node, kind, str(vmid), req.identity.name, work, vmid=vmid)


def _start(app: Any, node: str, vmid: int, log: Log) -> None:
    """Apply pending changes (as PVE does at start), write the guest's files as pve-container's
    pre-start hook does (hostname, hosts, network), start."""
    with app.conf_lock:
        conf, _ = store.load(app, node, vmid)
        if store.apply_pending(conf):
            store.save(app, node, vmid, conf)
    app.backend.update(vmid, store.backend_values(conf), log)
    app.backend.start(vmid, log)


start_container = _start  # the HA manager starts resources the same way


@route("POST", "/nodes/{node}/lxc/{vmid}/status/start")
def start(req: Request) -> str:
    """Start (vzstart); an HA resource's start is a request to the HA manager (hastart)."""
    return ha_request(req, "started") or _power(req, "vzstart", False, _start, lock_check="mounted")


@route("POST", "/nodes/{node}/lxc/{vmid}/status/stop")
def stop(req: Request) -> str:
    """Hard stop (vzstop); an HA resource's stop is a request to the HA manager (hastop)."""
    return ha_request(req, "stopped") or _power(
        req, "vzstop", True, lambda app, node, vmid, log: app.backend.stop(vmid, log), lock_check="mounted")


@route("POST", "/nodes/{node}/lxc/{vmid}/status/shutdown")
def shutdown(req: Request) -> str:
    """Clean shutdown with timeout (vzshutdown); for an HA resource a request (hastop)."""
    timeout = req.int("timeout", 60)
    return ha_request(req, "stopped") or _power(req, "vzshutdown", True,
                  lambda app, node, vmid, log: app.backend.shutdown(vmid, timeout, log))


@route("POST", "/nodes/{node}/lxc/{vmid}/status/reboot")
def reboot(req: Request) -> str:
    """Shutdown then start, applying pending changes (vzreboot)."""
    timeout = req.int("timeout", 60)

    def action(app: Any, node: str, vmid: int, log: Log) -> None:
        app.backend.shutdown(vmid, timeout, log)
        _start(app, node, vmid, log)

    return _power(req, "vzreboot", True, action, lock_check=None)


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


def _startup_order(values: dict[str, str]) -> int:
    """`startup: order=3,up=30` -> 3; containers without an order start last, as in PVE."""
    props = pveconf.parse_property_string(values.get("startup", ""), "order")
    order = props.get("order", "")
    return int(order) if order.isdigit() else 1 << 30


def start_onboot(app: App, only: list[str] | None = None, skip: set[int | None] | None = None) -> list[str]:
    """After a host boot, start every stopped container with onboot=1 in a `startall` task per node
    (`only` these nodes, `skip` these vmids: HA resources, which the HA manager starts)."""
    upids = []
    for node in only or app.nodes:
        todo = []
        for vmid in store.vmids(app, node):
            if skip and vmid in skip:
                continue
            values = store.load(app, node, vmid)[0].main.values
            if values.get("onboot") == "1" and "lock" not in values and not store.is_running(app, vmid):
                todo.append((_startup_order(values), vmid))
        if todo:
            upids.append(app.tasks.start(node, "startall", "", "root@pam",
                                         _start_all(app, node, [v for _, v in sorted(todo)])))
    return upids


def _start_all(app: App, node: str, vmids: list[int]) -> Callable[[Log], None]:
    """The worker of a startall task: start each in order; one failing does not keep the others down."""
    def work(log: Log) -> None:
        failed = []
        for vmid in vmids:
            log(f"Starting CT {vmid}")
            try:
                _start(app, node, vmid, log)
            except Exception as e:  # reported at the end, after the others were started
                log(f"Starting CT {vmid} failed: {e}")
                failed.append(vmid)
        if failed:
            raise RuntimeError(f"could not start CT {', '.join(map(str, failed))}")
    return work
