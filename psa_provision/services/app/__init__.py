"""The bundled app: user psa, /opt/psa-platform, .env, ecosystem, the bundle, PM2 under systemd.

Which stores each PM2 app uses (APP_STORES) decides which apps a changed .env value reloads.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

COMPONENT = "app"
APP_DIR = "/opt/psa-platform"
APP_USER = "psa"
APP_HOME = "/home/psa"
PM2_HOME = f"{APP_HOME}/.pm2"
ENV_FILE = f"{APP_DIR}/.env"
ECOSYSTEM_FILE = f"{APP_DIR}/ecosystem.config.js"
BUNDLE_STAMP = f"{APP_DIR}/.bundle-sha256"
# The .env the PM2 apps were last (re)loaded with: per variable an HMAC of name=value (no value can be
# read back from it), written after each start/reload; `up` compares it with the rendered .env.
ENV_STAMP = f"{APP_DIR}/.env-loaded"
UNIT_FILE = "/etc/systemd/system/pm2-psa.service"
UNIT = "pm2-psa"
FILES = (ENV_FILE, ECOSYSTEM_FILE, UNIT_FILE, BUNDLE_STAMP, ENV_STAMP)
SECRET_FILES = (ENV_FILE,)
DIRS = (APP_DIR, f"{APP_DIR}/services", f"{APP_DIR}/shared", f"{APP_DIR}/logs", f"{APP_DIR}/logs/services",
        f"{APP_DIR}/backups", f"{APP_DIR}/data")
ROOT_OWNED_DIRS = frozenset({f"{APP_DIR}/backups"})
UNITS = (UNIT,)
TEMPLATES = {ENV_FILE: "env.j2", ECOSYSTEM_FILE: "ecosystem.config.js.j2", UNIT_FILE: "pm2-psa.service.j2"}

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
