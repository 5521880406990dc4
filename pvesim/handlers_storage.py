"""Storage endpoints (`local` for templates, `local-lvm` for container volumes) and aplinfo downloads."""

from __future__ import annotations

import shutil
from typing import Any

from pvesim import backups, pveconf
from pvesim import handlers_lxcstore as store
from pvesim.server import ApiError, Request, route

STORAGES: dict[str, dict[str, Any]] = {
    "local": {"type": "dir", "content": "vztmpl,iso,backup", "path": "/var/lib/vz"},
    "local-lvm": {"type": "lvmthin", "content": "rootdir,images", "thinpool": "data", "vgname": "pve"},
}
DEFAULT_LVM_SIZE = 200 * 1024**3


def _lvm_used(req: Request) -> int:
    """Bytes allocated to rootdir volumes on local-lvm (sum of their configured sizes)."""
    total = 0
    for node in req.app.nodes:
        for vmid in store.vmids(req.app, node):
            for vol in store.volumes(req.app, node, vmid):
                total += vol["size"]
    return total


def storage_entry(req: Request, node: str, name: str) -> dict[str, Any]:
    """One storage with its usage: `local` is the state dir's filesystem, `local-lvm` as configured."""
    spec = STORAGES[name]
    if name == "local":
        du = shutil.disk_usage(req.app.state.root if req.app.state.root.exists() else "/")
        total, used = du.total, du.used
    else:
        total = int(req.app.settings.get("local_lvm_size", DEFAULT_LVM_SIZE))
        used = _lvm_used(req)
    return {"storage": name, "type": spec["type"], "content": spec["content"], "active": 1, "enabled": 1,
            "shared": 0, "total": total, "used": used, "avail": max(total - used, 0),
            "used_fraction": round(used / total, 6) if total else 0}


def _storage(req: Request) -> str:
    name = req.params["storage"]
    if name not in STORAGES:
        raise ApiError(500, f"storage '{name}' does not exist")
    return name


@route("GET", "/nodes/{node}/storage")
def storage_list(req: Request) -> list[dict[str, Any]]:
    """Storages of a node; `content` and `storage` filter."""
    node = req.node()
    want = set(filter(None, req.params.get("content", "").split(",")))
    out = []
    for name in STORAGES:
        if req.params.get("storage") not in (None, name):
            continue
        # pve-storage API2/Storage/Status.pm index: only storages with Datastore.Audit|AllocateSpace
        if not req.allowed(f"/storage/{name}", "Datastore.Audit", "Datastore.AllocateSpace", any_=True):
            continue
        if want and not want & set(STORAGES[name]["content"].split(",")):
            continue
        out.append(storage_entry(req, node, name))
    return out


@route("GET", "/nodes/{node}/storage/{storage}")
def storage_index(req: Request) -> list[dict[str, str]]:
    """Directory index of a storage."""
    req.node()
    _storage(req)
    return [{"subdir": s} for s in ("content", "status")]


@route("GET", "/nodes/{node}/storage/{storage}/status")
def storage_status(req: Request) -> dict[str, Any]:
    """Usage of one storage."""
    node = req.node()
    entry = storage_entry(req, node, _storage(req))
    entry.pop("storage")
    return entry


@route("GET", "/nodes/{node}/storage/{storage}/content")
def storage_content(req: Request) -> list[dict[str, Any]]:
    """vztmpl files and backups on `local`, container volumes (of this node) on `local-lvm`."""
    from pvesim import templates  # imported late: debootstrap and tar helpers

    node = req.node()
    name = _storage(req)
    content = req.params.get("content")
    out: list[dict[str, Any]] = []
    if name == "local" and content in (None, "vztmpl") and volume_access(req, name, None):
        for path in templates.cached(req.app.state):
            st = path.stat()
            out.append({"volid": f"local:vztmpl/{path.name}", "format": "tzst", "content": "vztmpl",
                        "size": st.st_size, "ctime": int(st.st_mtime)})
    if "backup" in STORAGES[name]["content"].split(",") and content in (None, "backup"):
        wanted = req.params.get("vmid")
        for path in backups.archives(req.app.state.backup_dir, int(wanted) if wanted else None):
            row = backups.entry(name, path)
            if backup_access(req, name, row.get("vmid")):
                out.append(row)
    if name == "local-lvm" and content in (None, "rootdir", "images"):
        for vmid in store.vmids(req.app, node):
            if req.params.get("vmid") not in (None, str(vmid)) or not volume_access(req, name, vmid):
                continue
            for vol in store.volumes(req.app, node, vmid):
                out.append({"volid": vol["volid"], "format": "raw", "content": "rootdir", "size": vol["size"],
                            "vmid": vmid, "ctime": vol["ctime"]})
    return out


def backup_access(req: Request, storage: str, owner: int | None) -> bool:
    """check_volume_access for a backup volume: Datastore.Allocate, else Datastore.AllocateSpace on the
    storage and VM.Backup on its guest."""
    if req.allowed(f"/storage/{storage}", "Datastore.Allocate"):
        return True
    return (owner is not None and req.allowed(f"/storage/{storage}", "Datastore.AllocateSpace")
            and req.allowed(f"/vms/{owner}", "VM.Backup"))


def volume_access(req: Request, storage: str, owner: int | None) -> bool:
    """pve-storage Storage.pm check_volume_access (as content listing uses it: failures hide the
    volume): Datastore.Allocate on the storage, else templates need Datastore.AllocateSpace or
    Datastore.Audit, a guest's volume Datastore.Audit plus VM.Config.Disk on /vms/<owner>."""
    if req.allowed(f"/storage/{storage}", "Datastore.Allocate"):
        return True
    if owner is None:
        return req.allowed(f"/storage/{storage}", "Datastore.AllocateSpace", "Datastore.Audit", any_=True)
    return req.allowed(f"/storage/{storage}", "Datastore.Audit") and req.allowed(f"/vms/{owner}",
                                                                                 "VM.Config.Disk")


# --- templates -------------------------------------------------------------------------------

@route("GET", "/nodes/{node}/aplinfo")
def aplinfo(req: Request) -> list[dict[str, str]]:
    """Templates available for download (built locally by `POST aplinfo`)."""
    from pvesim import templates

    req.node()
    return templates.available(req.app.state)


@route("POST", "/nodes/{node}/aplinfo")
def aplinfo_download(req: Request) -> str:
    """Download (= build once, then cache) a template into `local`; a `download` task."""
    from pvesim import templates

    node = req.node()
    storage = _storage(req)
    if "vztmpl" not in STORAGES[storage]["content"].split(","):
        raise ApiError(500, f"storage '{storage}' does not support templates")
    name = req.params["template"]
    known = {t["template"]: t for t in templates.available(req.app.state)}
    if name not in known:
        raise ApiError(400, "Parameter verification failed.", {"template": f"no such template '{name}'"})
    state = req.app.state

    def work(log: Any) -> None:
        log(f"starting template download from: {known[name].get('location', name)}")
        log(f"target file: {state.template_cache / name}")
        path = templates.build(state, name, log)
        log(f"download of '{known[name].get('location', name)}' to '{path}' finished")
        log(f"{pveconf.format_size(path.stat().st_size)} template ready")

    return req.app.tasks.start(node, "download", name, req.identity.name, work)
