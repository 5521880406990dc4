"""What pvestatd does for the RRDs: every 10 s, one sample of every container and of the node.

PVE/Service/pvestatd.pm update_lxc_status records for each configured container: maxcpu (cores,
else its cpulimit, else the host's cpus), cpu (fraction of those cores), maxmem, mem, maxdisk, disk
and the netin, netout, diskread and diskwrite counters while it runs; a stopped one gets maxcpu,
maxmem, maxdisk and disk 0, the rest unknown. update_node_status records the host (see hoststats).

The databases live in memory and in <state>/rrd/pve-vm-9.0/<vmid>.json and
<state>/rrd/pve-node-9.0/host.json (one for every node: all are this machine), rewritten when a
sample closes a 60 s step. `start(app)` runs the sampler in a daemon thread, its first cycle at once;
`sampler_for(app)` is what the rrddata handlers read.

Each cycle also broadcasts every container's line, as pvestatd does through pmxcfs: its name, status
(running or stopped), uptime and figures. /cluster/resources and a pool's members answer from that
line (pve-manager API2Tools extract_vm_stats), so their status is up to a cycle old and `unknown` for
a container not sampled yet; GET /nodes/{node}/lxc and status/current ask the container now.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pvesim import handlers_lxcstore as store
from pvesim.hoststats import HostReader
from pvesim.rrd import GUEST_SOURCES, NODE_SOURCES, Database, Reading, cpu_fraction
from pvesim.server import ApiError, App

INTERVAL = 10  # pvestatd.pm: my $updatetime = 10
HOST = "host"

_SAMPLERS: dict[int, Sampler] = {}  # id(app) -> its sampler


class Sampler:
    """The RRD databases of one App and the sampling that feeds them."""

    def __init__(self, app: App, host: HostReader | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.app, self.clock = app, clock
        self.host = host or HostReader()
        self.root = app.state.root / "rrd"
        self.lock = threading.Lock()
        self._guests: dict[int, Database] = {}
        self._node: Database | None = None
        self._cpu: dict[int, Reading] = {}
        self._broadcast: dict[int, dict[str, Any]] = {}
        self._stop = threading.Event()

    # --- the databases ---------------------------------------------------------------------------

    def _path(self, vmid: int | None) -> Path:
        return self.root / ("pve-node-9.0" if vmid is None else "pve-vm-9.0") / f"{vmid or HOST}.json"

    def _load(self, vmid: int | None) -> Database | None:
        sources = NODE_SOURCES if vmid is None else GUEST_SOURCES
        try:
            return Database.from_json(sources, json.loads(self._path(vmid).read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, AttributeError) as e:
            print(f"rrd: {self._path(vmid)} unreadable, starting it anew: {e}", file=sys.stderr, flush=True)
            return Database(sources)

    def guest(self, vmid: int) -> Database | None:
        """The container's database (None when it was never sampled, like a missing RRD file)."""
        with self.lock:
            if vmid not in self._guests:
                db = self._load(vmid)
                if db is None:
                    return None
                self._guests[vmid] = db
            return self._guests[vmid]

    def node(self) -> Database | None:
        """The host's database, shared by every node."""
        with self.lock:
            if self._node is None:
                self._node = self._load(None)
            return self._node

    def _save(self, vmid: int | None, db: Database) -> None:
        path = self._path(vmid)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(db.to_json(), separators=(",", ":")))
        os.replace(tmp, path)

    def _record(self, vmid: int | None, when: float, values: Mapping[str, float | None]) -> None:
        db = self.node() if vmid is None else self.guest(vmid)
        if db is None:
            db = Database(NODE_SOURCES if vmid is None else GUEST_SOURCES)
        with self.lock:
            if vmid is None:
                self._node = db
            else:
                self._guests[vmid] = db
            if db.update(when, values):
                self._save(vmid, db)

    def broadcast(self, vmid: int) -> dict[str, Any]:
        """The container's line of the last cycle (name, status, uptime, figures); {} before its first."""
        with self.lock:
            return dict(self._broadcast.get(vmid, {}))

    # --- sampling --------------------------------------------------------------------------------

    def guest_values(self, node: str, vmid: int, when: float) -> dict[str, float | None]:
        """One update_lxc_status sample of a container."""
        conf, _ = store.load(self.app, node, vmid)
        values = conf.main.values
        cores = store.cpus(values)
        sample: dict[str, float | None] = {
            "maxcpu": cores, "maxmem": int(values.get("memory", "512")) * store.MIB,
            "maxdisk": store.rootfs_size(values), "disk": 0,
        }
        rt = store.runtime(self.app, vmid)
        line = {"name": values.get("hostname", f"CT{vmid}"), "status": rt.status, "uptime": 0,
                "template": 0, "maxcpu": cores, "cpu": 0, "maxmem": sample["maxmem"], "mem": 0,
                "maxdisk": sample["maxdisk"], "disk": 0, "netin": 0, "netout": 0, "diskread": 0,
                "diskwrite": 0}
        if rt.status != "running":
            self._cpu.pop(vmid, None)
            self._broadcast_line(vmid, line)
            return sample
        reading = (when, rt.cputime)
        cpu = cpu_fraction(self._cpu.get(vmid), reading, cores)
        self._cpu[vmid] = reading
        sample.update(cpu=0.0 if cpu is None else cpu,  # vmstatus answers 0 before it has a delta
                      mem=rt.mem, disk=rt.disk, netin=rt.netin, netout=rt.netout,
                      diskread=rt.diskread, diskwrite=rt.diskwrite)
        self._broadcast_line(vmid, {**line, **{k: v for k, v in sample.items() if k in line},
                                    "uptime": rt.uptime})
        return sample

    def _broadcast_line(self, vmid: int, line: dict[str, Any]) -> None:
        with self.lock:
            self._broadcast[vmid] = line

    def sample(self) -> None:
        """One pvestatd cycle: every container on every node, then the node."""
        seen: set[int] = set()
        for node in self.app.nodes:
            for vmid in store.vmids(self.app, node):
                seen.add(vmid)
                when = self.clock()
                with contextlib.suppress(ApiError, FileNotFoundError):  # destroyed meanwhile
                    self._record(vmid, when, self.guest_values(node, vmid, when))
        with self.lock:
            for gone in set(self._broadcast) - seen:
                del self._broadcast[gone]
        values = self.host.values()
        self._record(None, self.clock(), values)  # update_node_status takes the time after df

    def run(self) -> None:
        """Sample at once, then every INTERVAL seconds until stopped; a failed cycle is logged, not fatal."""
        while not self._stop.is_set():
            try:
                self.sample()
            except Exception:  # a bad cycle must not end the statistics for good
                traceback.print_exc()
            self._stop.wait(INTERVAL - self.clock() % INTERVAL)

    def stop(self) -> None:
        self._stop.set()


def start(app: App) -> Sampler:
    """Start sampling for `app` in a daemon thread (what pvestatd is to a PVE node)."""
    sampler = Sampler(app)
    _SAMPLERS[id(app)] = sampler
    threading.Thread(target=sampler.run, name="rrd-sampler", daemon=True).start()
    return sampler


def sampler_for(app: App) -> Sampler:
    """The app's sampler; one that only reads the persisted files when none was started."""
    sampler = _SAMPLERS.get(id(app))
    if sampler is None or sampler.app is not app:
        sampler = _SAMPLERS[id(app)] = Sampler(app)
    return sampler
