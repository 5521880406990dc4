"""Redis 7 (Debian 12's redis-server): one full redis.conf with requirepass, maxmemory, AOF + RDB."""

COMPONENT = "redis"
CONF = "/etc/redis/redis.conf"
PACKAGES = ("redis-server", "redis-tools")
UNIT = "redis-server"
FILES = (CONF,)
UNITS = (UNIT,)
SECRET_FILES = (CONF,)  # requirepass (and masterauth while a mover replicates)
TEMPLATES = {CONF: "redis.conf.j2"}
SECRET = "redis.password"  # noqa: S105 - the key of the secret, not its value
PORT = 6379
