"""PostgreSQL's part of the facts probe: roles (with SCRAM verifiers), databases, extensions, default
privileges, settings (and those waiting for a restart), the last config load, asked only when psql is
there and the server runs."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from ..parse import seconds
from ..patroni import UNIT as PATRONI_UNIT
from . import DATABASE, ROLE, UNIT


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
    in_recovery: bool | None = None  # a standby (Patroni's replicas); None: the server did not answer
    # settings whose new value in the config files waits for a server restart (pg_settings.pending_restart)
    pending_restart: frozenset[str] = frozenset()


_SQL = r"""
SELECT 'role', rolname, rolcanlogin, rolsuper, coalesce(rolpassword, '') FROM pg_authid;
SELECT 'db', datname, pg_get_userbyid(datdba) FROM pg_database WHERE datallowconn;
SELECT 'setting', name, setting FROM pg_settings WHERE name IN
  ('listen_addresses','port','max_connections','shared_buffers','effective_cache_size',
   'maintenance_work_mem','work_mem','random_page_cost','effective_io_concurrency',
   'log_min_duration_statement','password_encryption','archive_mode');
SELECT 'pending', name FROM pg_settings WHERE pending_restart;
SELECT 'loaded', extract(epoch FROM pg_conf_load_time());
SELECT 'recovery', pg_is_in_recovery();
"""
# S608: a module constant (the role name), no input reaches this SQL
_DB_SQL = rf"""
SELECT 'ext', current_database(), extname FROM pg_extension;
SELECT 'defacl', current_database(), defaclobjtype FROM pg_default_acl d
  JOIN pg_namespace n ON n.oid = d.defaclnamespace
  WHERE n.nspname = 'public' AND array_to_string(d.defaclacl, ',') LIKE '%{ROLE}=%';
"""  # noqa: S608


def probe(databases: tuple[str, ...] = (DATABASE,)) -> str:
    """The bash lines that add `"postgres": <base64 of tab-separated rows>` to the facts document."""
    q = shlex.quote
    # `is-active` of two units answers 0 when either runs: the stock server, or Patroni's
    return f"""pg=""
if command -v psql >/dev/null && systemctl is-active -q {UNIT} {PATRONI_UNIT} 2>/dev/null; then
  pg="$( {{ runuser -u postgres -- psql -XAtq -F $'\\t' -c {q(_SQL)} 2>/dev/null
         for db in {' '.join(q(d) for d in databases)}; do
           runuser -u postgres -- psql -XAtq -F $'\\t' -d "$db" -c {q(_DB_SQL)} 2>/dev/null
         done; }} | b64)"
  printf ',"postgres":"%s"' "$pg"
fi
"""


def parse(text: str) -> PostgresFacts:
    """The probe's rows (`role`, `db`, `ext`, `defacl`, `setting`, `pending`, `loaded`, `recovery`) as
    PostgresFacts."""
    roles: dict[str, PgRole] = {}
    dbs: dict[str, str] = {}
    exts: dict[str, set[str]] = {}
    acls: dict[str, set[str]] = {}
    settings: dict[str, str] = {}
    pending: set[str] = set()
    loaded = 0.0
    recovery: bool | None = None
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
        elif p[0] == "pending" and len(p) == 2:
            pending.add(p[1])
        elif p[0] == "loaded" and len(p) == 2:
            loaded = seconds(p[1])
        elif p[0] == "recovery" and len(p) == 2:
            recovery = p[1] == "t"
    return PostgresFacts(roles, dbs, {k: frozenset(v) for k, v in exts.items()},
                         {k: frozenset(v) for k, v in acls.items()}, settings, loaded, recovery,
                         frozenset(pending))
