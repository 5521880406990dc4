"""`POST /nodes/{node}/lxc` with `restore=1`: a container made from a vzdump archive (a `vzrestore`
task), in the order pve-container's API2/LXC.pm create_vm takes it: vmid unused (or `force=1` over
a stopped container of this node), permissions, the archive's access, storage checks and the
config locked with `lock: create`; in the task the backed-up config recovered, the rootfs unpacked
by the backend, backed-up and given configuration merged, the firewall config put back.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from pvesim import acl, ctperm, dumptar, vzdump, vzrestore
from pvesim import handlers_lxcstore as store
from pvesim.acl import PermissionDenied
from pvesim.backend import Log
from pvesim.handlers_lxc import NOT_CONFIG, _discard, _mac, normalize_net, normalize_volume
from pvesim.handlers_storage import STORAGES
from pvesim.handlers_vzdump import backup_path, check_backup_access
from pvesim.pveconf import PveConf, Section
from pvesim.server import ApiError, Request


def _check_existing(req: Request, node: str, vmid: int, force: bool) -> bool:
    """check_vmid_unused, or with force: a stopped, unprotected container of this node. True if one exists."""
    other = store.locate(req.app, vmid)
    if other is None:
        return False
    if not (force and other == node):
        raise ApiError(500, f"CT {vmid} already exists on node '{other}'")
    if store.is_running(req.app, vmid):
        raise ApiError(500, "can't overwrite running container")
    conf, _ = store.load(req.app, node, vmid)
    if conf.main.values.get("protection") == "1":
        raise ApiError(500, f"unable to restore CT {vmid} - protection mode enabled")
    return True


def _check_permissions(req: Request, vmid: int, exists: bool, force: bool, pool: str | None,
                       options: dict[str, str], unprivileged: bool | None) -> bool:
    """VM.Allocate on the vmid or pool, or VM.Backup to restore over an existing one (then its
    firewall config is not taken from the archive). Returns whether to skip the firewall config."""
    cfg, me = req.cfg(), req.identity.name
    if pool and pool not in cfg.pools:
        raise PermissionDenied(f"pool '{pool}' does not exist")
    skip_fw = False
    if acl.check(cfg, me, f"/vms/{vmid}", ["VM.Allocate"], noerr=True) or (
            pool and acl.check(cfg, me, f"/pool/{pool}", ["VM.Allocate"], noerr=True)):
        pass
    elif force and exists and acl.check(cfg, me, f"/vms/{vmid}", ["VM.Backup"], noerr=True):
        skip_fw = True
        conf, _ = store.load(req.app, req.node(), vmid)
        if conf.main.values.get("unprivileged") == "1" and unprivileged is False:
            acl.check(cfg, me, "/", ["Sys.Modify"])
    else:
        raise PermissionDenied()
    ctperm.check_modify(cfg, me, vmid, pool, None, options, [], bool(unprivileged))
    return skip_fw


def restore(req: Request) -> str:
    """The restore branch of create_vm; returns the UPID of the vzrestore task."""
    app, node, vmid = req.app, req.node(), req.int("vmid")
    force, unique, start = req.flag("force"), req.flag("unique"), req.flag("start")
    unprivileged = None if "unprivileged" not in req.params else req.flag("unprivileged")
    pool, volid = req.params.get("pool"), req.params["ostemplate"]
    exists = _check_existing(req, node, vmid, force)
    options = {k: v for k, v in req.params.items() if k not in NOT_CONFIG and k != "unprivileged"}
    skip_fw = _check_permissions(req, vmid, exists, force, pool, options, unprivileged)
    sid, _, volname = volid.partition(":")
    if sid in STORAGES and not volname.startswith("backup/"):
        raise ApiError(500, f"unable to use volume {volid} - content type needs to be 'backup'")
    archive = backup_path(req, volid, sid)
    info = vzrestore_owner(archive)
    check_backup_access(req, sid, info, vmid)
    storage = req.params.get("storage", "local")
    rootfs = options.pop("rootfs", None)
    for used in {rootfs.partition(":")[0] if rootfs else storage}:
        if used not in STORAGES or "rootdir" not in STORAGES[used]["content"].split(","):
            raise ApiError(400, "Parameter verification failed.",
                           {"storage": f"storage '{used}' does not support container directories"})
        req.check(f"/storage/{used}", "Datastore.AllocateSpace")
    given = {k: (normalize_net(v) if re.fullmatch(r"net\d+", k) else v)
             for k, v in options.items() if k != "description" and not re.fullmatch(r"(mp|unused)\d+", k)}
    description = options.get("description")
    with app.conf_lock:
        if exists:
            current, _ = store.load(app, node, vmid)
            store.check_lock(current)
        else:
            current = PveConf()
        current.main.values["lock"] = "create"
        store.save(app, node, vmid, current)
    state = {"made": False}

    def work(log: Log) -> None:
        log(f"recovering backed-up configuration from '{volid}'")
        text = dumptar.read_member(archive, dumptar.CONF_MEMBER)
        if text is None:
            raise ApiError(500, "ERROR: archive contains no configuration file")
        backup = vzrestore.parse_backup_conf(text)
        me = req.identity.name
        for key, value in backup.main.values.items():
            if re.fullmatch(r"net\d+", key) and key not in given:
                ctperm.check_bridge(req.cfg(), me, value)
        backed_up = backup.main.values.get("unprivileged") == "1"
        privileged = unprivileged is False or (unprivileged is None and not backed_up)
        if privileged and (not exists or current.main.values.get("unprivileged") == "1"):
            acl.check(req.cfg(), me, "/", ["Sys.Modify"])
        try:
            volume = rootfs or vzrestore.rootfs_from_backup(backup, storage)
        except ValueError as e:
            raise ApiError(500, str(e)) from None
        state["made"] = True
        values = dict(given)
        values["rootfs"], _ = normalize_volume(volume, vmid)
        if not privileged:
            values["unprivileged"] = "1"
        if exists and app.backend.exists(vmid):
            app.backend.destroy(vmid, log)
        merged = vzrestore.merge(values, description, backup, me != acl.ROOT, unique, _mac)
        merged.values.setdefault("hostname", f"CT{vmid}")
        merged.values.setdefault("memory", "512")
        merged.values.setdefault("swap", "512")
        log(f"restoring '{volid}' now..")
        app.backend.restore(vmid, {**merged.values, "description": merged.description}, archive, log)
        log("merging backed-up and given configuration..")
        for warning in merged.warnings:
            log(f"WARN: {warning}" if "\n" not in warning else warning)
        _firewall(req, archive, vmid, skip_fw, log)
        with app.conf_lock:
            store.save(app, node, vmid, PveConf(main=Section(merged.values, merged.description)))
        if pool:
            app.acl.update(lambda cfg: cfg.pools[pool].vms.add(vmid) if pool in cfg.pools else None)
        if start:
            app.backend.start(vmid, log)

    def finalize(log: Log, ok: bool) -> None:
        if ok:
            return
        if state["made"] or not exists:
            _discard(req, node, vmid, log)
            if not skip_fw:
                app.state.vm_firewall(vmid).unlink(missing_ok=True)
        else:
            with app.conf_lock:
                conf, _ = store.load(app, node, vmid)
                conf.main.values.pop("lock", None)
                store.save(app, node, vmid, conf)

    return app.tasks.start(node, "vzrestore", str(vmid), req.identity.name, _prefixed(vmid, work),
                           vmid=vmid, finalize=finalize)


def _prefixed(vmid: int, work: Callable[[Log], None]) -> Callable[[Log], None]:
    """create_vm's `unable to restore CT <vmid> - <error>` around the worker's failure."""
    def run(log: Log) -> None:
        try:
            work(log)
        except Exception as e:  # the task's error text, as PVE words it
            raise RestoreError(f"unable to restore CT {vmid} - {str(e).strip() or type(e).__name__}") from e
    return run


class RestoreError(Exception):
    """The vzrestore task's error."""


def vzrestore_owner(archive: Path) -> int | None:
    """The vmid in a backup's file name (the guest it was taken of)."""
    info = vzdump.archive_info(archive.name)
    return info.vmid if info else None


def _firewall(req: Request, archive: Path, vmid: int, skip: bool, log: Log) -> None:
    """restore_configuration_from_etc_vzdump: a non-empty pct.fw becomes <vmid>.fw unless skipped."""
    text = dumptar.read_member(archive, dumptar.FW_MEMBER)
    if not text:
        return
    target = req.app.state.vm_firewall(vmid)
    if skip:
        log(f"ignoring firewall config from backup archive's '{dumptar.FW_MEMBER}', lacking API permission "
            "to modify firewall.")
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    from pvesim.handlers_firewall import sync

    sync(req.app)
