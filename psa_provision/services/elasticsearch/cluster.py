"""Elasticsearch cluster verdicts (phase 3): what /_cluster/health, /_cat/nodes and /_cat/indices answer,
judged against the phase's members. Pure; the checks and the health probe feed it the real answers."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

HEALTH = "/_cluster/health"
NODES = "/_cat/nodes?format=json&h=name,master,node.role"
INDICES = "/_cat/indices?format=json&h=index,rep,health,status"


def problems(health: Mapping[str, Any], nodes: Iterable[Mapping[str, Any]],
             indices: Iterable[Mapping[str, Any]], members: Iterable[str]) -> list[str]:
    """Why the cluster is not what the seed asks (empty when it is): green, every member joined and
    nothing else, one elected master, and each app index (not a `.` system index) with a replica."""
    want = sorted(members)
    out: list[str] = []
    status = health.get("status")
    if status != "green":
        out.append(f"cluster health is {status!r} ({health.get('unassigned_shards', '?')} unassigned, "
                   f"{health.get('initializing_shards', '?')} initializing shards), want 'green'")
    count = health.get("number_of_nodes")
    if count != len(want):
        out.append(f"number_of_nodes is {count}, want {len(want)}")
    rows = list(nodes)
    names = sorted(str(row.get("name")) for row in rows)
    if names != want:
        missing, extra = sorted(set(want) - set(names)), sorted(set(names) - set(want))
        out.append(f"members are {names}: missing {missing or 'none'}, unexpected {extra or 'none'}")
    masters = [str(row.get("name")) for row in rows if row.get("master") == "*"]
    if len(masters) != 1:
        out.append(f"{len(masters)} elected masters ({', '.join(masters) or 'none'}), want exactly 1")
    for row in indices:
        name = str(row.get("index", ""))
        if name.startswith("."):
            continue
        replicas = str(row.get("rep", "0"))
        if not replicas.isdigit() or int(replicas) < 1:
            out.append(f"index {name} has {replicas} replicas: losing one member could lose it, want >= 1")
    return out
