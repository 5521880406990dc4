"""A restore of a phase whose stores run as clusters (phase 3), into phase 1's layout: one standalone copy
of each store and one app copy running every service. Pure: which containers, their specs, the copies'
phase, and the guest scripts that turn a member's copy into a standalone store.

Copying each of phase 3's 33 containers would rebuild Patroni, etcd, Sentinel, the RabbitMQ and
Elasticsearch clusters and the load balancer pair only to prove the data; a restore proves the data and
that the app runs on it. So beside production it brings back:
- PostgreSQL: a copy of the phase file's first Patroni member (its packages, pgBackRest's keys and
  configuration), made a standalone server (patroni.standalone_copy: Patroni masked, Debian's
  postgresql.conf back, postgresql@15-main started from start.conf `auto`), then restored by pgBackRest
  to the time or restore point. Any member's copy serves: pgBackRest replaces its data with the backup
  and the WAL archived by whichever member led, following every timeline a failover made;
- Redis: a copy of the first member, its Sentinel off (redis.standalone_copy), then the set's RDB;
- RabbitMQ: a copy of the first member as a new node named after the copy (rabbitmq.standalone_copy),
  then the set's definitions (users, vhosts, queues, policies), its quorum queues made classic
  (put_back.classic_queues: the app copy declares them as phase 1 does). A set is required for that;
- Elasticsearch: a copy of the first member, emptied, as a single node (elasticsearch.standalone_copy).
  As in every phase, the set's snapshot is not restored into it (README "Backup and restore");
- the app: a copy of the gateway's first container (every app container holds the whole built bundle),
  running all eight services with the phase's instance counts.
Each copy's configuration files are what `up` renders for it in the copies' phase (copy_phase: the
copies and the backup container, no cluster, every service on the app copy), written over the ones its
vzdump brought; its firewall comes from the same phase.
"""

from __future__ import annotations

from ...phases import ContainerSpec, Phase
from .. import app, elasticsearch, patroni, postgresql, rabbitmq, redis

STORES = ("postgresql", "redis", "rabbitmq", "elasticsearch")
GATEWAY = "api-gateway"
# The configuration files a standalone copy gets as `up` renders them for the copies' phase (the others,
# packages' and keys', are the same in both layouts)
FILES = (postgresql.CONF, postgresql.HBA, redis.CONF, rabbitmq.CONF, rabbitmq.ENV_CONF, rabbitmq.INETRC,
         rabbitmq.EPMD_DROPIN, elasticsearch.CONF, app.ENV_FILE, app.ECOSYSTEM_FILE)


def applies(phase: Phase) -> bool:
    """The phase's restore is this layout: some of its containers are members of a cluster."""
    return any(c.cluster is not None for c in phase.containers)


def originals(phase: Phase) -> list[ContainerSpec]:
    """The containers the copies start from, in phase order: the first container running each store and
    the first one running the gateway (every service runs on its copy)."""
    wanted = {next(c.vmid for c in phase.containers if store in c.components)
              for store in STORES if phase.with_component(store)}
    gateway = phase.services.get(GATEWAY)
    if gateway is not None:
        wanted.add(gateway.container)
    return [c for c in phase.containers if c.vmid in wanted and "backup" not in c.components]


def missing_from_set(phase: Phase, stores_in_set: set[str] | None) -> list[str]:
    """What a backup set (its stores; None: no set) lacks for these copies: RabbitMQ's definitions (the
    RabbitMQ copy is a new node, with no user for the app until they are imported)."""
    needed = ["rabbitmq"] if phase.with_component(rabbitmq.COMPONENT) else []
    return [s for s in needed if stores_in_set is None or s not in stores_in_set]


def as_copy(phase: Phase, spec: ContainerSpec) -> ContainerSpec:
    """A copy's spec, standalone: no cluster, no virtual IP; the app copy runs every service."""
    update: dict[str, object] = {"cluster": None, "vip": None}
    if "app" in spec.components:
        update["services"] = list(phase.services)
    return spec.model_copy(update=update)


def copy_phase(phase: Phase, copies: list[ContainerSpec]) -> Phase:
    """The phase the copies form (phase 1's layout): the copies, the backup container, every service on
    the app copy, no high availability. What the copies' files and firewalls are rendered from."""
    app_copy = next((c for c in copies if "app" in c.components), None)
    services = ({name: s.model_copy(update={"container": app_copy.vmid, "also_on": []})
                 for name, s in phase.services.items()} if app_copy is not None else {})
    kept = [c for c in phase.containers if "backup" in c.components]
    return phase.model_copy(update={"containers": [*copies, *kept], "services": services,
                                    "high_availability": False})


def before_files(original: ContainerSpec) -> str:
    """Bash on a copy just booted from a member's vzdump, before its files are written: the app stopped
    (PM2 resurrected it with production's environment), each clustered store made standalone."""
    out = f"systemctl stop {app.UNIT} 2>/dev/null || true\n"
    if patroni.patroni_managed(original.components, original.cluster):
        out += patroni.standalone_copy()
    if redis.COMPONENT in original.components and original.cluster is not None:
        out += redis.standalone_copy()
    if elasticsearch.COMPONENT in original.components and original.cluster is not None:
        out += elasticsearch.standalone_copy()
    return out


def after_files(original: ContainerSpec) -> str:
    """Bash once the files are written, before the copy's services restart: systemd reads start.conf
    and epmd's drop-in anew; a RabbitMQ member's copy gets epmd on loopback."""
    out = "systemctl daemon-reload\n"
    if rabbitmq.COMPONENT in original.components and original.cluster is not None:
        out += rabbitmq.standalone_copy()
    return out
