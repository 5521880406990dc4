"""Every service by name: its planner (in install order) and, for the stores, its data mover."""

from __future__ import annotations

from collections.abc import Callable

from ..changes import Change
from ..facts import GuestFacts
from .app import component as app
from .backup import component as backup
from .base import component as base
from .context import HostContext
from .elasticsearch import component as elasticsearch
from .elasticsearch.mover import MOVER as ELASTICSEARCH_MOVER
from .etcd import component as etcd
from .haproxy import component as haproxy
from .keepalived import component as keepalived
from .mover import Mover
from .nodejs import component as nodejs
from .patroni import component as patroni
from .patroni import patroni_managed
from .pgbackrest import component as pgbackrest
from .postgresql import component as postgresql
from .postgresql.mover import MOVER as POSTGRESQL_MOVER
from .rabbitmq import component as rabbitmq
from .rabbitmq.mover import MOVER as RABBITMQ_MOVER
from .redis import component as redis
from .redis.mover import MOVER as REDIS_MOVER
from .scripts import component as scripts

Planner = Callable[[HostContext, GuestFacts], list[Change]]


def postgresql_plan(ctx: HostContext, facts: GuestFacts) -> list[Change]:
    """PostgreSQL, then on a cluster member Patroni (services/patroni), which runs the server there."""
    out = postgresql.plan(ctx, facts)
    if patroni_managed(ctx.container.components, ctx.container.cluster):
        out += patroni.plan(ctx, facts)
    return out


# install order: base first (apt proxy, CA files), etcd before Patroni needs it, the stores (on a
# PostgreSQL cluster member, Patroni after the PostgreSQL packages; pgBackRest after PostgreSQL), Node.js
# before the app, scripts, the load balancer, the backup repository host (a container of its own) last
PLANNERS: tuple[tuple[str, Planner], ...] = (
    ("base", base.plan),
    ("etcd", etcd.plan),
    ("postgresql", postgresql_plan),
    ("pgbackrest", pgbackrest.plan),
    ("redis", redis.plan),
    ("rabbitmq", rabbitmq.plan),
    ("elasticsearch", elasticsearch.plan),
    ("nodejs", nodejs.plan),
    ("app", app.plan),
    ("scripts", scripts.plan),
    ("haproxy", haproxy.plan),
    ("keepalived", keepalived.plan),  # after haproxy: its track_script wants HAProxy running
    ("backup", backup.plan),
)
MOVERS: dict[str, Mover] = {
    "postgresql": POSTGRESQL_MOVER, "redis": REDIS_MOVER, "rabbitmq": RABBITMQ_MOVER,
    "elasticsearch": ELASTICSEARCH_MOVER,
}
