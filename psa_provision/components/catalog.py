"""What each guest component manages: files, directories, services, packages (shared by facts + planning).

Leaf module (stdlib only) so that facts.py can ask which paths to probe without importing planning.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ..plan import MASK

APP_DIR = "/opt/psa-platform"
APP_USER = "psa"
APP_HOME = "/home/psa"
ENV_FILE = f"{APP_DIR}/.env"
ECOSYSTEM_FILE = f"{APP_DIR}/ecosystem.config.js"
BUNDLE_STAMP = f"{APP_DIR}/.bundle-sha256"
# The .env the PM2 apps were last (re)loaded with: per variable an HMAC of name=value (no value can be
# read back from it), written after each start/reload; `up` compares it with the rendered .env.
ENV_STAMP = f"{APP_DIR}/.env-loaded"
PG_VERSION = "15"
PG_CONF_DIR = f"/etc/postgresql/{PG_VERSION}/main"
ES_BACKUP_DIR = f"{APP_DIR}/backups/elasticsearch"
CA_DIR = "/usr/local/share/ca-certificates"
KEYRINGS = "/etc/apt/keyrings"

FILES: dict[str, tuple[str, ...]] = {
    "base": ("/etc/apt/apt.conf.d/01psa-proxy",),
    "postgresql": (f"{PG_CONF_DIR}/conf.d/psa.conf", f"{PG_CONF_DIR}/pg_hba.conf"),
    "redis": ("/etc/redis/redis.conf",),
    "rabbitmq": (
        "/etc/rabbitmq/rabbitmq.conf", "/etc/rabbitmq/enabled_plugins", "/etc/rabbitmq/rabbitmq-env.conf",
        "/etc/rabbitmq/erl_inetrc", "/etc/systemd/system/epmd.socket.d/psa-loopback.conf",
    ),
    "elasticsearch": (
        "/etc/elasticsearch/elasticsearch.yml", "/etc/elasticsearch/jvm.options.d/heap.options",
        "/etc/apt/sources.list.d/elastic-8.x.list", f"{KEYRINGS}/elastic.asc",
    ),
    "nodejs": ("/etc/apt/sources.list.d/nodesource.list", f"{KEYRINGS}/nodesource.asc"),
    "app": (ENV_FILE, ECOSYSTEM_FILE, "/etc/systemd/system/pm2-psa.service", BUNDLE_STAMP, ENV_STAMP),
    "scripts": ("/usr/local/bin/health-check.sh", "/usr/local/bin/backup-psa.sh", "/etc/cron.d/psa-backup"),
    "haproxy": (),
}
# Files whose content holds a secret: facts carry them with every secret line's value masked (on the
# guest, by SECRET_LINE_SED), so plan can still show a diff of the other lines.
SECRET_FILES = frozenset({ENV_FILE, "/etc/redis/redis.conf"})
# A line whose value is a secret: .env's *PASSWORD*/*SECRET* keys, redis.conf's requirepass/masterauth.
_SECRET_LINE = r"^([A-Z0-9_]*(PASSWORD|SECRET)[A-Z0-9_]*=|requirepass[[:space:]]+|masterauth[[:space:]]+).*$"  # noqa: S105 - a pattern
SECRET_LINE_SED = f"s/{_SECRET_LINE}/\\1{MASK}/"


def mask_secret_lines(text: str) -> str:
    """The same masking as SECRET_LINE_SED, for the content the tool renders (compared line by line)."""
    pattern = _SECRET_LINE.replace("[[:space:]]", r"\s")
    return re.sub(pattern, lambda m: m.group(1) + MASK, text, flags=re.M)


# Which stores each PM2 app of the bundle uses (psa_provision/data/psa-platform/README.md, "stores" and
# "Configuration"; read from services/*/src/index.ts): a changed store setting or password reloads
# only these apps, the others keep running untouched.
APP_STORES: dict[str, tuple[str, ...]] = {
    "api-gateway": (),
    "auth": ("postgresql", "redis"),
    "crm": ("postgresql",),
    "tickets": ("postgresql", "redis", "rabbitmq", "elasticsearch"),
    "billing": ("postgresql", "rabbitmq"),
    "projects": ("postgresql",),
    "assets": ("postgresql",),
    "reports": ("postgresql", "elasticsearch"),
}
# The .env variables of each store (by prefix) and those only some apps read; any other variable
# (NODE_ENV, JWT_SECRET, LOG_LEVEL, one not listed here) counts as read by every app.
STORE_ENV_PREFIX: dict[str, str] = {
    "postgresql": "POSTGRES_", "redis": "REDIS_", "rabbitmq": "RABBITMQ_", "elasticsearch": "ELASTICSEARCH_",
}
ENV_ONLY_FOR: tuple[tuple[str, frozenset[str]], ...] = (
    (r"^APP_ADMIN_", frozenset({"auth"})),
    (r"^GATEWAY_BIND$|_SERVICE_URL$", frozenset({"api-gateway"})),
    (r"^SERVICE_BIND$", frozenset(APP_STORES) - {"api-gateway"}),
)

# The .env variable each secret (secrets file key) becomes (templates/env.j2); rabbitmq.admin_password
# stays in RabbitMQ (no app reads it).
SECRET_ENV: dict[str, str] = {
    "postgresql.app_password": "POSTGRES_PASSWORD", "redis.password": "REDIS_PASSWORD",
    "rabbitmq.app_password": "RABBITMQ_PASSWORD", "app.jwt_secret": "JWT_SECRET",
    "app.admin_password": "APP_ADMIN_PASSWORD", "app.admin_email": "APP_ADMIN_EMAIL",
}


def env_readers(variable: str, apps: Iterable[str]) -> set[str]:
    """The apps (of `apps`) that read this .env variable; an app not in APP_STORES reads everything."""
    apps = set(apps)
    unknown = apps - set(APP_STORES)
    for store, prefix in STORE_ENV_PREFIX.items():
        if variable.startswith(prefix):
            return {a for a in apps if store in APP_STORES.get(a, ())} | unknown
    for pattern, readers in ENV_ONLY_FOR:
        if re.search(pattern, variable):
            return (apps & readers) | unknown
    return apps


DIRS: dict[str, tuple[str, ...]] = {
    "app": (
        APP_DIR, f"{APP_DIR}/services", f"{APP_DIR}/shared", f"{APP_DIR}/logs", f"{APP_DIR}/logs/services",
        f"{APP_DIR}/backups", f"{APP_DIR}/data",
    ),
    "elasticsearch": (ES_BACKUP_DIR,),
}

SERVICES: dict[str, tuple[str, ...]] = {
    "base": ("cron",),
    "postgresql": ("postgresql",),
    "redis": ("redis-server",),
    "rabbitmq": ("rabbitmq-server",),
    "elasticsearch": ("elasticsearch",),
    "app": ("pm2-psa",),
    "haproxy": ("haproxy",),
}


def managed_files(components: Iterable[str], extra: Iterable[str] = ()) -> list[str]:
    """Every file path the given components manage (plus `extra`, e.g. CA certificates), sorted."""
    out = {p for c in components for p in FILES.get(c, ())}
    return sorted(out | set(extra))


def managed_dirs(components: Iterable[str]) -> list[str]:
    return sorted({d for c in components for d in DIRS.get(c, ())})


def managed_services(components: Iterable[str]) -> list[str]:
    return sorted({s for c in components for s in SERVICES.get(c, ())})
