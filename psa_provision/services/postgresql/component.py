"""PostgreSQL 15: tuning drop-in, pg_hba, role psa_app, database psa_platform, extensions, grants.

The settings go to conf.d/psa.conf, read through the `include_dir = 'conf.d'` line of Debian's
stock postgresql.conf, so the package's conffile stays untouched. Whether psa_app's stored
password still matches the secret is decided here, in Python, against the SCRAM verifier that
the facts carry (pg_authid.rolpassword): no secret leaves this machine to be compared.

On a member of a Patroni cluster (services/patroni) Patroni owns the server: its settings, pg_hba and
start; this component installs PostgreSQL and creates the app's objects on the leader only (a
replica receives them by streaming).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re

from ...changes import Change, Noop, Sensitive
from ...facts import GuestFacts
from ...render import render
from ..common import (
    command,
    content_changed,
    install,
    put_file,
    restart_needed,
    service,
    size_mb,
    written_after,
)
from ..context import HostContext
from ..patroni import COMPONENT as PATRONI
from ..patroni import CREATECLUSTER, CREATECLUSTER_CONTENT, REST_PORT, bootstrap_member, patroni_managed
from ..pgbackrest.component import archive_settings
from . import COMPONENT, CONF, DATABASE, EXTENSIONS, HBA, PACKAGES, PORT, ROLE, TEMPLATES, UNIT
from .facts import PostgresFacts

PSQL = "runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1"
_SCRAM = re.compile(r"^SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):(.+)$")
# Keep statements that carry a password out of the server log.
_QUIET = "SET log_min_duration_statement = -1;\nSET log_statement = 'none';\n"


def scram_matches(password: str, verifier: str) -> bool:
    """True if `password` produces the StoredKey of a `SCRAM-SHA-256$iter:salt$stored:server` verifier."""
    m = _SCRAM.match(verifier)
    if not m:
        return False
    try:
        salt = base64.b64decode(m.group(2), validate=True)
        stored = base64.b64decode(m.group(3), validate=True)
    except (binascii.Error, ValueError):
        return False
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, int(m.group(1)))
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    return hmac.compare_digest(hashlib.sha256(client_key).digest(), stored)


def settings(ctx: HostContext) -> dict[str, object]:
    """The seed's settings, memory-derived (4GB/12GB/1GB/20MB at 64 GiB), inventory overrides first."""
    mem = ctx.container.memory_mb
    tune = ctx.inventory.tuning.postgresql
    listen = ctx.listen_address()
    return {
        "listen_addresses": "localhost" if listen == "127.0.0.1" else f"{listen},localhost",
        "port": PORT,
        "max_connections": tune.max_connections or 200,
        "shared_buffers": tune.shared_buffers or size_mb(max(128, mem // 16)),
        "effective_cache_size": tune.effective_cache_size or size_mb(max(256, mem * 3 // 16)),
        "maintenance_work_mem": tune.maintenance_work_mem or size_mb(min(2048, max(64, mem // 64))),
        "work_mem": tune.work_mem or size_mb(max(4, round(mem * 20 / 65536))),
        "memory_mb": mem,
        "archive": archive_settings(ctx),
    }


def conf_content(ctx: HostContext) -> str:
    return render(TEMPLATES[CONF], **settings(ctx))


def hba_content(ctx: HostContext) -> str:
    """pg_hba: the phase's app containers, plus old ones a migration in progress still serves."""
    clients = ctx.client_addresses()
    clients += [c for c in ctx.temporary_clients if c not in clients]
    return render(TEMPLATES[HBA], database=DATABASE, user=ROLE, clients=clients)


def role_sql(password: str) -> str:
    """Idempotent: create psa_app if absent, then (re)set LOGIN and its password."""
    return (_QUIET + f"DO $$BEGIN\n  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}') THEN\n"
            f"    CREATE ROLE {ROLE} LOGIN;\n  END IF;\nEND$$;\n"
            f"ALTER ROLE {ROLE} WITH LOGIN PASSWORD {sql_literal(password)};\n")


def sql_literal(value: str) -> str:
    """A standard SQL string literal: quotes doubled (standard_conforming_strings: backslash is plain)."""
    return "'" + value.replace("'", "''") + "'"


def database_sql() -> str:
    """Idempotent: database owned by psa_app, the seed's extensions and grants."""
    exts = "".join(f'CREATE EXTENSION IF NOT EXISTS "{e}";\n' for e in EXTENSIONS)
    # S608: module constants only, no input reaches this SQL
    return (
        f"SELECT 'CREATE DATABASE {DATABASE} OWNER {ROLE}' WHERE NOT EXISTS "  # noqa: S608
        f"(SELECT FROM pg_database WHERE datname = '{DATABASE}')\\gexec\n"
        f"ALTER DATABASE {DATABASE} OWNER TO {ROLE};\n"
        f"GRANT ALL PRIVILEGES ON DATABASE {DATABASE} TO {ROLE};\n"
        f"\\connect {DATABASE}\n{exts}"
        f"GRANT ALL PRIVILEGES ON ALL TABLES IN SCHEMA public TO {ROLE};\n"
        f"GRANT ALL PRIVILEGES ON ALL SEQUENCES IN SCHEMA public TO {ROLE};\n"
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO {ROLE};\n"
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO {ROLE};\n"
    )


def _role_problem(pg: PostgresFacts | None, password: str) -> str | None:
    role = pg.roles.get(ROLE) if pg else None
    if role is None:
        return f"create role {ROLE}"
    if not role.login:
        return f"allow login for {ROLE}"
    if not scram_matches(password, role.password_verifier):
        return f"set {ROLE}'s password (stored one differs from the secret)"
    return None


def _database_problems(pg: PostgresFacts | None) -> list[str]:
    if pg is None or DATABASE not in pg.databases:
        return [f"create database {DATABASE} owned by {ROLE}", "extensions " + ", ".join(EXTENSIONS),
                "grants"]
    out = []
    if pg.databases[DATABASE] != ROLE:
        out.append(f"owner of {DATABASE} -> {ROLE} (is {pg.databases[DATABASE]})")
    missing = [e for e in EXTENSIONS if e not in pg.extensions.get(DATABASE, frozenset())]
    if missing:
        out.append("extensions " + ", ".join(missing))
    if not {"r", "S"} <= pg.default_acls.get(DATABASE, frozenset()):
        out.append("grants + default privileges")
    return out


def objects(ctx: HostContext, facts: GuestFacts) -> list[Change]:
    """Role, database, extensions, grants: SQL on stdin (password never in argv), only what is missing."""
    password = ctx.secrets.get("postgresql.app_password").value
    script = f"cd / && {PSQL} -d postgres\n"
    out: list[Change] = []
    problem = _role_problem(facts.postgres, password)
    if problem:
        out.append(command(ctx, COMPONENT, problem, script,
                           stdin=Sensitive(role_sql(password), [password, password.replace("'", "''")])))
    else:
        out.append(Noop(ctx.host, COMPONENT, f"role {ROLE} exists, password matches"))
    problems = _database_problems(facts.postgres)
    if problems:
        out.append(command(ctx, COMPONENT, "; ".join(problems), script,
                           stdin=Sensitive(database_sql())))
    else:
        out.append(Noop(ctx.host, COMPONENT, f"database {DATABASE}, extensions and grants in place"))
    return out


def hba_not_loaded(facts: GuestFacts) -> bool:
    """pg_hba.conf written after PostgreSQL last loaded its config (pg_conf_load_time): a run killed
    between writing it and the reload left the server on the old client rules."""
    loaded = facts.postgres.conf_loaded if facts.postgres else 0.0
    return facts.service_ok(UNIT) and written_after(facts, [HBA], loaded)


# Before the first `up` has a leader: wait (5 min at most) for this member's server, then create the
# objects only if it is the leader (the other members' commands find a replica and leave it there).
_ON_LEADER = """for _ in $(seq 150); do
  [ "$(curl -s -o /dev/null -w '%{{http_code}}' http://{ip}:{port}/health)" = 200 ] && break
  sleep 2
done
if [ "$(curl -s -o /dev/null -w '%{{http_code}}' http://{ip}:{port}/primary)" = 200 ]; then
  cd / && {psql} -d postgres
else
  echo "a replica: the app's objects arrive from the leader"
fi
"""


def objects_under_patroni(ctx: HostContext, facts: GuestFacts) -> list[Change]:
    """The app's objects on the leader only; while no server answers yet, a command that finds out."""
    pg = facts.postgres
    if pg is not None and pg.in_recovery is not None:
        if pg.in_recovery:
            return [Noop(ctx.host, COMPONENT, f"a replica: {ROLE} and {DATABASE} arrive from the leader")]
        return objects(ctx, facts)
    first = bootstrap_member(ctx.phase)
    if first is not None and first.vmid != ctx.container.vmid:
        # a member that is not the bootstrap one starts as a replica of the leader (its first start waits
        # for one: services/patroni); waiting here for its own server would wait for that start
        return [Noop(ctx.host, COMPONENT, f"a new replica: {ROLE} and {DATABASE} arrive from the leader")]
    password = ctx.secrets.get("postgresql.app_password").value
    script = _ON_LEADER.format(ip=ctx.container.ip, port=REST_PORT, psql=PSQL)
    sql = role_sql(password) + database_sql()
    return [command(ctx, COMPONENT, f"role {ROLE}, database {DATABASE}, extensions, grants (on the leader)",
                    script, stdin=Sensitive(sql, [password, password.replace("'", "''")]), needs_peers=True)]


def plan(ctx: HostContext, facts: GuestFacts) -> list[Change]:
    if patroni_managed(ctx.container.components, ctx.container.cluster):
        # no stock `main` cluster from the package: Patroni creates or clones it (services/patroni)
        return [put_file(ctx, facts, PATRONI, CREATECLUSTER, CREATECLUSTER_CONTENT),
                *install(ctx, facts, COMPONENT, PACKAGES), *objects_under_patroni(ctx, facts)]
    out: list[Change] = [*install(ctx, facts, COMPONENT, PACKAGES)]
    conf = put_file(ctx, facts, COMPONENT, CONF, conf_content(ctx), owner="postgres", group="postgres")
    hba = put_file(ctx, facts, COMPONENT, HBA, hba_content(ctx), mode=0o640, owner="postgres",
                   group="postgres")
    out += [conf, hba]
    restart = restart_needed(facts, UNIT, [conf], [CONF])
    out += service(ctx, facts, COMPONENT, UNIT, restart=restart,
                   reload=content_changed(facts, [hba]) or hba_not_loaded(facts))
    out += objects(ctx, facts)
    return out
