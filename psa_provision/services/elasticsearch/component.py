"""Elasticsearch 8 (Elastic's apt repository, or the sandbox's stand-in): config, heap, snapshot dir."""

from __future__ import annotations

from ...changes import Change, Noop
from ...facts import GuestFacts
from ...phases import ContainerSpec, Phase
from ...render import render
from ..common import apt_repo, command, install, put_file, restart_needed, service
from ..context import HostContext
from . import (
    BACKUP_DIR,
    CLUSTER_NAME,
    COMPONENT,
    CONF,
    HEAP,
    KEYRING,
    LIST,
    NODE_NAME,
    PACKAGES,
    TEMPLATES,
    TRANSPORT_PORT,
    UNIT,
)

HEAP_CAP_MB = 31 * 1024


def heap(ctx: HostContext) -> str:
    """Inventory override, else 1/16 of the container's memory capped at 31g (4g at 64 GiB)."""
    override = ctx.inventory.tuning.elasticsearch.heap
    if override:
        return override
    mb = min(HEAP_CAP_MB, max(256, ctx.container.memory_mb // 16))
    return f"{mb // 1024}g" if mb % 1024 == 0 else f"{mb}m"


def members(phase: Phase) -> list[ContainerSpec]:
    """The phase's Elasticsearch containers, a cluster when there are several (phase 3: one per node)."""
    return phase.with_component(COMPONENT)


def node_name(phase: Phase, container: ContainerSpec) -> str:
    """The seed's node name for a single node; a cluster member's container hostname (unique)."""
    return container.hostname if len(members(phase)) > 1 else NODE_NAME


def conf_content(ctx: HostContext) -> str:
    listen = ctx.listen_address()
    cluster = members(ctx.phase)
    if len(cluster) > 1:
        listen = ctx.container.ip  # members reach each other on the private address
    bind = listen if listen == "127.0.0.1" else f"[{listen}, 127.0.0.1]"  # clients use the IP; loopback too
    seeds = [f"{c.ip}:{TRANSPORT_PORT}" for c in cluster] if len(cluster) > 1 else []
    return render(TEMPLATES[CONF], cluster_name=CLUSTER_NAME, node_name=node_name(ctx.phase, ctx.container),
                  bind=bind, repo_path=BACKUP_DIR, transport_port=TRANSPORT_PORT, seed_hosts=seeds,
                  initial_master_nodes=[c.hostname for c in cluster] if seeds else [])


def heap_content(ctx: HostContext) -> str:
    return render(TEMPLATES[HEAP], heap=heap(ctx), memory_mb=ctx.container.memory_mb)


def _backup_dir(ctx: HostContext, facts: GuestFacts) -> Change:
    d = facts.dirs.get(BACKUP_DIR)
    if d and (d.owner, d.group) == ("elasticsearch", "elasticsearch"):
        return Noop(ctx.host, COMPONENT, f"{BACKUP_DIR} present")
    parent = BACKUP_DIR.rsplit("/", 1)[0]
    return command(ctx, COMPONENT, f"create snapshot directory {BACKUP_DIR} (path.repo)",
                   f"install -d -m 0755 {parent}\n"
                   f"install -d -m 0750 -o elasticsearch -g elasticsearch {BACKUP_DIR}\n")


def plan(ctx: HostContext, facts: GuestFacts) -> list[Change]:
    source = ctx.inventory.packages.elasticsearch
    repo = apt_repo(ctx, facts, COMPONENT, source, keyring=KEYRING, list_file=LIST)
    out: list[Change] = [*repo, *install(ctx, facts, COMPONENT, PACKAGES)]
    conf = put_file(ctx, facts, COMPONENT, CONF, conf_content(ctx), mode=0o660, group="elasticsearch")
    heap_file = put_file(ctx, facts, COMPONENT, HEAP, heap_content(ctx), mode=0o660, group="elasticsearch")
    out += [conf, heap_file, _backup_dir(ctx, facts)]
    out += service(ctx, facts, COMPONENT, UNIT, restart=restart_needed(
        facts, UNIT, [conf, heap_file], [CONF, HEAP]))
    return out
