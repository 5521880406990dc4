"""A RabbitMQ cluster of the phase file's members (phase 3): the shared Erlang cookie, the join, and
the quorum queues' membership.

Members are the containers with the same `cluster` running rabbitmq, in phase order; the first is the
seed the others join. classic_config peer discovery (rabbitmq.conf) names them all, so a restarted
member finds its cluster by itself; `up` still joins a node that is not in it yet explicitly
(`join_cluster` resets that node: its own users and queues give way to the cluster's), in its second
wave, once every member runs. A node joining late is added to every quorum queue (`rabbitmq-queues
grow`): RabbitMQ 3.10 does not add new members to existing quorum queues by itself.
"""

from __future__ import annotations

import shlex

from ...changes import Change, Noop, Sensitive, sha256
from ...facts import GuestFacts
from ...phases import ContainerSpec, Phase
from ..common import command
from ..context import HostContext
from . import COMPONENT, COOKIE, COOKIE_SECRET, NODE_PREFIX, UNIT
from .facts import ClusterStatus

QUORUM = "quorum"


def members(phase: Phase, spec: ContainerSpec) -> list[ContainerSpec]:
    """The cluster `spec` belongs to, in phase order; [] for a standalone node (no `cluster`, or alone)."""
    if spec.cluster is None or COMPONENT not in spec.components:
        return []
    found = [c for c in phase.containers if c.cluster == spec.cluster and COMPONENT in c.components]
    return found if len(found) > 1 else []


def node(spec: ContainerSpec) -> str:
    """The Erlang node name RabbitMQ runs as on a container: rabbit@<hostname>."""
    return f"{NODE_PREFIX}{spec.hostname}"


def cookie(ctx: HostContext, facts: GuestFacts) -> list[Change]:
    """The shared Erlang cookie, 0400 rabbitmq:rabbitmq. The node reads it only as it starts and the CLI
    tools need the node's, so a running node is stopped before it changes (the restart follows)."""
    secret = ctx.secrets.get(COOKIE_SECRET)
    have = facts.files.get(COOKIE)
    if have is not None and (have.sha256, have.mode, have.owner, have.group) == (
            sha256(secret.value), 0o400, "rabbitmq", "rabbitmq"):
        return [Noop(ctx.host, COMPONENT, f"{COOKIE} is the cluster's")]
    path = shlex.quote(COOKIE)
    script = (f"systemctl stop {UNIT}\n"
              f"umask 077\nhead -c -1 > {path}.tmp\n"  # the cookie without the line end stdin adds
              f"chown rabbitmq:rabbitmq {path}.tmp\nchmod 0400 {path}.tmp\nmv -f {path}.tmp {path}\n")
    return [command(ctx, COMPONENT, f"install the cluster's Erlang cookie in {COOKIE} (stops {UNIT})",
                    script, stdin=Sensitive.join(secret, "\n"))]


def join(ctx: HostContext, facts: GuestFacts) -> list[Change]:
    """A member that is not in the cluster with every other member joins the seed (or, if the seed is
    down, another member), then takes its place in every quorum queue; the seed never joins."""
    found = members(ctx.phase, ctx.container)
    me, peers = node(ctx.container), [node(c) for c in found if c.vmid != ctx.container.vmid]
    status = facts.rabbitmq.cluster if facts.rabbitmq else None
    if status is not None and set(peers) <= set(status.nodes):
        return [Noop(ctx.host, COMPONENT, f"{me} is in the cluster with {', '.join(peers)}")]
    if found[0].vmid == ctx.container.vmid:
        return [Noop(ctx.host, COMPONENT, f"{me} is the cluster's seed: the others join it")]
    q = " ".join(shlex.quote(p) for p in peers)
    script = ("status=$(rabbitmqctl -q cluster_status --formatter json </dev/null)\n"
              f"for peer in {q}; do  # already in a cluster with one of them: nothing to do\n"
              "  case $status in *\"\\\"$peer\\\"\"*) exit 0 ;; esac\n"
              "done\n"
              "rabbitmqctl -q stop_app </dev/null\n"
              "joined=\n"
              f"for peer in {q}; do\n"
              "  if rabbitmqctl -q join_cluster \"$peer\" </dev/null; then joined=$peer; break; fi\n"
              "done\n"
              "rabbitmqctl -q start_app </dev/null\n"
              f'[ -n "$joined" ] || {{ echo "could not join any of {" ".join(peers)}" >&2; exit 1; }}\n'
              f"rabbitmq-queues -q grow {shlex.quote(me)} all </dev/null\n")
    return [command(ctx, COMPONENT, f"join {me} to the cluster of {peers[0]}", script, needs_peers=True)]


def queue_problems(status: ClusterStatus, expected_nodes: list[str]) -> list[str]:
    """Why the cluster's queues are not HA: a queue not quorum, or whose members are not every node."""
    want = tuple(sorted(expected_nodes))
    out = [f"queues unknown: {status.queues_error}"] if status.queues_error else []
    for name, (kind, nodes) in sorted(status.queues.items()):
        if kind != QUORUM:
            out.append(f"queue {name} is {kind}, not quorum")
        elif nodes != want:
            out.append(f"quorum queue {name} has members {', '.join(nodes) or '(none)'}, "
                       f"not {', '.join(want)}")
    return out


def cluster_problems(status: ClusterStatus, expected_nodes: list[str]) -> list[str]:
    """Why a member's view of the cluster is not healthy: missing or stopped members, partitions."""
    want = set(expected_nodes)
    out = []
    if missing := sorted(want - set(status.nodes)):
        out.append(f"not in the cluster: {', '.join(missing)}")
    if stopped := sorted(want - set(status.running)):
        out.append(f"not running: {', '.join(stopped)}")
    if status.partitions:
        seen = "; ".join(f"{k} cannot see {', '.join(v)}" for k, v in sorted(status.partitions.items()))
        out.append(f"network partition: {seen}")
    return out
