"""`pvesim fault node-down NODE` / `node-up NODE`: a node loses power, and comes back.

Down: every container whose config is on NODE stops at once (a hard stop, as a power loss; one that was
stopped already stays so, and a stop that fails is reported after the others were stopped), and the
node is recorded in faults.json (`nodes_down`, with `owner` so `fault clear --owner` brings it back).
From then on the API answers as a cluster missing a member does: the node shows `online: 0` in
/cluster/status and `status: offline` in /nodes and /cluster/resources, its guests `status: unknown`,
and calls proxied to it (/nodes/NODE/...) fail with HTTP 595 "No route to host" (pveproxy relays
AnyEvent::HTTP's connection error status and reason). The CRM (ha_manager.py) fences the node after
`fence_delay` seconds and recovers its HA resources on the nodes the rules allow.

Real Proxmox VE takes about two minutes for this: the node's LRM lock expires after 120 s, the CRM
then fences it and recovers the services; the sandbox default is 5 s so that tests stay short.

Up: the node is online again; HA resources stay where they were recovered, and the node starts its
own `onboot` containers as a booting node does (done by the CRM's next round).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pvesim.backend import BackendError
from pvesim.faults import Faults
from pvesim.paths import StateDir

DEFAULT_FENCE_DELAY = 5.0  # seconds; real PVE: ~120 s lock timeout before fencing, then recovery
PVE_FENCE_SECONDS = 120


def _containers_on(state: StateDir, node: str) -> list[int]:
    lxc = state.node_dir(node) / "lxc"
    return sorted(int(p.stem) for p in lxc.glob("*.conf") if p.stem.isdigit()) if lxc.is_dir() else []


def down(state: StateDir, node: str, nodes: list[str], fence_delay: float = DEFAULT_FENCE_DELAY,
         owner: str | None = None, stop: Callable[[int], bool] | None = None, say: Any = print) -> int:
    """Take `node` down: record it, then hard-stop each of its running containers; returns the rule number.

    `stop(vmid)` stops a container if it runs (the LXC backend's hard stop): True if it did, False if it
    was not running. Every container gets its stop; BackendError afterwards names those that failed (the
    node stays down: `node-up` or `fault clear` brings it back)."""
    if node not in nodes:
        raise ValueError(f"no node '{node}' in this sandbox (nodes: {', '.join(nodes)})")
    if fence_delay < 0:
        raise ValueError("fence delay must be >= 0 seconds")
    entry: dict[str, Any] = {"node": node, "since": time.time(), "fence_delay": float(fence_delay)}
    if owner is not None:
        entry["owner"] = owner
    number = Faults(state.faults).add_node_down(entry)
    failed: list[str] = []
    for vmid in _containers_on(state, node):
        try:
            stopped = stop(vmid) if stop is not None else True
        except BackendError as err:
            failed.append(f"CT {vmid}: {err}")
            continue
        say(f"- CT {vmid} on {node}: {'power lost' if stopped else 'was stopped already'}")
    if failed:
        raise BackendError(f"node {node} is down, but not every container on it stopped: {'; '.join(failed)}")
    return number


def up(state: StateDir, node: str) -> bool:
    """Bring `node` back online; False if it was not down."""
    return bool(Faults(state.faults).take_nodes_down(node=node))


def release(state: StateDir, owner: str | None = None, rule_id: int | None = None) -> list[str]:
    """`fault clear` brings back the nodes it covers; returns their names."""
    return [str(d["node"]) for d in Faults(state.faults).take_nodes_down(owner, rule_id)]
