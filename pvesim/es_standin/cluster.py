"""Cluster membership, master election, shard allocation and health of the stand-in: pure functions.

The model (a simplification of Elasticsearch's, named so wherever it shows):
- membership: the nodes heard from (a heartbeat over the transport port) within LIVENESS_S;
- master: needs a quorum of the voting configuration (node ids: those named by
  `cluster.initial_master_nodes` at bootstrap, then every master-eligible node that joined; it is
  kept in the cluster state, which every node persists); among the live voting nodes the one with
  the lowest node name wins, so every node that sees the same members elects the same master;
- every index has one primary shard and `number_of_replicas` replicas (Elasticsearch 8's default: 1);
  `in_sync` lists the nodes holding a current copy (the first live one is the primary), `initializing`
  the nodes recovering a copy from the primary;
- health: red when a primary has no live copy, yellow when a replica is not assigned and started,
  green otherwise;
- snapshot repositories are registered in the cluster state (name -> type and settings), so every
  member knows them; each member resolves a repository's location on its own filesystem.

The cluster state is plain JSON (it travels between nodes and is persisted under path.data).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

LIVENESS_S = 3.0  # a member not heard from for this long has left the cluster
DEFAULT_REPLICAS = 1
State = dict[str, Any]
STATUS_ORDER = ("green", "yellow", "red")


@dataclass(frozen=True)
class Member:
    """One node as its heartbeat describes it."""

    node_id: str
    name: str
    transport: str  # ip:port of the stand-in's transport
    http: str  # ip:port of the REST API
    roles: tuple[str, ...] = ("data", "ingest", "master")

    @property
    def master_eligible(self) -> bool:
        return "master" in self.roles

    @property
    def data(self) -> bool:
        return "data" in self.roles

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "roles": list(self.roles)}

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> Member:
        return Member(str(data["node_id"]), str(data["name"]), str(data["transport"]), str(data["http"]),
                      tuple(data.get("roles", ("data", "ingest", "master"))))


def empty_state(cluster_uuid: str) -> State:
    """A node's state before it has joined (or bootstrapped) a cluster."""
    return {"cluster_uuid": cluster_uuid, "term": 0, "version": 0, "master": None, "voting": [],
            "nodes": {}, "indices": {}}


def live_ids(last_seen: Mapping[str, float], now: float, timeout: float = LIVENESS_S) -> set[str]:
    """Node ids heard from within `timeout` seconds of `now`."""
    return {node for node, seen in last_seen.items() if now - seen <= timeout}


PLACEHOLDER = "{bootstrap-placeholder}-"


def has_quorum(voting: Iterable[str], live: Iterable[str]) -> bool:
    """More than half of the voting configuration (node ids) is alive."""
    voters = set(voting)
    return bool(voters) and 2 * len(voters & set(live)) > len(voters)


def bootstrap_voting(initial_master_nodes: Iterable[str], members: Iterable[Member]) -> list[str] | None:
    """The first voting configuration, once a majority of `cluster.initial_master_nodes` (names) is
    discovered: their node ids, and a placeholder for each listed node not seen yet; None before."""
    names = list(dict.fromkeys(initial_master_nodes))
    found = {m.name: m.node_id for m in members if m.master_eligible and m.name in names}
    if not names or 2 * len(found) <= len(names):
        return None
    return [found.get(n, PLACEHOLDER + n) for n in names]


def adjust_voting(voting: list[str], members: Iterable[Member]) -> list[str]:
    """A joining master-eligible node takes its placeholder's place or is added; departed nodes stay
    (a temporary loss must not shrink the quorum)."""
    out = list(voting)
    for m in sorted((m for m in members if m.master_eligible), key=lambda m: m.name):
        if m.node_id in out:
            continue
        placeholder = PLACEHOLDER + m.name
        if placeholder in out:
            out[out.index(placeholder)] = m.node_id
        else:
            out.append(m.node_id)
    return out


def elect(voting: Iterable[str], members: Iterable[Member]) -> Member | None:
    """The master among the live members: None without a quorum of the voting configuration (ids);
    the live voting node with the lowest name wins, so every node seeing the same members agrees."""
    voters = set(voting)
    candidates = [m for m in members if m.master_eligible and m.node_id in voters]
    if not has_quorum(voters, (m.node_id for m in candidates)):
        return None
    return min(candidates, key=lambda m: (m.name, m.node_id))


def replicas_of(meta: Mapping[str, Any]) -> int:
    """`index.number_of_replicas` from an index's settings (flat or nested), default 1."""
    settings = meta.get("settings", {})
    nested = settings.get("index", {}) if isinstance(settings.get("index"), dict) else {}
    value = settings.get("number_of_replicas", settings.get("index.number_of_replicas",
                                                            nested.get("number_of_replicas")))
    return DEFAULT_REPLICAS if value is None else int(value)


def _load(indices: Mapping[str, Any]) -> dict[str, int]:
    """Shard copies per node (in sync or initializing), to allocate to the least loaded node."""
    count: dict[str, int] = {}
    for meta in indices.values():
        for node in [*meta["in_sync"], *meta["initializing"]]:
            count[node] = count.get(node, 0) + 1
    return count


def allocate_new(indices: Mapping[str, Any], replicas: int, data_nodes: Mapping[str, str]) -> list[str]:
    """Nodes for a new index's copies (primary first): the least loaded data nodes, by name on a tie.
    `data_nodes` maps live data node ids to names. Copies of an empty index start in sync."""
    load = _load(indices)
    ranked = sorted(data_nodes, key=lambda n: (load.get(n, 0), data_nodes[n], n))
    return ranked[: 1 + replicas]


def reconcile(indices: Mapping[str, Any], data_nodes: Mapping[str, str]) -> dict[str, Any]:
    """The routing after membership changed: copies on departed nodes drop out of sync (the last
    copy stays listed so the index recovers when its node returns), a live in-sync replica is
    promoted when the primary is gone, and missing replicas go to the least loaded live data nodes
    (they start initializing: the node recovers the copy from the primary)."""
    out: dict[str, Any] = {}
    for name, meta in indices.items():
        live_sync = [n for n in meta["in_sync"] if n in data_nodes]
        in_sync = live_sync or list(meta["in_sync"])
        initializing = [n for n in meta["initializing"] if n in data_nodes and n not in in_sync]
        out[name] = {**meta, "in_sync": in_sync, "initializing": initializing}
    for name in sorted(out):
        meta = out[name]
        if not any(n in data_nodes for n in meta["in_sync"]):
            continue  # no primary: nothing to recover from
        load = _load(out)
        missing = 1 + replicas_of(meta) - len(meta["in_sync"]) - len(meta["initializing"])
        holders = set(meta["in_sync"]) | set(meta["initializing"])
        spare = sorted((n for n in data_nodes if n not in holders),
                       key=lambda n: (load.get(n, 0), data_nodes[n], n))
        meta["initializing"] = meta["initializing"] + spare[: max(0, missing)]
    return out


def primary(meta: Mapping[str, Any], live: Iterable[str]) -> str | None:
    """The node holding the primary: the first live in-sync copy."""
    alive = set(live)
    return next((n for n in meta["in_sync"] if n in alive), None)


def index_health(meta: Mapping[str, Any], live: Iterable[str]) -> dict[str, Any]:
    """Shard counts and status of one index (one primary shard, `number_of_replicas` replicas)."""
    alive = set(live)
    active = [n for n in meta["in_sync"] if n in alive]
    initializing = [n for n in meta["initializing"] if n in alive and n not in active]
    wanted = 1 + replicas_of(meta)
    active_count = min(len(active), wanted)
    init_count = min(len(initializing), wanted - active_count)
    status = "red" if not active else ("green" if active_count == wanted else "yellow")
    return {"status": status, "primaries": 1 if active else 0, "active": active_count,
            "initializing": init_count, "unassigned": wanted - active_count - init_count,
            "replicas": wanted - 1}


def cluster_health(indices: Mapping[str, Any], live: Iterable[str]) -> dict[str, Any]:
    """Elasticsearch's /_cluster/health shard counts and status over every open index."""
    alive = set(live)
    totals = {"active_primary_shards": 0, "active_shards": 0, "initializing_shards": 0,
              "unassigned_shards": 0}
    status = "green"
    for meta in indices.values():
        if meta.get("closed"):
            continue
        health = index_health(meta, alive)
        totals["active_primary_shards"] += health["primaries"]
        totals["active_shards"] += health["active"]
        totals["initializing_shards"] += health["initializing"]
        totals["unassigned_shards"] += health["unassigned"]
        status = max(status, health["status"], key=STATUS_ORDER.index)
    total = totals["active_shards"] + totals["initializing_shards"] + totals["unassigned_shards"]
    percent = 100.0 if total == 0 else round(100.0 * totals["active_shards"] / total, 1)
    return {"status": status, **totals, "active_shards_percent_as_number": percent}
