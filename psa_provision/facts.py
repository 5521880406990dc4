"""Guest facts: one bash script, one SSH round trip, one JSON document, parsed into GuestFacts.

The script is read-only and works on a fresh guest (nothing installed): PostgreSQL, RabbitMQ and
PM2 are asked only when present and running (their probes live with their services:
services/<name>/facts.py). Free text travels base64-encoded inside the JSON so
the script needs nothing beyond coreutils. Facts hold no secrets: files listed in
catalog.SECRET_FILES come back as checksums only, a phase-3 Redis's passwords as salted digests
(services/redis/passwords.py); PM2's process list is reduced to name/status.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .errors import GuestError
from .phases import ContainerSpec
from .secrets import Secrets
from .sensitive import Sensitive
from .services import base, catalog, postgresql, redis
from .services.app import facts as app_facts
from .services.app.facts import Pm2App
from .services.parse import seconds
from .services.postgresql import facts as postgresql_facts
from .services.postgresql.facts import PgRole, PostgresFacts
from .services.rabbitmq import facts as rabbitmq_facts
from .services.rabbitmq.facts import RabbitFacts
from .services.redis import topology as redis_topology
from .services.redis.topology import RedisFacts

__all__ = ["DirFact", "FileFact", "GuestFacts", "PgRole", "Pm2App", "PostgresFacts", "RabbitFacts",
           "RedisFacts", "ServiceFact", "fresh", "gather_input", "gather_script", "parse_guest_facts"]

FACTS_VERSION = 2


@dataclass(frozen=True)
class FileFact:
    """A file on the guest: checksum, mode (int), owner, group; content only for non-secret files."""

    path: str
    sha256: str
    mode: int
    owner: str
    group: str
    content: str | None = None
    mtime: float = 0.0  # epoch seconds of the last write, to the microsecond (0: unknown)


@dataclass(frozen=True)
class DirFact:
    path: str
    mode: int
    owner: str
    group: str


@dataclass(frozen=True)
class ServiceFact:
    name: str
    active: bool
    enabled: bool
    # epoch seconds it last became active, to the microsecond: whole seconds made a file written in
    # the second the unit started look older than the start (0: unknown or not active)
    since: float = 0.0
    state: str = ""  # systemd's ActiveState: active, failed, inactive, activating, ...


@dataclass(frozen=True)
class GuestFacts:
    """Everything planning needs to know about one guest (absent = not installed / not there)."""

    hostname: str = ""
    os_id: str = ""
    os_version: str = ""
    packages: dict[str, str] = field(default_factory=dict)  # installed packages -> version
    files: dict[str, FileFact] = field(default_factory=dict)
    dirs: dict[str, DirFact] = field(default_factory=dict)
    services: dict[str, ServiceFact] = field(default_factory=dict)
    users: frozenset[str] = frozenset()
    npm_globals: frozenset[str] = frozenset()
    postgres: PostgresFacts | None = None
    rabbitmq: RabbitFacts | None = None
    redis: RedisFacts | None = None  # replication state, asked of cluster members only
    pm2: list[Pm2App] | None = None  # None: pm2 daemon not running (or not installed)
    # per app, how many processes `pm2 resurrect` would start at boot (None: not known)
    pm2_saved: dict[str, int] | None = None
    bundle_checksum: str | None = None

    def service_ok(self, name: str) -> bool:
        s = self.services.get(name)
        return bool(s and s.active and s.enabled)


def gather_input(secrets: Secrets) -> Sensitive:
    """The gather script's stdin (so the script rides argv): one line, RabbitMQ's management API
    credentials as a curl config line when the secrets hold them, else empty."""
    return rabbitmq_facts.facts_input(secrets)


def gather_script(spec: ContainerSpec, databases: tuple[str, ...] = (postgresql.DATABASE,), *,
                  apps: Mapping[str, int] | None = None) -> str:
    """The read-only bash script that prints this guest's facts as one JSON document; its stdin is
    gather_input's. `apps`: the PM2 processes the phase runs here (app_facts.processes), which a
    converged guest's facts then read without a Node.js."""
    clustered = spec.cluster is not None
    files = catalog.managed_files(spec.components, clustered=clustered)
    dirs = catalog.managed_dirs(spec.components)
    services = catalog.managed_services(spec.components, clustered=clustered)
    secret = [p for p in files if p in catalog.SECRET_FILES]
    opaque = [p for p in files if p in catalog.OPAQUE_FILES]
    cluster_start = rabbitmq_facts.CLUSTER_START if clustered else ""
    cluster_read = rabbitmq_facts.CLUSTER_READ if clustered else ""
    if clustered and redis.COMPONENT in spec.components:
        cluster_read += redis_topology.probe(redis.CONF, redis.SENTINEL_CONF, redis.UNIT, redis.SENTINEL_UNIT,
                                             redis.MASTER_NAME)
    q = shlex.quote
    return f"""#!/bin/bash
# psa-provision facts (read-only). Prints one JSON document.
set -u
export LC_ALL=C
b64() {{ base64 -w0; }}
FILES=({' '.join(q(f) for f in files)})
SECRET=({' '.join(q(f) for f in secret)})
OPAQUE=({' '.join(q(f) for f in opaque)})
DIRS=({' '.join(q(d) for d in dirs)})
SERVICES=({' '.join(q(s) for s in services)})
is_secret() {{ local s; for s in "${{SECRET[@]}}"; do [ "$s" = "$1" ] && return 0; done; return 1; }}
is_opaque() {{ local s; for s in "${{OPAQUE[@]}}"; do [ "$s" = "$1" ] && return 0; done; return 1; }}
# stdin: gather_input's one line, read before anything else; the probes then read /dev/null
{rabbitmq_facts.AUTH_READ}{{
# The slow probes (rabbitmqctl boots an Erlang VM, pm2 a Node.js) start now, side by side, and are
# read where their JSON field goes: the facts cost the slowest probe, not their sum.
{rabbitmq_facts.START}{cluster_start}{app_facts.start(apps or {})}\
printf '{{"version":{FACTS_VERSION},"hostname":"%s"' "$(hostname)"
printf ',"os_release":"%s"' "$(cat /etc/os-release 2>/dev/null | b64)"
printf ',"packages":"%s"' \\
  "$(dpkg-query -W -f='${{db:Status-Abbrev}}\\t${{Package}}\\t${{Version}}\\n' 2>/dev/null | b64)"
# every file present: checksums and modes in one sha256sum and one stat, then each content
have=()
for f in "${{FILES[@]}}" {base.CA_DIR}/psa-*.crt; do [ -f "$f" ] && have+=("$f"); done
if [ ${{#have[@]}} -gt 0 ]; then
  printf ',"file_sums":"%s"' "$(sha256sum -- "${{have[@]}}" | b64)"
  printf ',"file_stats":"%s"' "$(stat -c '%a %U %G %.6Y %n' -- "${{have[@]}}" | b64)"
fi
printf ',"files":['
sep=""
for f in "${{have[@]}}"; do
  if is_opaque "$f"; then content=""
  elif is_secret "$f"; then content="$(sed -E {q(catalog.SECRET_LINE_SED)} "$f" | b64)"
  else content="$(b64 < "$f")"; fi
  printf '%s{{"path":"%s","content":"%s"}}' "$sep" "$f" "$content"
  sep=","
done
dirs=()
for d in "${{DIRS[@]}}"; do [ -d "$d" ] && dirs+=("$d"); done
printf '],"dirs":"%s"' "$( [ ${{#dirs[@]}} -gt 0 ] && stat -c '%n %a %U %G' -- "${{dirs[@]}}" | b64)"
# one systemctl for every unit: a block per unit, in the order asked, times in UTC to the microsecond
printf ',"service_names":"%s"' "$(printf '%s\\n' "${{SERVICES[@]}}" | b64)"
printf ',"services":"%s"' "$(TZ=UTC systemctl show --timestamp=us -p ActiveState -p UnitFileState \\
  -p ActiveEnterTimestamp -- "${{SERVICES[@]}}" 2>/dev/null | b64)"
printf ',"users":"%s"' "$(cut -d: -f1 /etc/passwd | b64)"
printf ',"npm_globals":"%s"' \\
  "$(for d in /usr/lib/node_modules /usr/local/lib/node_modules; do ls "$d" 2>/dev/null; done | b64)"
{postgresql_facts.probe(databases)}{rabbitmq_facts.READ}{cluster_read}{app_facts.READ}printf '}}\\n'
}} </dev/null
"""


def _text(doc: dict[str, Any], key: str) -> str:
    raw = doc.get(key) or ""
    try:
        return base64.b64decode(raw).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        raise GuestError(f"facts: field {key} is not base64") from None


def _os(text: str) -> tuple[str, str]:
    kv = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    return kv.get("ID", "").strip('"'), kv.get("VERSION_ID", "").strip('"')


def _packages(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[0].startswith("ii"):
            out[parts[1].split(":")[0]] = parts[2]
    return out


def _files(doc: dict[str, Any]) -> dict[str, FileFact]:
    """Files from `sha256sum` lines, `stat -c '%a %U %G %.6Y %n'` lines and the content entries."""
    sums = {line[66:]: line[:64] for line in _text(doc, "file_sums").splitlines() if len(line) > 66}
    split = (line.split(" ", 4) for line in _text(doc, "file_stats").splitlines())
    stats = {parts[4]: parts[:4] for parts in split if len(parts) == 5}
    out: dict[str, FileFact] = {}
    for entry in doc.get("files", []):
        path, content = str(entry["path"]), entry.get("content")
        if path not in sums or path not in stats:  # removed while the facts were read: absent
            continue
        mode, owner, group, mtime = stats[path]
        out[path] = FileFact(
            path=path, sha256=sums[path], mode=int(mode, 8), owner=owner, group=group, mtime=seconds(mtime),
            content=base64.b64decode(content).decode("utf-8", "replace") if content else (
                None if path in catalog.SECRET_FILES else ""),
        )
    return out


def _dirs(text: str) -> dict[str, DirFact]:
    out: dict[str, DirFact] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 4:
            out[parts[0]] = DirFact(parts[0], int(parts[1], 8), parts[2], parts[3])
    return out


def _services(names: str, text: str) -> dict[str, ServiceFact]:
    """`systemctl show -p ActiveState -p UnitFileState -p ActiveEnterTimestamp` of the units `names` (one
    per line): one block of key=value lines per unit, in that order, blocks apart by a blank line."""
    units = names.split()
    blocks = [dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
              for block in text.split("\n\n") if block.strip()]
    if len(blocks) != len(units):
        raise GuestError(f"facts: systemctl described {len(blocks)} units, asked about {len(units)}",
                         hint="is systemd running in the container? (`systemctl show` answers per unit)")
    out: dict[str, ServiceFact] = {}
    for name, props in zip(units, blocks, strict=True):
        active = props.get("ActiveState") == "active"
        enabled = props.get("UnitFileState") in ("enabled", "static", "alias")
        since = _utc_timestamp(props.get("ActiveEnterTimestamp", "")) if active else 0.0
        out[name] = ServiceFact(name, active, enabled, since, props.get("ActiveState", ""))
    return out


def _utc_timestamp(text: str) -> float:
    """systemd's `--timestamp=us` under TZ=UTC, e.g. `Fri 2026-11-27 13:48:59.410443 UTC` (0.0: none)."""
    parts = text.split()
    if len(parts) != 4 or parts[3] != "UTC":
        return 0.0
    try:
        at = datetime.strptime(f"{parts[1]} {parts[2]}", "%Y-%m-%d %H:%M:%S.%f")
    except ValueError:
        return 0.0
    return at.replace(tzinfo=UTC).timestamp()


def parse_guest_facts(stdout: str) -> GuestFacts:
    """Parse the gather script's output (GuestError if it is not the expected JSON)."""
    try:
        doc = json.loads(stdout.strip().splitlines()[-1] if stdout.strip() else "")
    except (json.JSONDecodeError, IndexError):
        raise GuestError("facts: the gather script did not print one JSON document",
                         hint="run it by hand on the guest to see its error") from None
    if not isinstance(doc, dict) or doc.get("version") != FACTS_VERSION:
        version = doc.get("version") if isinstance(doc, dict) else "?"
        raise GuestError(f"facts: unexpected document version {version}")
    os_id, os_version = _os(_text(doc, "os_release"))
    try:
        rabbit = rabbitmq_facts.parse(_text(doc, "rabbitmq")) if "rabbitmq" in doc else None
        if rabbit is not None and "rabbitmq_cluster" in doc:
            status = rabbitmq_facts.parse_cluster(_text(doc, "rabbitmq_cluster"))
            rabbit = dataclasses.replace(rabbit, cluster=status)
        pm2, saved = app_facts.parse(_text(doc, "pm2")) if "pm2" in doc else (None, None)
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise GuestError(f"facts: malformed rabbitmq/pm2 section: {exc}") from None
    redis_facts = redis_topology.parse(_text(doc, "redis")) if "redis" in doc else None
    return GuestFacts(
        hostname=str(doc.get("hostname", "")),
        os_id=os_id, os_version=os_version,
        packages=_packages(_text(doc, "packages")),
        files=_files(doc),
        dirs=_dirs(_text(doc, "dirs")),
        services=_services(_text(doc, "service_names"), _text(doc, "services")),
        users=frozenset(_text(doc, "users").split()),
        npm_globals=frozenset(_text(doc, "npm_globals").split()),
        postgres=postgresql_facts.parse(_text(doc, "postgres")) if "postgres" in doc else None,
        rabbitmq=rabbit,
        redis=redis_facts,
        pm2=pm2,
        pm2_saved=saved,
        bundle_checksum=str(doc.get("bundle_checksum") or "") or None,
    )


def fresh() -> GuestFacts:
    """Facts of a guest where nothing is installed yet (for `plan` before the container exists)."""
    return GuestFacts()
