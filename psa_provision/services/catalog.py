"""Every service's files, directories and units by component: what facts probe and `up` manages.

Built from each service package's identity (services/<name>/__init__.py, stdlib only), so facts.py
can ask which paths to probe without importing planning.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ..plan import MASK
from . import (
    app,
    backup,
    base,
    elasticsearch,
    haproxy,
    nodejs,
    pgbackrest,
    postgresql,
    rabbitmq,
    redis,
    scripts,
)

FILES: dict[str, tuple[str, ...]] = {
    s.COMPONENT: s.FILES
    for s in (base, postgresql, pgbackrest, redis, rabbitmq, elasticsearch, nodejs, app, scripts, haproxy,
              backup)
}
DIRS: dict[str, tuple[str, ...]] = {app.COMPONENT: app.DIRS, elasticsearch.COMPONENT: elasticsearch.DIRS,
                                    pgbackrest.COMPONENT: pgbackrest.DIRS, backup.COMPONENT: backup.DIRS}
SERVICES: dict[str, tuple[str, ...]] = {
    s.COMPONENT: s.UNITS for s in (base, postgresql, redis, rabbitmq, elasticsearch, app, haproxy, backup)
}
# Files whose content never leaves the guest (private keys): facts carry their checksum and mode only.
PRIVATE_FILES = frozenset(pgbackrest.PRIVATE_FILES)
# Files whose content holds a secret: facts carry them with every secret line's value masked (on the
# guest, by SECRET_LINE_SED), so plan can still show a diff of the other lines.
SECRET_FILES = frozenset({*app.SECRET_FILES, *redis.SECRET_FILES})
# A line whose value is a secret: .env's *PASSWORD*/*SECRET* keys, redis.conf's requirepass/masterauth.
_SECRET_LINE = r"^([A-Z0-9_]*(PASSWORD|SECRET)[A-Z0-9_]*=|requirepass[[:space:]]+|masterauth[[:space:]]+).*$"  # noqa: S105 - a pattern
SECRET_LINE_SED = f"s/{_SECRET_LINE}/\\1{MASK}/"


def mask_secret_lines(text: str) -> str:
    """The same masking as SECRET_LINE_SED, for the content the tool renders (compared line by line)."""
    pattern = _SECRET_LINE.replace("[[:space:]]", r"\s")
    return re.sub(pattern, lambda m: m.group(1) + MASK, text, flags=re.M)


def managed_files(components: Iterable[str], extra: Iterable[str] = ()) -> list[str]:
    """Every file path the given components manage (plus `extra`, e.g. CA certificates), sorted."""
    out = {p for c in components for p in FILES.get(c, ())}
    return sorted(out | set(extra))


def managed_dirs(components: Iterable[str]) -> list[str]:
    return sorted({d for c in components for d in DIRS.get(c, ())})


def managed_services(components: Iterable[str]) -> list[str]:
    return sorted({s for c in components for s in SERVICES.get(c, ())})
