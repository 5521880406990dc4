"""Guest facts: one bash script, one SSH round trip, one JSON document, parsed into GuestFacts.

The script is read-only and works on a fresh guest (nothing installed): PostgreSQL, RabbitMQ and
PM2 are asked only when present and running. Free text travels base64-encoded inside the JSON so
the script needs nothing beyond coreutils. Facts hold no secrets: files listed in
catalog.SECRET_FILES come back as checksums only; PM2's process list is reduced to name/status.
"""

from __future__ import annotations

import base64
import binascii
import json
import shlex
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .components import catalog
from .errors import GuestError
from .phases import ContainerSpec

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


@dataclass(frozen=True)
class PgRole:
    name: str
    login: bool
    superuser: bool
    password_verifier: str  # pg_authid.rolpassword (SCRAM verifier), "" if none


@dataclass(frozen=True)
class PostgresFacts:
    roles: dict[str, PgRole] = field(default_factory=dict)
    databases: dict[str, str] = field(default_factory=dict)  # name -> owner
    extensions: dict[str, frozenset[str]] = field(default_factory=dict)  # db -> extension names
    default_acls: dict[str, frozenset[str]] = field(default_factory=dict)  # db -> {"r", "S"} for psa_app
    settings: dict[str, str] = field(default_factory=dict)
    conf_loaded: float = 0.0  # epoch seconds of the last (re)load of its config files (0: unknown)


@dataclass(frozen=True)
class RabbitFacts:
    users: dict[str, frozenset[str]] = field(default_factory=dict)  # name -> tags
    permissions: dict[tuple[str, str], tuple[str, str, str]] = field(default_factory=dict)  # (vhost,user)


@dataclass(frozen=True)
class Pm2App:
    name: str
    status: str
    instances: int
    started: float = 0.0  # epoch seconds its oldest process was (re)started (0: unknown)


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
    pm2: list[Pm2App] | None = None  # None: pm2 daemon not running (or not installed)
    # per app, how many processes `pm2 resurrect` would start at boot (None: not known)
    pm2_saved: dict[str, int] | None = None
    bundle_checksum: str | None = None

    def service_ok(self, name: str) -> bool:
        s = self.services.get(name)
        return bool(s and s.active and s.enabled)


_PG_SQL = r"""
SELECT 'role', rolname, rolcanlogin, rolsuper, coalesce(rolpassword, '') FROM pg_authid;
SELECT 'db', datname, pg_get_userbyid(datdba) FROM pg_database WHERE datallowconn;
SELECT 'setting', name, setting FROM pg_settings WHERE name IN
  ('listen_addresses','port','max_connections','shared_buffers','effective_cache_size',
   'maintenance_work_mem','work_mem','random_page_cost','effective_io_concurrency',
   'log_min_duration_statement','password_encryption');
SELECT 'loaded', extract(epoch FROM pg_conf_load_time());
"""
_PG_DB_SQL = r"""
SELECT 'ext', current_database(), extname FROM pg_extension;
SELECT 'defacl', current_database(), defaclobjtype FROM pg_default_acl d
  JOIN pg_namespace n ON n.oid = d.defaclnamespace
  WHERE n.nspname = 'public' AND array_to_string(d.defaclacl, ',') LIKE '%psa_app=%';
"""
# `pm2 jlist` on stdin reduced to name/status/start of each process, and the names in dump.pm2 (argv[1]:
# what `pm2 resurrect` restores at boot, written by `pm2 save`), in one Node.js start
_PM2_FILTER = (
    "const fs=require('fs');let s='';process.stdin.on('data',d=>s+=d).on('end',()=>{"
    "const a=JSON.parse(s||'[]');let d=[];try{d=JSON.parse(fs.readFileSync(process.argv[1]))}catch(e){}"
    "console.log(JSON.stringify({running:a.map(p=>({name:p.name,status:p.pm2_env.status,"
    "started:p.pm2_env.pm_uptime})),saved:(Array.isArray(d)?d:[]).map(p=>p.name)}))})"
)
# RabbitMQ's definitions (users with tags, permissions: one Erlang VM start) without the password hashes
_RABBIT_NO_HASH = r's/"password_hash":"[^"]*"/"password_hash":""/g'


def gather_script(spec: ContainerSpec, databases: tuple[str, ...] = ("psa_platform",)) -> str:
    """The read-only bash script that prints this guest's facts as one JSON document."""
    files = catalog.managed_files(spec.components)
    dirs = catalog.managed_dirs(spec.components)
    services = catalog.managed_services(spec.components)
    secret = [p for p in files if p in catalog.SECRET_FILES]
    q = shlex.quote
    return f"""#!/bin/bash
# psa-provision facts (read-only). Prints one JSON document.
set -u
export LC_ALL=C
b64() {{ base64 -w0; }}
FILES=({' '.join(q(f) for f in files)})
SECRET=({' '.join(q(f) for f in secret)})
DIRS=({' '.join(q(d) for d in dirs)})
SERVICES=({' '.join(q(s) for s in services)})
is_secret() {{ local s; for s in "${{SECRET[@]}}"; do [ "$s" = "$1" ] && return 0; done; return 1; }}
# One group read whole before it runs, stdin /dev/null: no command can eat a script fed on stdin.
{{
# The slow probes (rabbitmqctl boots an Erlang VM, pm2 a Node.js) start now, side by side, and are
# read where their JSON field goes: the facts cost the slowest probe, not their sum.
rabbit=""
if command -v rabbitmqctl >/dev/null && systemctl is-active -q rabbitmq-server 2>/dev/null; then
  rabbit=1
  exec 4< <(rabbitmqctl -q export_definitions - --format json 2>/dev/null | sed {q(_RABBIT_NO_HASH)} | b64)
fi
pm2=""
if id {catalog.APP_USER} >/dev/null 2>&1 && [ -f {catalog.APP_HOME}/.pm2/pm2.pid ] \\
   && kill -0 "$(cat {catalog.APP_HOME}/.pm2/pm2.pid)" 2>/dev/null && command -v pm2 >/dev/null; then
  pm2=1
  exec 6< <(cd / && runuser -u {catalog.APP_USER} -- env HOME={catalog.APP_HOME} \\
    PM2_HOME={catalog.APP_HOME}/.pm2 pm2 jlist 2>/dev/null \\
    | node -e {q(_PM2_FILTER)} {catalog.APP_HOME}/.pm2/dump.pm2 2>/dev/null | b64)
fi
printf '{{"version":{FACTS_VERSION},"hostname":"%s"' "$(hostname)"
printf ',"os_release":"%s"' "$(cat /etc/os-release 2>/dev/null | b64)"
printf ',"packages":"%s"' \\
  "$(dpkg-query -W -f='${{db:Status-Abbrev}}\\t${{Package}}\\t${{Version}}\\n' 2>/dev/null | b64)"
# every file present: checksums and modes in one sha256sum and one stat, then each content
have=()
for f in "${{FILES[@]}}" {catalog.CA_DIR}/psa-*.crt; do [ -f "$f" ] && have+=("$f"); done
if [ ${{#have[@]}} -gt 0 ]; then
  printf ',"file_sums":"%s"' "$(sha256sum -- "${{have[@]}}" | b64)"
  printf ',"file_stats":"%s"' "$(stat -c '%a %U %G %.6Y %n' -- "${{have[@]}}" | b64)"
fi
printf ',"files":['
sep=""
for f in "${{have[@]}}"; do
  if is_secret "$f"; then content="$(sed -E {q(catalog.SECRET_LINE_SED)} "$f" | b64)"
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
pg=""
if command -v psql >/dev/null && systemctl is-active -q postgresql 2>/dev/null; then
  pg="$( {{ runuser -u postgres -- psql -XAtq -F $'\\t' -c {q(_PG_SQL)} 2>/dev/null
         for db in {' '.join(q(d) for d in databases)}; do
           runuser -u postgres -- psql -XAtq -F $'\\t' -d "$db" -c {q(_PG_DB_SQL)} 2>/dev/null
         done; }} | b64)"
  printf ',"postgres":"%s"' "$pg"
fi
if [ -n "$rabbit" ]; then
  printf ',"rabbitmq":"%s"' "$(cat <&4)"
  exec 4<&-
fi
if [ -n "$pm2" ]; then
  printf ',"pm2":"%s"' "$(cat <&6)"
  exec 6<&-
fi
printf ',"bundle_checksum":"%s"' "$(cat {catalog.BUNDLE_STAMP} 2>/dev/null | tr -dc '0-9a-f')"
printf '}}\\n'
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
            path=path, sha256=sums[path], mode=int(mode, 8), owner=owner, group=group, mtime=_seconds(mtime),
            content=base64.b64decode(content).decode("utf-8", "replace") if content else (
                None if path in catalog.SECRET_FILES else ""),
        )
    return out


def _seconds(text: str) -> float:
    """Epoch seconds with microseconds as stat %.6Y and date +%s.%6N print them (0.0: unknown)."""
    try:
        return max(float(text), 0.0)
    except ValueError:
        return 0.0


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
        out[name] = ServiceFact(name, active, enabled, since)
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


def _postgres(text: str) -> PostgresFacts:
    roles: dict[str, PgRole] = {}
    dbs: dict[str, str] = {}
    exts: dict[str, set[str]] = {}
    acls: dict[str, set[str]] = {}
    settings: dict[str, str] = {}
    loaded = 0.0
    for line in text.splitlines():
        p = line.split("\t")
        if p[0] == "role" and len(p) == 5:
            roles[p[1]] = PgRole(p[1], p[2] == "t", p[3] == "t", p[4])
        elif p[0] == "db" and len(p) == 3:
            dbs[p[1]] = p[2]
        elif p[0] == "ext" and len(p) == 3:
            exts.setdefault(p[1], set()).add(p[2])
        elif p[0] == "defacl" and len(p) == 3:
            acls.setdefault(p[1], set()).add(p[2])
        elif p[0] == "setting" and len(p) == 3:
            settings[p[1]] = p[2]
        elif p[0] == "loaded" and len(p) == 2:
            loaded = _seconds(p[1])
    return PostgresFacts(roles, dbs, {k: frozenset(v) for k, v in exts.items()},
                         {k: frozenset(v) for k, v in acls.items()}, settings, loaded)


def _rabbitmq(text: str) -> RabbitFacts:
    """`rabbitmqctl export_definitions`: users with their tags (a list, or a string like `[a,b]` from older
    releases) and the permissions on vhost /."""
    doc = _json_object(text)
    users: dict[str, frozenset[str]] = {}
    for u in _dicts(doc.get("users")):
        tags = u.get("tags", [])
        if isinstance(tags, str):
            tags = [t for t in tags.strip("[]").replace(",", " ").split() if t]
        users[str(u["name"])] = frozenset(str(t) for t in tags)
    perms = {("/", str(p["user"])): (str(p["configure"]), str(p["write"]), str(p["read"]))
             for p in _dicts(doc.get("permissions")) if p.get("vhost") == "/"}
    return RabbitFacts(users, perms)


def _json_object(text: str) -> dict[str, Any]:
    """One JSON object ({} for no output; JSONDecodeError for anything else)."""
    doc = json.loads(text) if text.strip() else {}
    if not isinstance(doc, dict):
        raise json.JSONDecodeError("not an object", text, 0)
    return doc


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [d for d in value if isinstance(d, dict)] if isinstance(value, list) else []


def _pm2(text: str) -> tuple[list[Pm2App], dict[str, int]]:
    """The filter's {running: [{name, status, started}], saved: [name]}: the apps, and the processes
    per app in dump.pm2 (what `pm2 resurrect` starts at boot; {} when there is none)."""
    doc = _json_object(text)
    saved = dict(Counter(str(name) for name in doc.get("saved") or []))
    counts: dict[str, list[str]] = {}
    started: dict[str, float] = {}
    for p in _dicts(doc.get("running")):
        name = str(p["name"])
        counts.setdefault(name, []).append(str(p.get("status", "")))
        at = p.get("started")
        if isinstance(at, int | float) and at > 0:  # pm_uptime: milliseconds
            started[name] = min(started.get(name, at / 1000), at / 1000)
    apps = [Pm2App(name, "online" if all(s == "online" for s in st) else next(s for s in st if s != "online"),
                   len(st), started.get(name, 0.0)) for name, st in counts.items()]
    return apps, saved


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
        rabbit = _rabbitmq(_text(doc, "rabbitmq")) if "rabbitmq" in doc else None
        pm2, saved = _pm2(_text(doc, "pm2")) if "pm2" in doc else (None, None)
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise GuestError(f"facts: malformed rabbitmq/pm2 section: {exc}") from None
    return GuestFacts(
        hostname=str(doc.get("hostname", "")),
        os_id=os_id, os_version=os_version,
        packages=_packages(_text(doc, "packages")),
        files=_files(doc),
        dirs=_dirs(_text(doc, "dirs")),
        services=_services(_text(doc, "service_names"), _text(doc, "services")),
        users=frozenset(_text(doc, "users").split()),
        npm_globals=frozenset(_text(doc, "npm_globals").split()),
        postgres=_postgres(_text(doc, "postgres")) if "postgres" in doc else None,
        rabbitmq=rabbit,
        pm2=pm2,
        pm2_saved=saved,
        bundle_checksum=str(doc.get("bundle_checksum") or "") or None,
    )


def fresh() -> GuestFacts:
    """Facts of a guest where nothing is installed yet (for `plan` before the container exists)."""
    return GuestFacts()
