"""Elasticsearch's `psa-provision health` probe: /_cluster/health answers green or yellow; and, on a
cluster's members, the cluster's verdict across them (cluster.problems)."""

from __future__ import annotations

import json
import re
import shlex

from ...phases import Phase
from ..members import MemberFacts, merge, unanswered, verdict
from ..parse import dicts, json_object
from . import PORT, cluster

PROBE = f"probe elasticsearch curl -sS --max-time 10 http://127.0.0.1:{PORT}/_cluster/health"
HEALTHY = ("green", "yellow")  # yellow: a single node holds no replica, as the seed's setup has it


def judge(code: int, detail: str) -> tuple[bool, str] | None:
    """The cluster status when curl succeeded; None (the default judgement) when it failed."""
    if code != 0:
        return None
    m = re.search(r'"status"\s*:\s*"(\w+)"', detail)
    if m is None:
        return False, f"/_cluster/health has no status: {detail[:80]}"
    return m.group(1) in HEALTHY, f"cluster status {m.group(1)}"


# Phase 3's cross-member verdict: each member's /_cluster/health, /_cat/nodes and /_cat/indices,
# gathered with its health probe (services/members.py).
_ASKED = {"es-health": cluster.HEALTH, "es-nodes": cluster.NODES, "es-indices": cluster.INDICES}
FACTS = "\n".join(f"fact {name} curl -sSf --max-time 10 {shlex.quote(f'http://127.0.0.1:{PORT}{path}')}"
                  for name, path in _ASKED.items())


def cluster_verdict(phase: Phase, members: list[MemberFacts]) -> tuple[bool, str]:
    """Green, every member joined, one elected master, each app index replicated (cluster.problems), as
    each member that answers sees it (any member answers for the cluster; one cut off from the others
    sees a cluster of its own)."""
    views: dict[str, list[str]] = {}
    masters: set[str] = set()
    for m in members:
        if any(m.code(name) != 0 for name in _ASKED):
            continue
        try:
            health = json_object(m.text("es-health"))
            nodes, indices = dicts(json.loads(m.text("es-nodes"))), dicts(json.loads(m.text("es-indices")))
        except ValueError:
            continue
        views[m.hostname] = cluster.problems(health, nodes, indices, [c.hostname for c in members])
        masters |= {str(n.get("name")) for n in nodes if n.get("master") == "*"}
    if not views:
        failed = [why for name in _ASKED for why in unanswered(members, name)]
        return False, f"no member's Elasticsearch answered ({'; '.join(dict.fromkeys(failed))})"
    return verdict(merge(views), f"green, {len(members)} nodes joined, master {', '.join(sorted(masters))}, "
                                 "every index replicated")
