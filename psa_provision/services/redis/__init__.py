"""Redis 7 (Debian 12's redis-server): one full redis.conf with requirepass, maxmemory, AOF + RDB.

A container with a `cluster` in the phase file is one of a replicated set: a primary and replicas,
with a Sentinel (Debian 12's redis-sentinel) beside each (services/redis/sentinel.py).
"""

COMPONENT = "redis"
CONF = "/etc/redis/redis.conf"
PACKAGES = ("redis-server", "redis-tools")
UNIT = "redis-server"
FILES = (CONF,)
UNITS = (UNIT,)
TEMPLATES = {CONF: "redis.conf.j2"}
SECRET = "redis.password"  # noqa: S105 - the key of the secret, not its value
PORT = 6379

# Sentinel (phase 3): one per member, quorum 2 of 3; Sentinel rewrites its own file at runtime.
SENTINEL_CONF = "/etc/redis/sentinel.conf"
SENTINEL_PACKAGES = ("redis-sentinel",)
SENTINEL_UNIT = "redis-sentinel"
SENTINEL_PORT = 26379
SENTINEL_TEMPLATE = "sentinel.conf.j2"
MASTER_NAME = "psa-redis"  # the name Sentinel monitors the primary by (the app asks for it)
QUORUM = 2
DOWN_AFTER_MS = 5000
FAILOVER_TIMEOUT_MS = 60000
MIN_REPLICAS_TO_WRITE = 1
MIN_REPLICAS_MAX_LAG = 10  # seconds
CLUSTER_FILES = (SENTINEL_CONF,)
CLUSTER_UNITS = (SENTINEL_UNIT,)
SECRET_FILES = (CONF, SENTINEL_CONF)  # requirepass, masterauth, sentinel auth-pass
# The mode Redis and Sentinel give their files on every rewrite (CONFIG REWRITE, each Sentinel state
# change): config.c's rewriteConfigOverwriteFile does fchmod(0644 & ~umask), and Debian's units run
# with UMask=007, so 0640; the tool writes the same, or every rewrite would be drift to `up`.
CLUSTER_MODE = 0o640


def standalone_copy() -> str:
    """Bash for a copy of a replicated member (a restore's) made a standalone Redis: its Sentinel stopped
    and disabled (it would watch and reconfigure a set that is not there); redis.conf is replaced with a
    standalone's by the restore, which restarts Redis."""
    return f"systemctl disable --now {SENTINEL_UNIT} 2>/dev/null || true\n"
