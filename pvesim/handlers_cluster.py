"""Endpoints about the cluster, nodes, storage, templates and login (everything but containers/tasks)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from pvesim import acl
from pvesim import handlers_lxcstore as store
from pvesim.handlers_ha import pve_major
from pvesim.handlers_storage import STORAGES, storage_entry
from pvesim.server import ApiError, Request, route

VERSION = {"version": "9.2.0", "release": "9.2", "repoid": "pvesim"}
VERSION_8 = {"version": "8.4.1", "release": "8.4", "repoid": "pvesim"}  # `pvesim present-as 8`
_BOOT = time.time()


def _host_memory() -> tuple[int, int]:
    """(total, available) bytes from /proc/meminfo."""
    info = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        k, v = line.split(":", 1)
        info[k] = int(v.split()[0]) * 1024
    return info["MemTotal"], info.get("MemAvailable", info["MemFree"])


def check_node(req: Request) -> str:
    """The node named in the path (see Request.node)."""
    return req.node()


@route("POST", "/access/ticket")
def ticket(req: Request) -> dict[str, Any]:
    """Log in with a password (or renew with a ticket as password)."""
    epoch, lifetime = req.app.faults.ticket_policy()
    user = req.app.auth.login(req.params["username"], req.params["password"], req.params.get("realm"),
                              epoch, lifetime)
    return {
        "username": user,
        "ticket": req.app.auth.make_ticket(user, epoch=epoch),
        "CSRFPreventionToken": req.app.auth.make_csrf(user),
        "clustername": "pvesim",
        "cap": {"vms": {p: 1 for p in sorted(acl.permissions(req.cfg(), user, "/vms"))
                        if p.startswith("VM.") or p == "Permissions.Modify"}},
    }


@route("GET", "/version")
def version(req: Request) -> dict[str, str]:
    """PVE version info (PVE 8.4 after `pvesim present-as 8`)."""
    return dict(VERSION_8 if pve_major(req.app) < 9 else VERSION)


def _node_entry(req: Request, node: str) -> dict[str, Any]:
    if node in req.app.faults.nodes_down():  # what pvestatd last saw is gone: no figures
        return {"node": node, "status": "offline", "type": "node", "id": f"node/{node}", "level": ""}
    total, avail = _host_memory()
    disk = shutil.disk_usage(req.app.state.root if req.app.state.root.exists() else "/")
    return {
        "node": node, "status": "online", "type": "node", "id": f"node/{node}", "level": "",
        "cpu": round(os.getloadavg()[0] / (os.cpu_count() or 1), 4), "maxcpu": os.cpu_count() or 1,
        "mem": total - avail, "maxmem": total, "disk": disk.used, "maxdisk": disk.total,
        "uptime": int(time.time() - _BOOT), "ssl_fingerprint": "",
    }


@route("GET", "/nodes")
def nodes(req: Request) -> list[dict[str, Any]]:
    """Cluster nodes; a node taken down by `pvesim fault node-down` is offline."""
    return [_node_entry(req, n) for n in req.app.nodes]


@route("GET", "/nodes/{node}")
def node_index(req: Request) -> list[dict[str, str]]:
    """Directory index of a node."""
    req.node()
    return [{"name": n} for n in ("aplinfo", "lxc", "network", "status", "storage", "tasks", "version")]


@route("GET", "/nodes/{node}/version")
def node_version(req: Request) -> dict[str, str]:
    """PVE version of a node."""
    req.node()
    return dict(VERSION_8 if pve_major(req.app) < 9 else VERSION)


@route("GET", "/nodes/{node}/status")
def node_status(req: Request) -> dict[str, Any]:
    """Node status: the host's CPU, memory, disk and uptime (every node reports this machine)."""
    node = req.node()
    total, avail = _host_memory()
    disk = shutil.disk_usage("/")
    ncpu = os.cpu_count() or 1
    entry = _node_entry(req, node)
    return {
        "cpu": entry["cpu"], "wait": 0, "idle": 0, "uptime": entry["uptime"],
        "loadavg": [f"{x:.2f}" for x in os.getloadavg()],
        "kversion": " ".join(os.uname()[0:3]), "pveversion": f"pve-manager/{VERSION['version']}/pvesim",
        "cpuinfo": {"cpus": ncpu, "cores": ncpu, "sockets": 1, "model": "pvesim host CPU", "mhz": "0",
                    "hvm": "1", "flags": "", "user_hz": 100},
        "memory": {"total": total, "used": total - avail, "free": avail, "available": avail},
        "swap": {"total": 0, "used": 0, "free": 0},
        "rootfs": {"total": disk.total, "used": disk.used, "avail": disk.free, "free": disk.free},
        "ksm": {"shared": 0}, "boot-info": {"mode": "legacy-bios"},
        "current-kernel": {"sysname": os.uname().sysname, "release": os.uname().release,
                           "version": os.uname().version, "machine": os.uname().machine},
    }


@route("GET", "/cluster/status")
def cluster_status(req: Request) -> list[dict[str, Any]]:
    """One cluster entry, then one entry per node (online 0 while it is down)."""
    down = req.app.faults.nodes_down()
    out: list[dict[str, Any]] = [{"type": "cluster", "id": "cluster", "name": "pvesim",
                                  "nodes": len(req.app.nodes), "quorate": 1, "version": len(req.app.nodes)}]
    for i, n in enumerate(req.app.nodes, 1):
        out.append({"type": "node", "id": f"node/{n}", "name": n, "nodeid": i, "ip": "127.0.0.1",
                    "online": int(n not in down), "local": int(i == 1), "level": ""})
    return out


NODE_STATS = ("uptime", "cpu", "mem", "disk", "maxcpu", "maxmem", "maxdisk")


@route("GET", "/cluster/resources")
def cluster_resources(req: Request) -> list[dict[str, Any]]:
    """Pools, containers, nodes, storages; `type` filters (pool|vm|storage|node). Only what the caller
    may audit is listed, as pve-manager's API2/Cluster.pm resources does: pools with Pool.Audit, guests
    with VM.Audit, storages with Datastore.Audit; nodes always, their figures only with Sys.Audit."""
    kind = req.params.get("type")
    cfg, me = req.cfg(), req.identity.name
    out: list[dict[str, Any]] = []
    if kind in (None, "pool"):
        out += [{"id": f"/pool/{p}", "pool": p, "type": "pool"} for p in sorted(cfg.pools)
                if acl.check(cfg, me, f"/pool/{p}", ["Pool.Audit"], noerr=True)]
    down = req.app.faults.nodes_down()
    if kind in (None, "vm"):
        for node in req.app.nodes:
            for vmid in store.vmids(req.app, node):
                if not acl.check(cfg, me, f"/vms/{vmid}", ["VM.Audit"], noerr=True):
                    continue
                entry = store.resource_entry(req.app, node, vmid)
                if node in down:  # nothing reports the guests of a node that is gone
                    entry["status"] = "unknown"
                pool = cfg.pool_of(vmid)
                if pool and acl.check(cfg, me, f"/pool/{pool}", ["Pool.Audit"], noerr=True):
                    entry["pool"] = pool
                out.append(entry)
    if kind in (None, "node"):
        for n in req.app.nodes:
            entry = _node_entry(req, n)
            if not acl.check(cfg, me, f"/nodes/{n}", ["Sys.Audit"], noerr=True):
                entry = {k: v for k, v in entry.items() if k not in NODE_STATS}
            out.append(entry)
    if kind in (None, "storage"):
        for n in req.app.nodes:
            for name in STORAGES:
                if not acl.check(cfg, me, f"/storage/{name}", ["Datastore.Audit"], noerr=True):
                    continue
                st = storage_entry(req, n, name)
                out.append({"id": f"storage/{n}/{name}", "type": "storage", "storage": name, "node": n,
                            "status": "available", "plugintype": st["type"], "content": st["content"],
                            "shared": 0, "disk": st["used"], "maxdisk": st["total"]})
    return out


@route("GET", "/cluster/nextid")
def nextid(req: Request) -> str:
    """The lowest free vmid >= 100; with `vmid`, that vmid if free (400 if taken). Reserves nothing.

    PVE answers with the number as a JSON string ("data":"100"), which is why clients call int() on it.
    """
    used = {v for n in req.app.nodes for v in store.vmids(req.app, n)}
    if "vmid" in req.params:
        vmid = int(req.params["vmid"])
        if vmid in used:
            raise ApiError(400, "Parameter verification failed.", {"vmid": f"VM {vmid} already exists"})
        return str(vmid)
    vmid = 100
    while vmid in used:
        vmid += 1
    return str(vmid)


@route("GET", "/nodes/{node}/network")
def network(req: Request) -> list[dict[str, Any]]:
    """The sandbox bridges (vmbr20, vmbr30); `type` filters like PVE (bridge, any_bridge)."""
    req.node()
    from pvesim import network as net  # imported late to keep startup light

    kind = req.params.get("type")
    entries = net.bridges()
    if kind and kind not in ("bridge", "any_bridge", "any_local_bridge"):
        return []
    return [e for e in entries if _sees_bridge(req, str(e.get("iface", "")))]


def _sees_bridge(req: Request, bridge: str) -> bool:
    """pve-manager API2/Network.pm index: a bridge is listed only with SDN.Audit or SDN.Use on
    /sdn/zones/localnetwork/<bridge> or one of its VLANs (RPCEnvironment.pm check_sdn_bridge)."""
    if req.identity.name == acl.ROOT:
        return True
    cfg, path = req.cfg(), f"/sdn/zones/localnetwork/{bridge}"
    paths = [path] + [p for p in cfg.acl if p.startswith(path + "/")]
    return any(acl.check(cfg, req.identity.name, p, ["SDN.Audit", "SDN.Use"], any_=True, noerr=True)
               for p in paths)
