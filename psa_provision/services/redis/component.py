"""Redis 7 (Debian 12's redis-server): full redis.conf with requirepass, maxmemory, AOF + RDB.

A member of a replicated set (phase 3) also gets masterauth, min-replicas-to-write/-max-lag and,
on a replica, `replicaof` the current primary (topology.current_primary), plus a Sentinel
(sentinel.py). Redis rewrites its own file on a failover (CONFIG REWRITE), so for such a member
the file is compared by the settings the tool owns, not byte for byte, and `replicaof` is Sentinel's.
Its passwords are compared by digest (passwords.py): a running member takes a new one live (CONFIG
SET, CONFIG REWRITE), a stopped one gets its whole file again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ...changes import Change, Command, Noop, PutFile, Sensitive
from ...facts import GuestFacts
from ...render import render
from ..common import command, content_changed, fix_mode, install, put_file, restart_needed, service
from ..context import HostContext
from . import (
    CLUSTER_MODE,
    COMPONENT,
    CONF,
    MIN_REPLICAS_MAX_LAG,
    MIN_REPLICAS_TO_WRITE,
    PACKAGES,
    PORT,
    SECRET,
    SENTINEL_PACKAGES,
    TEMPLATES,
    UNIT,
    passwords,
    sentinel,
)
from .conffile import conf_word, drift
from .topology import current_primary, replicated

# redis.conf keys a replicated member leaves to Redis/Sentinel, and those whose values are secrets
TOPOLOGY_KEYS = ("replicaof", "slaveof")
SECRET_KEYS = ("requirepass", "masterauth")


@dataclass(frozen=True)
class Replication:
    """The replication part of a member's redis.conf."""

    announce_ip: str
    replicaof: str | None  # the primary's address, None on the primary
    port: int = PORT
    min_replicas_to_write: int = MIN_REPLICAS_TO_WRITE
    min_replicas_max_lag: int = MIN_REPLICAS_MAX_LAG


def maxmemory(ctx: HostContext) -> str:
    """Inventory override, else 1/32 of the container's memory (2gb at 64 GiB, the seed's value)."""
    override = ctx.inventory.tuning.redis.maxmemory
    if override:
        return override
    mb = max(64, ctx.container.memory_mb // 32)
    return f"{mb // 1024}gb" if mb % 1024 == 0 else f"{mb}mb"


def replication(ctx: HostContext, facts: GuestFacts) -> Replication | None:
    """None for a standalone Redis; else this member's part, following the current primary."""
    if not replicated(ctx.phase, ctx.container):
        return None
    primary = current_primary(ctx.phase, ctx.container, facts.redis)
    return Replication(ctx.container.ip, None if primary == ctx.container.ip else primary)


def bind(ctx: HostContext, repl: Replication | None) -> str:
    address = ctx.container.ip if repl is not None else ctx.listen_address()
    return "127.0.0.1" if address == "127.0.0.1" else f"{address} 127.0.0.1"


def content(ctx: HostContext, repl: Replication | None = None) -> str:
    return render(TEMPLATES[CONF], bind=bind(ctx, repl), password=conf_word(ctx.secrets.get(SECRET).value),
                  maxmemory=maxmemory(ctx), replication=repl)


_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1024, "m": 1000**2, "mb": 1024**2, "g": 1000**3, "gb": 1024**3}


def memory_bytes(text: str) -> int | None:
    """A redis.conf memory value in bytes (`2gb`, `64mb`, `1000`); None if it is not one."""
    m = re.fullmatch(r"(\d+)\s*([kmg]?b?)", text.strip().lower())
    return int(m[1]) * _UNITS[m[2]] if m else None


def live_drift(ctx: HostContext, facts: GuestFacts, repl: Replication) -> list[str]:
    """Owned settings the running server holds other values of (CONFIG GET; [] when not known)."""
    have = facts.redis.config if facts.redis else {}
    if not have:
        return []
    want = {"bind": bind(ctx, repl), "maxmemory": str(memory_bytes(maxmemory(ctx))), "appendonly": "yes",
            "min-replicas-to-write": str(repl.min_replicas_to_write),
            "min-replicas-max-lag": str(repl.min_replicas_max_lag)}
    return sorted(k for k, v in want.items() if k in have and have[k] != v)


def replicated_conf(ctx: HostContext, facts: GuestFacts, repl: Replication) -> Change:
    """redis.conf of a member: Noop while every owned setting is there (whatever Redis rewrote around
    them), a mode/owner fix alone, else the whole file with `replicaof` the current primary."""
    want = content(ctx, repl)
    have = facts.files.get(CONF)
    if have is None or have.content is None or drift(want, have.content, ignore=TOPOLOGY_KEYS,
                                                      presence_only=SECRET_KEYS):
        return put_file(ctx, facts, COMPONENT, CONF, want, mode=CLUSTER_MODE, owner="redis", group="redis")
    if (have.mode, have.owner, have.group) != (CLUSTER_MODE, "redis", "redis"):
        return fix_mode(ctx, COMPONENT, have, CLUSTER_MODE, "redis", "redis")
    return Noop(ctx.host, COMPONENT, f"{CONF} holds every setting the tool owns (replicaof is Sentinel's)")


def password_change(ctx: HostContext, keys: list[str]) -> Command:
    """The running Redis takes the secrets file's password (requirepass, masterauth), saved into its
    file by CONFIG REWRITE: no restart, connections already authenticated stay."""
    return command(ctx, COMPONENT, f"{', '.join(keys)}: the running Redis takes the secrets file's password "
                                   "(CONFIG SET, CONFIG REWRITE; no restart)", passwords.SERVER,
                   stdin=Sensitive.join(ctx.secrets.get(SECRET), "\n"))


def plan(ctx: HostContext, facts: GuestFacts) -> list[Change]:
    repl = replication(ctx, facts)
    if repl is None:
        out: list[Change] = [*install(ctx, facts, COMPONENT, PACKAGES)]
        conf = put_file(ctx, facts, COMPONENT, CONF, content(ctx), mode=0o640, owner="redis", group="redis")
        out.append(conf)
        restart = restart_needed(facts, UNIT, [conf], [CONF])
        out.extend(service(ctx, facts, COMPONENT, UNIT, restart=restart))
        return out
    out = [*install(ctx, facts, COMPONENT, (*PACKAGES, *SENTINEL_PACKAGES))]
    conf = replicated_conf(ctx, facts, repl)
    held = facts.redis.passwords if facts.redis else {}
    wrong = passwords.stale(held, ctx.secrets.get(SECRET).value,
                            (passwords.REQUIREPASS, passwords.MASTERAUTH))
    running = bool((unit := facts.services.get(UNIT)) and unit.active)
    if wrong and not running and not isinstance(conf, PutFile):  # nothing to take it live: the file
        conf = put_file(ctx, facts, COMPONENT, CONF, content(ctx, repl), mode=CLUSTER_MODE, owner="redis",
                        group="redis")
    out.append(conf)
    # not the file's mtime: Redis itself rewrites the file while it runs (CONFIG REWRITE)
    written = isinstance(conf, PutFile) and content_changed(facts, [conf])
    if wrong and not written:
        out.append(password_change(ctx, wrong))
    restart = written or bool(live_drift(ctx, facts, repl))
    out.extend(service(ctx, facts, COMPONENT, UNIT, restart=restart))
    out.extend(sentinel.plan(ctx, facts, repl.replicaof or ctx.container.ip))
    return out
