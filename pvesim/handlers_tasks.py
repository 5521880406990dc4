"""Task endpoints: list, status, log (start/limit/total), stop."""

from __future__ import annotations

from typing import Any

from pvesim.server import ApiError, Reply, Request, route
from pvesim.tasks import parse_upid


def _task(req: Request) -> dict[str, Any]:
    node = req.node()
    upid = req.params["upid"]
    try:
        parsed = parse_upid(upid)
    except ValueError as e:
        raise ApiError(400, "Parameter verification failed.", {"upid": str(e)}) from e
    rec = req.app.tasks.status(upid)
    if rec is None or parsed.node != node:
        raise ApiError(500, "no such task")
    return rec


def _entry(rec: dict[str, Any]) -> dict[str, Any]:
    """A task list entry: `status` is the exit status once stopped, absent while running."""
    out = {k: rec[k] for k in ("upid", "node", "pid", "pstart", "starttime", "type", "id", "user")}
    if rec["status"] == "stopped":
        out["endtime"] = rec.get("endtime", rec["starttime"])
        out["status"] = rec.get("exitstatus", "unknown")
    return out


@route("GET", "/nodes/{node}/tasks")
def task_list(req: Request) -> Reply:
    """Tasks of a node, newest first, with PVE's filters."""
    node = req.node()
    p = req.params
    recs = [r for r in req.app.tasks.all() if r["node"] == node]
    source = p.get("source", "archive")
    if source == "active":
        recs = [r for r in recs if r["status"] == "running"]
    elif source == "archive":
        recs = [r for r in recs if r["status"] == "stopped"]
    if "typefilter" in p:
        recs = [r for r in recs if r["type"] == p["typefilter"]]
    if "vmid" in p:  # API2/Tasks.pm: a task without id (vzdump of several guests) never matches
        recs = [r for r in recs if r["id"] and r["id"] == p["vmid"]]
    if not req.allowed(f"/nodes/{node}", "Sys.Audit"):  # else only the caller's own tasks
        me = req.identity.name
        recs = [r for r in recs if r["user"] == me or (req.identity.token is None and
                                                        r["user"].partition("!")[0] == me)]
    if "userfilter" in p:
        recs = [r for r in recs if p["userfilter"] in r["user"]]
    if "since" in p:
        recs = [r for r in recs if r["starttime"] >= int(p["since"])]
    if "until" in p:
        recs = [r for r in recs if r["starttime"] <= int(p["until"])]
    if p.get("errors") == "1":
        recs = [r for r in recs if r["status"] == "stopped" and r.get("exitstatus") != "OK"]
    if "statusfilter" in p:
        wanted = set(p["statusfilter"].split(","))
        recs = [r for r in recs if _status_class(r) in wanted]
    start, limit = int(p.get("start", 0)), int(p.get("limit", 50))
    page = [_entry(r) for r in recs[start:start + limit]]
    return Reply(page, {"total": len(recs)})


def _status_class(rec: dict[str, Any]) -> str:
    if rec["status"] == "running":
        return "active"
    status = str(rec.get("exitstatus", ""))
    if status == "OK":
        return "ok"
    return "warning" if status.startswith("WARNINGS") else "error"


@route("GET", "/nodes/{node}/tasks/{upid}")
def task_index(req: Request) -> list[dict[str, str]]:
    """Directory index of a task."""
    _task(req)
    return [{"name": "log"}, {"name": "status"}]


@route("GET", "/nodes/{node}/tasks/{upid}/status")
def task_status(req: Request) -> dict[str, Any]:
    """status running|stopped; exitstatus once stopped."""
    rec = _task(req)
    out = {k: rec[k] for k in ("upid", "node", "pid", "pstart", "starttime", "type", "id", "user", "status")}
    if rec["status"] == "stopped":
        out["exitstatus"] = rec.get("exitstatus", "unknown")
    return out


@route("GET", "/nodes/{node}/tasks/{upid}/log")
def task_log(req: Request) -> Reply:
    """Log lines [{n, t}] from `start` (0-based), at most `limit` (default 50); `total` in the envelope."""
    rec = _task(req)
    lines = req.app.tasks.log(rec["upid"])
    start = int(req.params.get("start", 0))
    limit = int(req.params.get("limit", 0)) or 50
    page = [{"n": i + 1, "t": t} for i, t in enumerate(lines) if start <= i < start + limit]
    if not lines and rec["status"] == "running":
        page = [{"n": 1, "t": "no content"}]
    return Reply(page, {"total": len(lines)})


@route("DELETE", "/nodes/{node}/tasks/{upid}")
def task_stop(req: Request) -> None:
    """Stop a task."""
    rec = _task(req)
    req.app.tasks.stop(rec["upid"])
