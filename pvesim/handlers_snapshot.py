"""Snapshots ([name] sections in the PVE config, rootfs copies by the backend) and disk resize."""

from __future__ import annotations

from typing import Any

from pvesim import handlers_lxcstore as store
from pvesim import pveconf
from pvesim.backend import Log
from pvesim.pveconf import Section
from pvesim.server import ApiError, App, Request, route


def _target(req: Request) -> tuple[App, str, int]:
    node = req.node()
    return req.app, node, req.int("vmid")


def _snapshot(conf: pveconf.PveConf, name: str) -> Section:
    snap = conf.snapshots.get(name)
    if snap is None:
        raise ApiError(500, f"snapshot '{name}' does not exist")
    return snap


def _locked_task(req: Request, kind: str, lock: str, work: Any) -> str:
    """Set the config lock, run `work(log)` in a task, clear the lock whatever happens."""
    app, node, vmid = _target(req)
    with app.conf_lock:
        conf, _ = store.load(app, node, vmid)
        store.check_lock(conf)
        conf.main.values["lock"] = lock
        store.save(app, node, vmid, conf)

    def unlock(log: Log, ok: bool) -> None:
        with app.conf_lock:
            current, _ = store.load(app, node, vmid)
            current.main.values.pop("lock", None)
            store.save(app, node, vmid, current)

    return app.tasks.start(node, kind, str(vmid), req.identity.name, work, vmid=vmid, finalize=unlock)


@route("GET", "/nodes/{node}/lxc/{vmid}/snapshot")
def snapshot_list(req: Request) -> list[dict[str, Any]]:
    """Snapshots plus the `current` entry (\"You are here!\"), as PVE lists them."""
    app, node, vmid = _target(req)
    conf, digest = store.load(app, node, vmid)
    out: list[dict[str, Any]] = []
    for name, snap in conf.snapshots.items():
        entry: dict[str, Any] = {"name": name, "description": snap.description,
                                 "snaptime": int(snap.values.get("snaptime", 0))}
        if "parent" in snap.values:
            entry["parent"] = snap.values["parent"]
        out.append(entry)
    current: dict[str, Any] = {"name": "current", "description": "You are here!", "digest": digest,
                               "running": int(store.is_running(app, vmid))}
    if "parent" in conf.main.values:
        current["parent"] = conf.main.values["parent"]
    out.append(current)
    return out


@route("POST", "/nodes/{node}/lxc/{vmid}/snapshot")
def snapshot_create(req: Request) -> str:
    """Take a snapshot (vzsnapshot): rootfs copied by the backend, config saved as [name]."""
    app, node, vmid = _target(req)
    name = req.params["snapname"]
    description = req.params.get("description", "")

    if name.lower() in ("current", "pending"):
        raise ApiError(500, f"unable to use snapshot name '{name}' (reserved name)")

    def work(log: Log) -> None:
        take(app, node, vmid, name, description, log)

    return _locked_task(req, "vzsnapshot", "snapshot", work)


def take(app: App, node: str, vmid: int, name: str, description: str, log: Log) -> None:
    """AbstractConfig snapshot_create's work: the rootfs copied, the config saved as [name]."""
    with app.conf_lock:
        if name in store.load(app, node, vmid)[0].snapshots:  # checked in the worker, as PVE does
            raise ApiError(500, f"snapshot name '{name}' already used")
    app.backend.snapshot(vmid, name, log)
    with app.conf_lock:
        conf, _ = store.load(app, node, vmid)
        values = {k: v for k, v in conf.main.values.items() if k != "lock"}
        values["snaptime"] = str(store.now())
        conf.snapshots[name] = Section(values, description)
        conf.main.values["parent"] = name
        store.save(app, node, vmid, conf)


@route("GET", "/nodes/{node}/lxc/{vmid}/snapshot/{snapname}")
def snapshot_index(req: Request) -> list[dict[str, str]]:
    """Directory index of a snapshot."""
    app, node, vmid = _target(req)
    conf, _ = store.load(app, node, vmid)
    _snapshot(conf, req.params["snapname"])
    return [{"rel": "child", "href": "rollback"}, {"rel": "child", "href": "config"}]


@route("GET", "/nodes/{node}/lxc/{vmid}/snapshot/{snapname}/config")
def snapshot_config(req: Request) -> dict[str, Any]:
    """The config saved with a snapshot."""
    app, node, vmid = _target(req)
    conf, _ = store.load(app, node, vmid)
    snap = _snapshot(conf, req.params["snapname"])
    out: dict[str, Any] = snap.as_dict()
    if "snaptime" in out:
        out["snaptime"] = int(out["snaptime"])
    return out


@route("PUT", "/nodes/{node}/lxc/{vmid}/snapshot/{snapname}/config")
def snapshot_config_put(req: Request) -> None:
    """Change a snapshot's description (the only thing PVE lets change)."""
    app, node, vmid = _target(req)
    with app.conf_lock:
        conf, _ = store.load(app, node, vmid)
        snap = _snapshot(conf, req.params["snapname"])
        if "description" in req.params:
            snap.description = req.params["description"]
        store.save(app, node, vmid, conf)


@route("DELETE", "/nodes/{node}/lxc/{vmid}/snapshot/{snapname}")
def snapshot_delete(req: Request) -> str:
    """Delete a snapshot (vzdelsnapshot); children and `current` take over its parent."""
    app, node, vmid = _target(req)
    name = req.params["snapname"]

    def work(log: Log) -> None:
        drop(app, node, vmid, name, log)

    return _locked_task(req, "vzdelsnapshot", "snapshot-delete", work)


def drop(app: App, node: str, vmid: int, name: str, log: Log) -> None:
    """AbstractConfig snapshot_delete's work: the copy removed; children and `current` inherit its parent."""
    with app.conf_lock:
        _snapshot(store.load(app, node, vmid)[0], name)
    app.backend.delete_snapshot(vmid, name, log)
    with app.conf_lock:
        conf, _ = store.load(app, node, vmid)
        snap = conf.snapshots.pop(name, None)
        parent = snap.values.get("parent") if snap else None
        for section in [conf.main, *conf.snapshots.values()]:
            if section.values.get("parent") == name:
                if parent:
                    section.values["parent"] = parent
                else:
                    section.values.pop("parent", None)
        store.save(app, node, vmid, conf)


@route("POST", "/nodes/{node}/lxc/{vmid}/snapshot/{snapname}/rollback")
def snapshot_rollback(req: Request) -> str:
    """Roll back (vzrollback): rootfs restored by the backend, config taken from the snapshot."""
    app, node, vmid = _target(req)
    name = req.params["snapname"]
    start = req.flag("start")

    def work(log: Log) -> None:
        with app.conf_lock:
            _snapshot(store.load(app, node, vmid)[0], name)
        app.backend.rollback(vmid, name, log)
        with app.conf_lock:
            conf, _ = store.load(app, node, vmid)
            snap = _snapshot(conf, name)
            values = {k: v for k, v in snap.values.items() if k != "snaptime"}
            values["parent"] = name
            values["lock"] = "rollback"
            conf.main = Section(values, conf.main.description)  # PVE keeps the current description
            conf.pending, conf.pending_delete = {}, []
            store.save(app, node, vmid, conf)
        backend_values = {k: v for k, v in values.items() if k != "lock"}
        app.backend.update(vmid, backend_values, log)
        if start:
            app.backend.start(vmid, log)

    return _locked_task(req, "vzrollback", "rollback", work)


@route("PUT", "/nodes/{node}/lxc/{vmid}/resize")
def resize(req: Request) -> str:
    """Grow rootfs or mp[n] (`+2G` or an absolute size); shrinking is refused like PVE."""
    app, node, vmid = _target(req)
    disk, size = req.params["disk"], req.params["size"]
    with app.conf_lock:
        conf, digest = store.load(app, node, vmid)
        if "digest" in req.params and not digest.startswith(req.params["digest"]):
            raise ApiError(500, "detected modified configuration - file changed by other user? Try again.")
        store.check_lock(conf)
        if disk not in conf.main.values:
            raise ApiError(500, f"no such disk '{disk}'")
        props = pveconf.parse_property_string(conf.main.values[disk], "volume")
    current = pveconf.parse_size(props.get("size", "0")) or 0
    delta = pveconf.parse_size(size.lstrip("+"))
    if delta is None:
        raise ApiError(400, "Parameter verification failed.", {"size": "unable to parse size"})
    new = current + delta if size.startswith("+") else delta
    if new < current:
        raise ApiError(500, "unable to shrink disk size")

    def work(log: Log) -> None:
        app.backend.resize(vmid, disk, new, log)
        with app.conf_lock:
            conf, _ = store.load(app, node, vmid)
            p = pveconf.parse_property_string(conf.main.values[disk], "volume")
            p["size"] = pveconf.format_size(new)
            conf.main.values[disk] = pveconf.print_property_string(p, "volume")
            store.save(app, node, vmid, conf)

    return app.tasks.start(node, "resize", str(vmid), req.identity.name, work, vmid=vmid)
