"""Patroni 3.0 (Debian 12's `patroni`) running the phase's PostgreSQL 15 cluster, in Debian's layout.

Debian's convention (patroni's pg_createconfig_patroni and its units): the instance `patroni@15-main`
reads /etc/patroni/15-main.yml; scope `15-main` (the bootstrap and clone scripts split it into version
and cluster), namespace `/postgresql-common/`; data in /var/lib/postgresql/15/main and the server's
config files in /etc/postgresql/15/main as postgresql-common keeps them (so pg_lsclusters still
works), with start.conf `manual` so that the stock `postgresql@15-main` never starts the server
behind Patroni's back. The plain `patroni.service` wants /etc/patroni/config.yml, which stays absent.
"""

from collections.abc import Collection

from ...phases import ContainerSpec, Phase

COMPONENT = "patroni"
PG_VERSION = "15"
PG_CLUSTER = "main"
SCOPE = f"{PG_VERSION}-{PG_CLUSTER}"
NAMESPACE = "/postgresql-common/"
CONFIG = f"/etc/patroni/{SCOPE}.yml"
UNIT = f"patroni@{SCOPE}"
STOCK_UNIT = f"postgresql@{SCOPE}"
# Patroni is no component of its own in the phase file: its files and units are the postgresql
# component's on a cluster member (catalog.CLUSTER_FILES / CLUSTER_SERVICES)
CONFIG_DIR = f"/etc/postgresql/{PG_VERSION}/{PG_CLUSTER}"
START_CONF = f"{CONFIG_DIR}/start.conf"
DATA_DIR = f"/var/lib/postgresql/{PG_VERSION}/{PG_CLUSTER}"
BIN_DIR = f"/usr/lib/postgresql/{PG_VERSION}/bin"
PGPASS = f"/var/lib/postgresql/{SCOPE}.pgpass"
# postgresql-common reads createcluster.d: no stock `main` cluster when postgresql-15 is installed, so a
# new member starts with an empty data directory and Patroni clones it from the leader
CREATECLUSTER = "/etc/postgresql-common/createcluster.d/psa-patroni.conf"
CREATECLUSTER_CONTENT = ("# Managed by psa-provision: Patroni creates or clones this host's cluster.\n"
                         "create_main_cluster = false\n")
# python3-etcd: patroni.dcs.etcd3 builds on the etcd (v2) client module; one of patroni's Depends
PACKAGES = ("patroni", "python3-etcd")
FILES = (CONFIG, START_CONF, CREATECLUSTER)
SECRET_FILES = (CONFIG,)
UNITS = (UNIT, STOCK_UNIT)
TEMPLATES = {CONFIG: "patroni.yml.j2"}
REST_PORT = 8008
PG_PORT = 5432
LEADER_PORT = 5000  # HAProxy: the leader (read-write)
REPLICA_PORT = 5001  # HAProxy: the replicas (read-only)
SUPERUSER = "postgres"
REPLICATION_USER = "replicator"
REWIND_USER = "rewind_user"
RESTAPI_USER = "patroni"


def patroni_managed(components: Collection[str], cluster: str | None) -> bool:
    """A container's PostgreSQL runs under Patroni: it runs `postgresql` as a member of a `cluster`."""
    return "postgresql" in components and cluster is not None


def members(phase: Phase) -> list[ContainerSpec]:
    """The PostgreSQL cluster's members, in phase-file order."""
    return [c for c in phase.containers if patroni_managed(c.components, c.cluster)]


def bootstrap_member(phase: Phase) -> ContainerSpec | None:
    """Who may initialise the cluster: the phase file's first (holding the data in a migration)."""
    found = members(phase)
    return found[0] if found else None


def standalone_copy() -> str:
    """Bash for a copy of a member (a restore's, booted from its vzdump) made a standalone server: Patroni
    stopped, disabled and masked (its file names production's etcd and the member's own name, and it
    must never start there), Patroni's postgresql.conf (its parameters, synchronous_standby_names: a lone
    server would wait for a standby at every commit) replaced by the one it renamed at its first start,
    postgresql.base.conf (Debian's, which reads conf.d), no standby.signal (no primary to follow), and
    the stock postgresql@15-main unmasked and started from start.conf `auto`."""
    base = f"{CONFIG_DIR}/postgresql.base.conf"
    return (f"systemctl disable --now {UNIT} 2>/dev/null || true\nsystemctl mask {UNIT}\n"
            f"[ -f {base} ] || {{ echo '{base} is missing: Patroni never took this server over' >&2\n"
            "  exit 1; }\n"
            f"mv -f {base} {CONFIG_DIR}/postgresql.conf\n"
            f"rm -f {DATA_DIR}/standby.signal\n"
            f"printf 'auto\\n' > {START_CONF}\n"
            f"systemctl unmask {STOCK_UNIT}\n")


def listen_addresses(ip: str) -> str:
    """PostgreSQL's listen_addresses under Patroni (its `postgresql.listen` without the port): the
    member's address, for its peers, the load balancers and the apps, and loopback for Patroni."""
    return f"{ip},127.0.0.1"


def start_mode(text: str) -> str:
    """start.conf's setting: its first line that is neither empty nor a comment (auto, manual, disabled)."""
    return next((ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")), "")
