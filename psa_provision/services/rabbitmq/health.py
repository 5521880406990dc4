"""RabbitMQ's `psa-provision health` probe: the node answers a ping; and, on a cluster's members, the
cluster's verdict across them."""

from __future__ import annotations

from ...phases import Phase
from ..members import MemberFacts, merge, unanswered, verdict
from . import NODE_PREFIX
from .cluster import cluster_problems, queue_problems
from .facts import ClusterStatus, parse_cluster

PROBE = "probe rabbitmq rabbitmq-diagnostics -q ping"

# Phase 3's cross-member verdict: each member's `cluster_status`, then `list_queues` (parse_cluster's
# two lines), gathered with its health probe (services/members.py); the exit code is cluster_status's.
FACTS = r"""rabbit_cluster() (
  set -o pipefail
  rabbitmqctl -q cluster_status --formatter json </dev/null | tr -d '\n' || exit
  echo
  rabbitmqctl -q list_queues name type members --formatter json </dev/null | tr -d '\n' || true
)
fact rabbitmq-cluster rabbit_cluster"""


def cluster_verdict(phase: Phase, members: list[MemberFacts]) -> tuple[bool, str]:
    """Every member in the cluster and running, no partition (cluster_problems), as each member that
    answers sees it; every queue a quorum queue on every member (queue_problems, the queues being the
    cluster's: from the first member that lists them)."""
    nodes = [f"{NODE_PREFIX}{m.hostname}" for m in members]
    views: dict[str, list[str]] = {}
    statuses: list[ClusterStatus] = []
    for m in members:
        if m.code("rabbitmq-cluster") != 0:
            continue
        try:
            status = parse_cluster(m.text("rabbitmq-cluster"))
        except ValueError:
            continue
        views[m.hostname] = cluster_problems(status, nodes)
        statuses.append(status)
    if not views:
        failed = "; ".join(unanswered(members, "rabbitmq-cluster"))
        return False, f"no member's rabbitmqctl answered ({failed})"
    listed = next((s for s in statuses if s.queues or s.queues_error), None)
    found = merge(views) + (queue_problems(listed, nodes) if listed else [])
    queues = f"{len(listed.queues)} quorum queues on every node" if listed else "no queues declared yet"
    return verdict(found, f"{len(nodes)} nodes running, no partition; {queues}")
