"""rrddata of containers and nodes: the sampler's RRDs as PVE/RRD.pm create_rrd_data answers.

PVE/API2/LXC.pm and PVE/API2/Nodes.pm `rrddata` read pve-vm-9.0/<vmid> and pve-node-9.0/<node>
without looking at the guest's config: a vmid that has an RRD answers wherever it lives now, and
one that never had one is RRDs::fetch's error.
"""

from __future__ import annotations

import time

from pvesim.rrd import Database, Row
from pvesim.rrd_sampler import sampler_for
from pvesim.server import ApiError, Request, route

RRD_DIR = "/var/lib/rrdcached/db"


def _rows(req: Request, db: Database | None, name: str) -> list[Row]:
    if db is None:
        raise ApiError(500, f"RRD error: opening '{RRD_DIR}/{name}': No such file or directory")
    with sampler_for(req.app).lock:
        return db.rows(req.params["timeframe"], req.params.get("cf") or "AVERAGE", time.time())


@route("GET", "/nodes/{node}/lxc/{vmid}/rrddata")
def lxc_rrddata(req: Request) -> list[Row]:
    """A container's statistics, a row per step of the timeframe."""
    req.node()
    vmid = req.int("vmid")
    return _rows(req, sampler_for(req.app).guest(vmid), f"pve-vm-9.0/{vmid}")


@route("GET", "/nodes/{node}/rrddata")
def node_rrddata(req: Request) -> list[Row]:
    """The node's statistics (every node is this machine)."""
    node = req.node()
    return _rows(req, sampler_for(req.app).node(), f"pve-node-9.0/{node}")
