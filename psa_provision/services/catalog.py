"""Every service's files, directories and units by component: what facts probe and `up` manages.

Built from each service package's identity (services/<name>/__init__.py, stdlib only), so facts.py
can ask which paths to probe without importing planning.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ..changes import MASK
from . import (
    app,
    backup,
    base,
    elasticsearch,
    etcd,
    haproxy,
    keepalived,
    nodejs,
    patroni,
    pgbackrest,
    postgresql,
    rabbitmq,
    redis,
    scripts,
)

FILES: dict[str, tuple[str, ...]] = {
    s.COMPONENT: s.FILES
    for s in (base, etcd, postgresql, pgbackrest, redis, rabbitmq, elasticsearch, nodejs, app, scripts,
              haproxy, keepalived, backup)
}
DIRS: dict[str, tuple[str, ...]] = {app.COMPONENT: app.DIRS, elasticsearch.COMPONENT: elasticsearch.DIRS,
                                    pgbackrest.COMPONENT: pgbackrest.DIRS, backup.COMPONENT: backup.DIRS}
SERVICES: dict[str, tuple[str, ...]] = {
    s.COMPONENT: s.UNITS
    for s in (base, etcd, postgresql, redis, rabbitmq, elasticsearch, app, haproxy, keepalived, backup)
}
# A member of a cluster (`cluster` in the phase file) also has these (Sentinel, the Erlang cookie,
# Patroni's files and units beside PostgreSQL).
CLUSTER_FILES: dict[str, tuple[str, ...]] = {redis.COMPONENT: redis.CLUSTER_FILES,
                                             rabbitmq.COMPONENT: rabbitmq.CLUSTER_FILES,
                                             postgresql.COMPONENT: patroni.FILES}
CLUSTER_SERVICES: dict[str, tuple[str, ...]] = {redis.COMPONENT: redis.CLUSTER_UNITS,
                                                postgresql.COMPONENT: patroni.UNITS}
# Files whose content the facts never read (checksum, mode and owner only): the Erlang cookie, private keys.
OPAQUE_FILES = frozenset({*rabbitmq.OPAQUE_FILES, *pgbackrest.PRIVATE_FILES})
# Files whose content holds a secret: facts carry them with every secret line's value masked (on the
# guest, by SECRET_LINE_SED), so plan can still show a diff of the other lines.
SECRET_FILES = frozenset({*app.SECRET_FILES, *redis.SECRET_FILES, *patroni.SECRET_FILES, *OPAQUE_FILES,
                          *keepalived.SECRET_FILES})
# A line whose value is a secret: .env's *PASSWORD*/*SECRET* keys, redis.conf's requirepass/masterauth,
# sentinel.conf's auth-pass and the ACL `user` line CONFIG REWRITE adds (it holds the password's hash),
# Patroni's YAML `password:` keys, keepalived.conf's auth_pass.
_SECRET_LINE = (r"^([A-Z0-9_]*(PASSWORD|SECRET)[A-Z0-9_]*=|requirepass[[:space:]]+|masterauth[[:space:]]+"  # noqa: S105
                r"|sentinel[[:space:]]+auth-pass[[:space:]]+[^[:space:]]+[[:space:]]+|user[[:space:]]+"
                r"|[[:space:]]*password:[[:space:]]*|[[:space:]]*auth_pass[[:space:]]+).*$")
SECRET_LINE_SED = f"s/{_SECRET_LINE}/\\1{MASK}/"


def mask_secret_lines(text: str) -> str:
    """The same masking as SECRET_LINE_SED, for the content the tool renders (compared line by line)."""
    pattern = _SECRET_LINE.replace("[^[:space:]]", r"\S").replace("[[:space:]]", r"\s")
    return re.sub(pattern, lambda m: m.group(1) + MASK, text, flags=re.M)


def managed_files(components: Iterable[str], extra: Iterable[str] = (), *,
                  clustered: bool = False) -> list[str]:
    """Every file path the given components manage (plus `extra`, e.g. CA certificates), sorted;
    clustered: the container is a cluster member (its cluster files too)."""
    components = list(components)
    out = {p for c in components for p in FILES.get(c, ())}
    if clustered:
        out |= {p for c in components for p in CLUSTER_FILES.get(c, ())}
    return sorted(out | set(extra))


def managed_dirs(components: Iterable[str]) -> list[str]:
    return sorted({d for c in components for d in DIRS.get(c, ())})


def managed_services(components: Iterable[str], *, clustered: bool = False) -> list[str]:
    components = list(components)
    extra = {s for c in components for s in CLUSTER_SERVICES.get(c, ())} if clustered else set()
    return sorted({s for c in components for s in SERVICES.get(c, ())} | extra)
