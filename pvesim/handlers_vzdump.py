"""Backups: `POST /nodes/{node}/vzdump` (a `vzdump` task, pve-manager API2/VZDump.pm), the config
inside an archive (`vzdump/extractconfig`), and the backup volumes of a storage (delete, notes and
protection, as pve-storage API2/Storage/Content.pm serves them). The listing is in handlers_storage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import unquote

from pvesim import acl, backups, dumptar, vzdump
from pvesim import handlers_lxcstore as store
from pvesim.backend import Log
from pvesim.handlers_storage import STORAGES
from pvesim.server import ApiError, Request, route
from pvesim.vzdump_job import Job, global_lock, storage_dir


def _param_error(errors: dict[str, str]) -> ApiError:
    return ApiError(400, "Parameter verification failed.", errors)


def _guests(req: Request, params: dict[str, str]) -> list[int]:
    """VZDump.pm get_included_guests: from pool, vmid list, or all (minus exclude)."""
    if params.get("pool"):
        pool = req.cfg().pools.get(params["pool"])
        return sorted(pool.vms) if pool else []
    if params.get("vmid"):
        return sorted({int(v) for v in acl.split_list(params["vmid"])})
    if params.get("all") == "1" or params.get("exclude"):
        excluded = {int(v) for v in acl.split_list(params.get("exclude", ""))}
        every = [vmid for node in req.app.nodes for vmid in store.vmids(req.app, node)]
        return sorted(set(every) - excluded)
    return []


def excludes(params: dict[str, str]) -> list[str]:
    """stdexcludes plus exclude-path (a \\0-separated list, or the comma-joined JSON array)."""
    from pvesim.vzdump_job import STD_EXCLUDES

    raw = params.get("exclude-path", "")
    given = [p for p in raw.split("\0" if "\0" in raw else ",") if p]
    return ([] if params.get("stdexcludes") == "0" else list(STD_EXCLUDES)) + given


@route("POST", "/nodes/{node}/vzdump")
def vzdump_post(req: Request) -> str:
    """Back up guests of this node into a storage: the checks PVE makes before forking, then the task."""
    app, node, me = req.app, req.node(), req.identity.name
    params = dict(req.params)
    try:
        vzdump.verify_parameters(params, me)
    except vzdump.ParamError as e:
        raise _param_error(e.errors) from None
    storage = None if "dumpdir" in params else params.get("storage") or "local"
    if me != acl.ROOT:
        if any(k in params for k in vzdump.SYS_MODIFY):
            req.check("/", "Sys.Modify")
        if "prune-backups" in params and storage:
            req.check(f"/storage/{storage}", "Datastore.Allocate")
    wanted = _guests(req, params)
    where = {vmid: store.locate(app, vmid) for vmid in wanted}
    local = [v for v, n in where.items() if n in (node, None)]  # unknown ids fail visibly in the job
    skipped = sorted(v for v, n in where.items() if n not in (node, None))
    if params.get("stop") == "1":
        req.check(f"/nodes/{node}", "Sys.Modify")
        if not local:
            return "OK"
    if not local and params.get("all") != "1":
        return "OK"  # the guests run on other nodes: PVE exits silently
    if storage:
        req.check(f"/storage/{storage}", "Datastore.AllocateSpace")
    cmdline = vzdump.command_line(params)

    def work(log: Log) -> None:
        if storage:
            dumpdir = storage_dir(app, storage)
        else:
            dumpdir = Path(params["dumpdir"].rstrip("/") or "/")
            if not dumpdir.is_dir():
                raise ApiError(500, f"dumpdir '{dumpdir}' does not exist")
        dumpdir.mkdir(parents=True, exist_ok=True)
        with global_lock(app, node, int(params.get("lockwait", "180")), log):
            log(f"INFO: starting new backup job: {cmdline}")
            if skipped:
                log(f"INFO: skip external VMs: {', '.join(map(str, skipped))}")
            Job(app, node, me, params, local, dumpdir, storage, excludes(params)).run(log)

    taskid = str(local[0]) if len(local) == 1 else ""
    return app.tasks.start(node, "vzdump", taskid, me, work)


# --- backup volumes ---------------------------------------------------------------------------

def _volume(req: Request) -> tuple[str, str]:
    """Content.pm real_volume_id: (volid, storage) from `volume` (its `/` sent as %2F) and the
    optional `storage`."""
    volume, storage = unquote(req.params["volume"]), req.params.get("storage")
    if ":" in volume:
        sid = volume.partition(":")[0]
        if storage and sid != storage:
            raise _param_error({"volume": f"storage ID mismatch ({sid} != {storage})"})
        return volume, sid
    if not storage:
        raise _param_error({"volume": "no storage specified - incomplete volume ID"})
    return f"{storage}:{volume}", storage


def backup_path(req: Request, volid: str, storage: str) -> Path:
    """The archive file of a backup volume on a storage that holds backups (PVE's errors otherwise)."""
    if storage not in STORAGES:
        raise ApiError(500, f"storage '{storage}' does not exist")
    if "backup" not in STORAGES[storage]["content"].split(",") or ":backup/" not in volid:
        raise ApiError(501, f"pvesim serves backup volumes only here, not '{volid}'")
    try:
        return backups.path_of(req.app.state.backup_dir, storage, volid)
    except backups.VolumeError as e:
        raise ApiError(500, str(e)) from None


def _owner(path: Path) -> int | None:
    info = vzdump.archive_info(path.name)
    return info.vmid if info else None


def check_backup_access(req: Request, storage: str, owner: int | None, vmid: int | None = None) -> None:
    """Storage.pm check_volume_access for a backup: Datastore.Allocate, or being its guest, or
    Datastore.AllocateSpace on the storage plus VM.Backup on the guest."""
    if req.allowed(f"/storage/{storage}", "Datastore.Allocate") or (owner is not None and owner == vmid):
        return
    if owner is None:
        raise ApiError(403, "Permission check failed")
    req.check(f"/storage/{storage}", "Datastore.AllocateSpace")
    req.check(f"/vms/{owner}", "VM.Backup")


@route("DELETE", "/nodes/{node}/storage/{storage}/content/{volume}")
def volume_delete(req: Request) -> str:
    """Delete a backup (an `imgdel` task): refused while protected; its .log and .notes go too."""
    node = req.node()
    volid, storage = _volume(req)
    path = backup_path(req, volid, storage)
    owner = _owner(path)
    check_backup_access(req, storage, owner)

    def work(log: Log) -> None:
        try:
            backups.remove(path)
        except backups.VolumeError as e:
            raise ApiError(500, str(e)) from None
        log(f"Removed volume '{volid}'")

    return req.app.tasks.start(node, "imgdel", f"{owner}@{storage}" if owner else storage,
                               req.identity.name, work)


@route("GET", "/nodes/{node}/storage/{storage}/content/{volume}")
def volume_get(req: Request) -> dict[str, Any]:
    """A backup's attributes: path, size, format, notes (all lines), protected."""
    req.node()
    volid, storage = _volume(req)
    path = backup_path(req, volid, storage)
    check_backup_access(req, storage, _owner(path))
    row = backups.entry(storage, path)
    notes = path.with_name(path.name + ".notes")
    out: dict[str, Any] = {"path": str(path), "size": row["size"], "used": row["size"],
                           "format": row["format"], "protected": row.get("protected", 0)}
    if notes.is_file():
        out["notes"] = notes.read_text()
    return out


@route("PUT", "/nodes/{node}/storage/{storage}/content/{volume}")
def volume_put(req: Request) -> None:
    """Set a backup's notes (empty removes them) or its protected flag."""
    req.node()
    volid, storage = _volume(req)
    path = backup_path(req, volid, storage)
    check_backup_access(req, storage, _owner(path))
    if "notes" in req.params:
        notes = path.with_name(path.name + ".notes")
        if req.params["notes"]:
            notes.write_text(req.params["notes"])
        else:
            notes.unlink(missing_ok=True)
    if "protected" in req.params:
        flag = path.with_name(path.name + ".protected")
        if req.flag("protected"):
            flag.touch()
        else:
            flag.unlink(missing_ok=True)


@route("GET", "/nodes/{node}/vzdump/extractconfig")
def extractconfig(req: Request) -> str:
    """The guest config stored in a backup archive (pct.conf as it was written)."""
    req.node()
    volid = req.params["volume"]
    storage = volid.partition(":")[0]
    path = backup_path(req, volid, storage)
    owner = _owner(path)
    if req.identity.name != acl.ROOT and owner is not None:
        req.check(f"/vms/{owner}", "VM.Backup")
        req.check(f"/storage/{storage}", "Datastore.AllocateSpace")
    try:
        text = dumptar.read_member(path, dumptar.CONF_MEMBER)
    except dumptar.TarError as e:
        raise ApiError(500, str(e)) from None
    if text is None:
        raise ApiError(500, "ERROR: archive contains no configuration file")
    return text
