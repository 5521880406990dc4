"""From phase 2's standalone Redis to phase 3's primary + replicas + Sentinels, as steps (pure data).

The standalone keeps serving throughout and becomes the first primary: replicas copy it while the
writers write (no quiesce), Sentinels come last, and only then does the app switch to Sentinel
discovery, so an acknowledged write is never on a Redis the app stops using.
"""

from __future__ import annotations

from ...phases import Phase
from ..mover import HaStep
from . import COMPONENT, MASTER_NAME, MIN_REPLICAS_TO_WRITE, QUORUM
from .topology import members


def steps(old: Phase, new: Phase) -> list[HaStep]:
    """[] unless `new` has a replicated set whose first member is `old`'s standalone Redis."""
    olds = old.with_component(COMPONENT)
    first = next((c for c in new.with_component(COMPONENT) if c.cluster), None)
    group = members(new, first) if first else []
    if len(olds) != 1 or len(group) < 2 or group[0].vmid != olds[0].vmid:
        return []
    primary, replicas = group[0], group[1:]
    out = [HaStep(f"redis: {primary.hostname} listens for replicas", primary.hostname,
                  f"redis.conf as phase 3 has it (bind {primary.ip}, masterauth; min-replicas-to-write "
                  "still 0: a primary without replicas must keep taking writes), restart",
                  "authenticated PING answers PONG; role master", "phase 2's redis.conf, restart")]
    for r in replicas:
        out.append(HaStep(f"redis: {r.hostname} replicates {primary.hostname}", r.hostname,
                          f"install, redis.conf with replicaof {primary.ip} 6379, start; wait for the sync",
                          "master_link_status:up, offset caught up, key digest equal to the primary's",
                          "stop and disable redis-server on the replica"))
    out.append(HaStep(f"redis: min-replicas-to-write {MIN_REPLICAS_TO_WRITE} on every member",
                      primary.hostname,
                      f"CONFIG SET min-replicas-to-write {MIN_REPLICAS_TO_WRITE} (and in redis.conf) on all",
                      "the primary's min_slaves_good_slaves >= 1", "CONFIG SET min-replicas-to-write 0"))
    for c in group:
        out.append(HaStep(f"redis: Sentinel on {c.hostname}", c.hostname,
                          f"install redis-sentinel, sentinel.conf monitoring {MASTER_NAME} at {primary.ip} "
                          f"quorum {QUORUM}, start", "SENTINEL get-master-addr-by-name names the primary",
                          "stop and disable redis-sentinel"))
    out.append(HaStep("redis: Sentinels agree", primary.hostname, "wait for the Sentinels to find each other",
                      f"SENTINEL ckquorum {MASTER_NAME} answers OK {len(group)} usable Sentinels on each",
                      "(nothing: checks only)"))
    out.append(HaStep("redis: the app asks the Sentinels", "app containers",
                      "REDIS_SENTINELS/REDIS_SENTINEL_NAME in .env, pm2 reload of the apps that use Redis",
                      "/health 200 on every app", "phase 2's .env, pm2 reload"))
    return out
