"""/cluster/ha/groups (PVE 8; refused once migrated in PVE 9) and /cluster/ha/status/* (API2/HA/Status.pm)."""

from __future__ import annotations

import time
from typing import Any

from pvesim.ha_config import HaFiles, groups_migrated, parse_nodes, split_list
from pvesim.handlers_ha import pve_major
from pvesim.server import ApiError, Request, route

GROUP_OPTIONS = ("nodes", "restricted", "nofailback", "comment")


def _files(req: Request) -> HaFiles:
    return HaFiles(req.app.state.root)


def _refuse_if_migrated(req: Request, what: str) -> None:
    """API2/HA/Groups.pm (PVE 9): every call dies once no group is left (a fresh cluster has none)."""
    if pve_major(req.app) >= 9 and groups_migrated(_files(req).read("groups")):
        raise ApiError(500, f"cannot {what}: ha groups have been migrated to rules")


def _group_out(req: Request, name: str) -> dict[str, Any]:
    cfg = _files(req).read("groups")
    if name not in cfg.ids:
        raise ApiError(500, f"no such ha group '{name}'")
    return {**cfg.ids[name], "group": name, "digest": cfg.digest}


@route("GET", "/cluster/ha/groups")
def groups_index(req: Request) -> list[dict[str, Any]]:
    """HA groups (PVE 8)."""
    _refuse_if_migrated(req, "index groups")
    return [_group_out(req, g) for g in _files(req).read("groups").ids]


@route("GET", "/cluster/ha/groups/{group}")
def group_read(req: Request) -> dict[str, Any]:
    """One HA group."""
    _refuse_if_migrated(req, "read group")
    return _group_out(req, req.params["group"])


def _check_nodes(req: Request, text: str) -> None:
    unknown = sorted(n for n in parse_nodes(text) if n not in req.app.nodes)
    if unknown:
        raise ApiError(400, "Parameter verification failed.", {"nodes": f"unknown node '{unknown[0]}'"})


@route("POST", "/cluster/ha/groups")
def group_create(req: Request) -> None:
    """Create an HA group (PVE 8)."""
    _refuse_if_migrated(req, "create group")
    name = req.params["group"]
    _check_nodes(req, req.params["nodes"])
    files = _files(req)
    with files.locked():
        cfg = files.read("groups")
        if name in cfg.ids:
            raise ApiError(500, f"ha group ID '{name}' already defined")
        cfg.ids[name] = {"type": "group", **{k: req.params[k] for k in GROUP_OPTIONS if k in req.params}}
        files.write("groups", cfg)


@route("PUT", "/cluster/ha/groups/{group}")
def group_update(req: Request) -> None:
    """Update an HA group."""
    _refuse_if_migrated(req, "update group")
    name = req.params["group"]
    if "nodes" in req.params:
        _check_nodes(req, req.params["nodes"])
    files = _files(req)
    with files.locked():
        cfg = files.read("groups")
        if req.params.get("digest") and req.params["digest"] != cfg.digest:
            raise ApiError(500, "detected modified configuration - file changed by other user? Try again.")
        if name not in cfg.ids:
            raise ApiError(500, f"no such ha group '{name}'")
        cfg.ids[name].update({k: req.params[k] for k in GROUP_OPTIONS if k in req.params})
        for key in split_list(req.params.get("delete", "")):
            if key not in GROUP_OPTIONS:
                raise ApiError(500, f"no such option '{key}'")
            if key == "nodes":
                raise ApiError(500, "unable to delete required option 'nodes'")
            cfg.ids[name].pop(key, None)
        files.write("groups", cfg)


@route("DELETE", "/cluster/ha/groups/{group}")
def group_delete(req: Request) -> None:
    """Delete an HA group unless a resource uses it."""
    _refuse_if_migrated(req, "delete group")
    name = req.params["group"]
    files = _files(req)
    with files.locked():
        cfg = files.read("groups")
        if name not in cfg.ids:
            raise ApiError(500, f"no such ha group '{name}'")
        for sid, res in files.read("resources").ids.items():
            if res.get("group") == name:
                raise ApiError(500, f"ha group is used by service '{sid}'")
        del cfg.ids[name]
        files.write("groups", cfg)


# --- status ------------------------------------------------------------------------------------

@route("GET", "/cluster/ha/status")
def status_index(req: Request) -> list[dict[str, str]]:
    """Directory index."""
    return [{"name": n} for n in ("current", "manager_status")]


def _crm_word(now: float, stamp: float) -> str:
    """Status.pm timestamp_to_status."""
    if now - stamp > 30:
        return "old timestamp - dead?"
    return "detected time drift!" if now - stamp < -2 else "active"


@route("GET", "/cluster/ha/status/current")
def status_current(req: Request) -> list[dict[str, Any]]:
    """quorum, master, fencing, one lrm entry per node, one service entry per HA resource."""
    files, now, me = _files(req), time.time(), req.app.nodes[0]
    ms = files.manager_status()
    resources = files.read("resources").ids
    out: list[dict[str, Any]] = [{"id": "quorum", "type": "quorum", "node": me, "status": "OK", "quorate": 1}]
    active = False
    if "master_node" in ms and "timestamp" in ms:
        word = _crm_word(now, ms["timestamp"])
        active = word == "active"
        word = "idle" if not active and not resources else word
        out.append({"id": "master", "type": "master", "node": ms["master_node"], "timestamp": ms["timestamp"],
                    "status": f"{ms['master_node']} ({word}, {time.ctime(ms['timestamp'])})"})
    armed = "armed" if active else "standby"
    out.append({"id": "fencing", "type": "fencing", "node": ms.get("master_node", me), "armed-state": armed,
                "status": f"{armed} (CRM watchdog {'active' if active else 'standby'})"})
    services = ms.get("service_status", {})
    for node, state in sorted(ms.get("node_status", {}).items()):
        count = sum(1 for s in services.values() if s.get("node") == node)
        word = "active" if count else "idle"
        if state != "online":
            out.append({"id": f"lrm:{node}", "type": "lrm", "node": node,
                        "status": f"{node} (old timestamp - dead?, watchdog standby)"})
            continue
        out.append({"id": f"lrm:{node}", "type": "lrm", "node": node, "timestamp": ms["timestamp"],
                    "status": f"{node} ({word}, watchdog {'active' if count else 'standby'}, "
                              f"{time.ctime(ms['timestamp'])})"})
    for sid in sorted(set(services) | set(resources)):
        ss, sc = services.get(sid), resources.get(sid)
        entry: dict[str, Any] = {"id": f"service:{sid}", "type": "service", "sid": sid}
        if ss:
            entry.update(node=ss.get("node"), crm_state=ss.get("state"))
        state = (ss or {}).get("state") or "queued"
        entry["state"] = state
        entry["status"] = f"{sid} ({entry.get('node') or '---'}, {state})"
        if sc:
            entry["request_state"] = sc.get("state", "started")
            for key in ("group", "max_restart", "max_relocate", "failback", "comment"):
                if key in sc:
                    entry[key] = int(sc[key]) if key != "group" and key != "comment" else sc[key]
        out.append(entry)
    return out


@route("GET", "/cluster/ha/status/manager_status")
def manager_status(req: Request) -> dict[str, Any]:
    """The CRM's manager status as it writes it, plus the HA-relevant view of the nodes."""
    ms = _files(req).manager_status()
    return {"manager_status": {k: v for k, v in ms.items() if k != "log"},
            "quorum": {"node": req.app.nodes[0], "quorate": "1"},
            "lrm_status": {n: {"mode": "active", "state": "active" if s == "online" else "lost_agent_lock",
                               "timestamp": ms.get("timestamp")}
                           for n, s in ms.get("node_status", {}).items()}}
