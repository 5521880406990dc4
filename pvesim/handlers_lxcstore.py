"""Where containers are recorded: PVE configs per node, their volumes, and runtime status entries."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from typing import Any

from pvesim import pveconf
from pvesim.backend import BackendError, RuntimeStatus
from pvesim.ha_config import HaFiles
from pvesim.pveconf import PveConf
from pvesim.server import ApiError, App

MIB = 1024 * 1024


def vmids(app: App, node: str) -> list[int]:
    """Containers whose config lives on `node`."""
    d = app.state.node_dir(node) / "lxc"
    if not d.is_dir():
        return []
    return sorted(int(p.stem) for p in d.glob("*.conf") if p.stem.isdigit())


def locate(app: App, vmid: int) -> str | None:
    """The node that holds container `vmid`, or None."""
    for node in app.nodes:
        if app.state.lxc_conf(node, vmid).exists():
            return node
    return None


def load(app: App, node: str, vmid: int) -> tuple[PveConf, str]:
    """Config and digest; PVE's error when the container is not on this node."""
    path = app.state.lxc_conf(node, vmid)
    if not path.exists():
        raise ApiError(500, f"Configuration file 'nodes/{node}/lxc/{vmid}.conf' does not exist")
    return pveconf.read(path)


def save(app: App, node: str, vmid: int, conf: PveConf) -> str:
    """Write the config; returns the new digest."""
    return pveconf.write(app.state.lxc_conf(node, vmid), conf)


def check_lock(conf: PveConf) -> None:
    """PVE refuses most operations while a config lock is set (create, snapshot, rollback...)."""
    lock = conf.main.values.get("lock")
    if lock:
        raise ApiError(500, f"CT is locked ({lock})")


def effective(conf: PveConf) -> dict[str, str]:
    """The main section with pending changes applied (what GET config shows by default)."""
    values = conf.main.as_dict()
    for key in conf.pending_delete:
        values.pop(key, None)
    values.update(conf.pending)
    return values


def apply_pending(conf: PveConf) -> bool:
    """Move pending changes into the main section (done at start, as PVE does); True if any."""
    if not conf.pending and not conf.pending_delete:
        return False
    for key in conf.pending_delete:
        if key == "description":
            conf.main.description = ""
        conf.main.values.pop(key, None)
    for key, value in conf.pending.items():
        if key == "description":
            conf.main.description = value
        else:
            conf.main.values[key] = value
    conf.pending, conf.pending_delete = {}, []
    return True


def runtime(app: App, vmid: int) -> RuntimeStatus:
    """Runtime status from the backend; `stopped` when the backend does not know the container."""
    try:
        return app.backend.status(vmid)
    except BackendError:
        return RuntimeStatus(status="stopped")


def is_running(app: App, vmid: int) -> bool:
    """True when the container is running (False when the backend does not know it)."""
    try:
        return app.backend.is_running(vmid)
    except BackendError:
        return False


def rootfs_size(values: dict[str, str]) -> int:
    """Bytes of the rootfs volume from `size=` in the rootfs property string."""
    props = pveconf.parse_property_string(values.get("rootfs", ""), "volume")
    return pveconf.parse_size(props.get("size", "0")) or 0


def volumes(app: App, node: str, vmid: int) -> list[dict[str, Any]]:
    """Volumes on local-lvm owned by the container (rootfs and mp[n]), with configured sizes."""
    path = app.state.lxc_conf(node, vmid)
    try:
        conf, _ = pveconf.read(path)
        ctime = int(path.stat().st_mtime)
    except FileNotFoundError:
        return []
    out = []
    for key, value in sorted(conf.main.values.items()):
        if key == "rootfs" or (key.startswith("mp") and key[2:].isdigit()):
            props = pveconf.parse_property_string(value, "volume")
            volid = props.get("volume", "")
            if volid.startswith("local-lvm:"):
                out.append({"volid": volid, "size": pveconf.parse_size(props.get("size", "0")) or 0,
                            "ctime": ctime, "key": key})
    return out


def free_unreferenced_volumes(app: App, vmid: int, log: Callable[[str], None]) -> None:
    """Remove every volume of `vmid` left on local-lvm (vm-<vmid>-disk-<n>), named by a config or not."""
    for path in sorted(app.state.rootdir_storage.glob(f"vm-{vmid}-disk-*")):
        log(f"destroying unreferenced volume local-lvm:{path.name}")
        shutil.rmtree(path, ignore_errors=True)


def cpus(values: dict[str, str]) -> float:
    """The cores a container's CPU figures are a fraction of: its cores, else its cpulimit, else the
    host's (pve-container's vmstatus `cpus`, which pvestatd records as maxcpu)."""
    return float(values.get("cores", 0)) or float(values.get("cpulimit", 0)) or float(os.cpu_count() or 1)


def status_entry(app: App, node: str, vmid: int) -> dict[str, Any]:
    """What GET lxc and status/current share: status, limits, usage. `cpu` is the fraction of `cpus`
    in use since the previous reading (vmstatus: used time / elapsed time / cpus)."""
    conf, _ = load(app, node, vmid)
    values = conf.main.values
    rt = runtime(app, vmid)
    running = rt.status == "running"
    share = cpus(values)
    entry: dict[str, Any] = {
        "vmid": vmid, "name": values.get("hostname", f"CT{vmid}"), "type": "lxc", "status": rt.status,
        "cpus": share, "cpu": rt.cpu / share if running else 0,
        "maxmem": int(values.get("memory", "512")) * MIB, "mem": rt.mem if running else 0,
        "maxswap": int(values.get("swap", "512")) * MIB, "swap": rt.swap if running else 0,
        "maxdisk": rootfs_size(values), "disk": rt.disk if running else 0,
        "uptime": rt.uptime if running else 0, "netin": rt.netin, "netout": rt.netout,
        "diskread": 0, "diskwrite": 0, "template": 0,
        "ha": HaFiles(app.state.root).service_status(f"ct:{vmid}"),
    }
    if running and rt.pid:
        entry["pid"] = rt.pid
    if "tags" in values:
        entry["tags"] = values["tags"]
    if "lock" in values:
        entry["lock"] = values["lock"]
    return entry


def resource_entry(app: App, node: str, vmid: int) -> dict[str, Any]:
    """A /cluster/resources entry (type lxc) for a container on its node, as pve-manager's
    extract_vm_stats builds it: id, vmid, node and type from the vmlist, the rest from the line the
    sampler (pvestatd) broadcast at its last cycle, `status` unknown before the first; lock and tags
    from the config now."""
    from pvesim.rrd_sampler import sampler_for  # the sampler imports this module

    out: dict[str, Any] = {"id": f"lxc/{vmid}", "type": "lxc", "node": node, "vmid": vmid,
                           "status": "unknown"}
    out.update(sampler_for(app).broadcast(vmid))
    try:
        values = load(app, node, vmid)[0].main.values
    except (ApiError, FileNotFoundError):
        return out
    for key in ("tags", "lock"):
        if key in values:
            out[key] = values[key]
    return out


def now() -> int:
    """Epoch seconds (snaptime)."""
    return int(time.time())


def backend_values(conf: PveConf) -> dict[str, str]:
    """The main section as the backend sees it (description included, lock left out)."""
    values = {k: v for k, v in conf.main.values.items() if k != "lock"}
    if conf.main.description:
        values["description"] = conf.main.description
    return values
