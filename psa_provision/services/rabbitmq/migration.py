"""From phase 2's one RabbitMQ node to phase 3's cluster with quorum queues, as steps (pure data).

The phase-2 node keeps its data and becomes the seed; the new members join it; then each classic
queue moves to a quorum queue without losing a message: a quorum queue `<name>.quorum` takes the same
bindings, a shovel drains the classic queue into it (acking each message only once the quorum queue
confirmed it), the consumers switch, and the drained classic queue is deleted; finally the name is
given back (a second shovel, the same way), so the app's queue names do not change.
"""

from __future__ import annotations

from ...phases import Phase
from ..mover import HaStep
from . import COMPONENT, COOKIE
from .cluster import members, node

TEMP_SUFFIX = ".quorum"


def steps(old: Phase, new: Phase, queues: list[str]) -> list[HaStep]:
    """[] unless `new` has a cluster seeded by `old`'s node; `queues`: the classic queues to move."""
    olds = old.with_component(COMPONENT)
    first = next((c for c in new.with_component(COMPONENT) if c.cluster), None)
    group = members(new, first) if first else []
    if len(olds) != 1 or not group or group[0].vmid != olds[0].vmid:
        return []
    seed, joiners = group[0], group[1:]
    out = [HaStep(f"rabbitmq: {seed.hostname} takes the cluster's cookie and address", seed.hostname,
                  f"stop, write {COOKIE} (0400 rabbitmq), rabbitmq.conf/erl_inetrc/epmd for the cluster, "
                  "start", "node running; definitions and queue depths as before",
                  "phase 2's cookie and files, restart")]
    for j in joiners:
        out.append(HaStep(f"rabbitmq: {j.hostname} joins {node(seed)}", j.hostname,
                          f"install with the cookie, stop_app, join_cluster {node(seed)}, start_app",
                          f"cluster_status lists {node(j)} running",
                          f"forget_cluster_node {node(j)} on the seed"))
    everyone = ", ".join(node(c) for c in group)
    for q in queues:
        temp = q + TEMP_SUFFIX
        out += [
            HaStep(f"rabbitmq: quorum queue {temp}", seed.hostname,
                   f"declare {temp} (x-queue-type quorum) with {q}'s bindings, then unbind {q}: new "
                   f"messages go to {temp} only", f"{temp} is quorum with members {everyone}",
                   f"bind {q} again, shovel {temp} -> {q}, delete {temp}"),
            HaStep(f"rabbitmq: drain {q} into {temp}", seed.hostname,
                   f"shovel {q} -> {temp} (ack-mode on-confirm: a message leaves {q} only once {temp} "
                   "confirmed it)", f"{q} empty; {temp} holds what {q} held",
                   f"shovel {temp} -> {q}"),
            HaStep(f"rabbitmq: {q} becomes a quorum queue", seed.hostname,
                   f"delete the empty classic {q}, declare {q} as quorum with its bindings, unbind {temp}, "
                   f"shovel {temp} -> {q}, delete {temp}; the consumers (RABBITMQ_QUEUE_TYPE=quorum) "
                   f"attach to {q}", f"{q} is quorum on every member; no message lost",
                   f"keep {temp} bound until {q} is back"),
        ]
    return out
