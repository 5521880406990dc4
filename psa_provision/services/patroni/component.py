"""Patroni's desired state on one member of the PostgreSQL cluster (pure: (ctx, facts) -> Changes).

Files: /etc/patroni/15-main.yml (secrets inside: mode 0600, owner postgres) and start.conf `manual`
where a postgresql-common cluster exists (createcluster.d, which must precede postgresql-15, is written
by the postgresql component).
The stock postgresql@15-main is stopped and masked if it runs (it would fight Patroni for the data
directory); patroni@15-main is enabled and running, and reloaded (SIGHUP, Debian's ExecReload) when its
file changes: never restarted by `up`, since stopping Patroni stops the server it manages.
Settings that need a server restart show as `pending_restart` in `patronictl list` after the reload;
restart.py applies them through `patronictl restart`, member by member, the leader last.
"""

from __future__ import annotations

import ipaddress
import json
import shlex

from ...changes import Change, Noop, Sensitive
from ...facts import GuestFacts
from ...phases import ContainerSpec
from ...render import render
from ..common import command, content_changed, install, put_file, service
from ..context import HostContext
from ..etcd.component import client_urls
from ..pgbackrest.component import archive_settings
from ..postgresql import DATABASE, ROLE
from ..postgresql.component import PSQL, scram_matches, sql_literal
from ..postgresql.component import settings as pg_settings
from . import (
    BIN_DIR,
    COMPONENT,
    CONFIG,
    CONFIG_DIR,
    DATA_DIR,
    NAMESPACE,
    PACKAGES,
    PG_PORT,
    PGPASS,
    REPLICATION_USER,
    REST_PORT,
    RESTAPI_USER,
    REWIND_USER,
    SCOPE,
    START_CONF,
    STOCK_UNIT,
    SUPERUSER,
    TEMPLATES,
    UNIT,
    bootstrap_member,
    listen_addresses,
    members,
    restart,
    start_mode,
)

START_CONF_CONTENT = "# Managed by psa-provision: Patroni starts this cluster, not the stock unit.\nmanual\n"
# shell: start.conf says `manual`, as stock_cluster plans it (the takeover, a new member's first start)
WRITE_START_CONF = (f"printf '%s' {shlex.quote(START_CONF_CONTENT)} > {START_CONF}\n"
                    f"chown postgres:postgres {START_CONF}\nchmod 0644 {START_CONF}\n")
# the seed's settings that are the same whatever the memory ("Install PostgreSQL")
FIXED_PARAMETERS: dict[str, object] = {
    "random_page_cost": "1.1",
    "effective_io_concurrency": 200,
    "log_min_duration_statement": 1000,
    "password_encryption": "scram-sha-256",
    # Debian's layout and logging, as pg_createconfig_patroni writes them
    "unix_socket_directories": "/var/run/postgresql/",
    "logging_collector": "on",
    "log_directory": "/var/log/postgresql",
    "log_filename": "postgresql-15-main.log",
}
MEMORY_PARAMETERS = ("shared_buffers", "effective_cache_size", "maintenance_work_mem", "work_mem")
# parameters that need a server restart and whose running value the facts compare (pg_settings' form)
RESTART_COMPARED = ("archive_mode",)


def subnet(spec: ContainerSpec) -> str:
    """The member's network (replication and pg_rewind come from the other members on it)."""
    return str(ipaddress.IPv4Interface(spec.ip_cidr).network)


def clients(ctx: HostContext) -> list[str]:
    """Who may log in as psa_app: the load balancers (HAProxy connects from its own address), the app
    containers, and old ones a migration in progress still serves."""
    lbs = [c.ip for c in ctx.phase.with_component("haproxy")]
    out = sorted({*lbs, *ctx.client_addresses()})
    return out + [c for c in ctx.temporary_clients if c not in out]


def parameters(ctx: HostContext) -> dict[str, object]:
    """postgresql.parameters: the seed's memory settings (as the standalone server has them), fixed ones,
    and WAL archiving where the phase has a backup container."""
    tuned = pg_settings(ctx)
    return {**{name: tuned[name] for name in MEMORY_PARAMETERS}, **FIXED_PARAMETERS,
            **archive_parameters(ctx)}


def archive_parameters(ctx: HostContext) -> dict[str, object]:
    """WAL archiving into the repository host, as this member's local Patroni parameters ({} when the
    member has no pgbackrest component or the phase no backup container).

    Every member carries them, each archive_command guarded by its own hostname
    (pgbackrest.archive_command): with archive_mode `on` only a primary archives (a standby does not,
    PostgreSQL archives on a standby only with `always`), so the leader archives, and after a failover
    the new leader does, with nothing to change. archive_mode takes effect at a server restart:
    services/patroni/restart.py applies it member by member.
    """
    archive = archive_settings(ctx)
    if archive is None:
        return {}
    return {"archive_mode": "on", "archive_command": archive["command"],
            "archive_timeout": archive["timeout"]}


def yaml_string(value: object) -> str:
    """A parameter's value as a YAML double-quoted scalar (JSON's string syntax is YAML's), e.g. 200 ->
    "200": an archive_command holds double quotes, which a plain `"{{ value }}"` would end early."""
    return json.dumps(str(value))


def config_content(ctx: HostContext) -> str:
    s = ctx.secrets
    me = ctx.container
    users = user_passwords(ctx)
    return render(
        TEMPLATES[CONFIG], scope=SCOPE, namespace=NAMESPACE, name=me.hostname, ip=me.ip,
        listen=listen_addresses(me.ip),
        etcd_hosts=[u.removeprefix("http://") for u in client_urls(ctx.phase)],
        rest_port=REST_PORT, pg_port=PG_PORT, restapi_user=RESTAPI_USER,
        restapi_password=s.get("patroni.restapi_password").value,
        max_connections=pg_settings(ctx)["max_connections"],
        data_dir=DATA_DIR, bin_dir=BIN_DIR, config_dir=CONFIG_DIR, pgpass=PGPASS,
        superuser=SUPERUSER, superuser_password=users[SUPERUSER],
        replication_user=REPLICATION_USER, replication_password=users[REPLICATION_USER],
        rewind_user=REWIND_USER, rewind_password=users[REWIND_USER],
        parameters={k: yaml_string(v) for k, v in parameters(ctx).items()}, subnet=subnet(me),
        database=DATABASE, app_user=ROLE, clients=clients(ctx),
    )


# The functions pg_rewind needs (patroni/postgresql/bootstrap.py grants the same to its rewind user)
REWIND_FUNCTIONS = ("pg_ls_dir(text, boolean, boolean)", "pg_stat_file(text, boolean)",
                    "pg_read_binary_file(text)", "pg_read_binary_file(text, bigint, bigint, boolean)")
_QUIET = "SET log_min_duration_statement = -1;\nSET log_statement = 'none';\n"


def user_passwords(ctx: HostContext) -> dict[str, str]:
    """Patroni's database users -> their passwords (superuser, replication, rewind)."""
    s = ctx.secrets
    return {SUPERUSER: s.get("postgresql.superuser_password").value,
            REPLICATION_USER: s.get("postgresql.replication_password").value,
            REWIND_USER: s.get("postgresql.rewind_password").value}


def roles_sql(passwords: dict[str, str]) -> str:
    """Idempotent: the replication and rewind users as Patroni creates them at bootstrap, every password set.

    Patroni creates them only when it initialises a new cluster; a server it takes over (the phase
    before's standalone primary) gets them here, before Patroni starts.
    """
    options = {SUPERUSER: "SUPERUSER LOGIN", REPLICATION_USER: "REPLICATION LOGIN", REWIND_USER: "LOGIN"}
    out = [_QUIET]
    for user, password in passwords.items():
        out.append(f"DO $$BEGIN\n  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{user}') THEN\n"
                   f"    CREATE ROLE {user};\n  END IF;\nEND$$;\n"
                   f"ALTER ROLE {user} WITH {options[user]} PASSWORD {sql_literal(password)};\n")
    out += [f"GRANT EXECUTE ON FUNCTION pg_catalog.{f} TO {REWIND_USER};\n" for f in REWIND_FUNCTIONS]
    return "".join(out)


def roles(ctx: HostContext, facts: GuestFacts) -> list[Change]:
    """Patroni's users on a primary whose stored passwords differ from the secrets (or that lacks them);
    a replica has its leader's, and a member whose server does not answer yet is left to Patroni."""
    pg = facts.postgres
    if pg is None or pg.in_recovery is None:
        return [Noop(ctx.host, COMPONENT, "no server answers yet: Patroni creates its users at bootstrap")]
    if pg.in_recovery:
        return [Noop(ctx.host, COMPONENT, "a replica: Patroni's users arrive from the leader")]
    passwords = user_passwords(ctx)
    wrong = [u for u, pw in passwords.items() if u not in pg.roles or not pg.roles[u].login
             or not scram_matches(pw, pg.roles[u].password_verifier)]
    if not wrong:
        return [Noop(ctx.host, COMPONENT, "Patroni's users exist, passwords match")]
    hide = [v for pw in passwords.values() for v in (pw, pw.replace("'", "''"))]
    return [command(ctx, COMPONENT, f"set up database users {', '.join(wrong)} for Patroni",
                    f"cd / && {PSQL} -d postgres\n", stdin=Sensitive(roles_sql(passwords), hide))]


def stock_cluster(ctx: HostContext, facts: GuestFacts) -> list[Change]:
    """start.conf `manual` where postgresql-common has the cluster; stop + mask postgresql@15-main if up.

    A start.conf that says `manual` already is left as it is: the bootstrap member's, which Patroni's
    first start makes from createcluster.d (Debian's comment header above `manual`), is what is wanted."""
    out: list[Change] = []
    conf = facts.files.get(START_CONF)
    if (conf is not None and conf.content is not None and start_mode(conf.content) == "manual"
            and (conf.mode, conf.owner, conf.group) == (0o644, "postgres", "postgres")):
        out.append(Noop(ctx.host, COMPONENT, f"{START_CONF} says manual"))
    elif conf is not None:
        out.append(put_file(ctx, facts, COMPONENT, START_CONF, START_CONF_CONTENT, owner="postgres",
                            group="postgres"))
    else:
        out.append(Noop(ctx.host, COMPONENT, "no postgresql-common cluster yet (Patroni makes it)"))
    have = facts.services.get(STOCK_UNIT)
    if have is not None and have.active:
        out.append(command(ctx, COMPONENT, f"stop and mask {STOCK_UNIT} (Patroni runs the server)",
                           f"systemctl stop {STOCK_UNIT}\nsystemctl mask {STOCK_UNIT}\n"))
    else:
        out.append(Noop(ctx.host, COMPONENT, f"{STOCK_UNIT} not running"))
    return out


# A member other than the phase file's first starts Patroni only once another member leads: started
# into a cluster not yet initialised, its empty data directory would bootstrap a second, empty cluster
# (and the first member, holding the data, could then never join it). Then it waits for its own server
# to run (Patroni's /health answers 200 only then): the clone from the leader (pg_basebackup, through
# Debian's pg_clonecluster_patroni) is part of this step, so `up` ends with the member serving, and
# start.conf, which the clone makes, gets `manual` in the same step (a later `up` finds it as planned).
_AFTER_LEADER = """code() {{ curl -s -o /dev/null -w '%{{http_code}}' "$1"; }}
for _ in $(seq 150); do
  for ip in {peers}; do
    [ "$(code "http://$ip:{port}/leader")" = 200 ] && break 2
  done
  sleep 2
done
systemctl enable --now {unit}
for _ in $(seq {tries}); do
  [ "$(code "http://{own}:{port}/health")" = 200 ] && break
  sleep 2
done
if [ "$(code "http://{own}:{port}/health")" != 200 ]; then
  echo "{unit}: the server did not run within {seconds} s of its start (journalctl -u {unit})" >&2
  exit 1
fi
if [ -e {start_conf} ]; then
{write_start_conf}fi
"""
CLONE_WAIT_S = 600  # a new member's clone of the leader and first start, at most


def start(ctx: HostContext, facts: GuestFacts, conf: Change) -> list[Change]:
    """patroni@15-main enabled and running (reloaded when its file changed); a new member's first start
    waits for a leader elsewhere (see _AFTER_LEADER)."""
    first = bootstrap_member(ctx.phase)
    have = facts.services.get(UNIT)
    if (have is None or not have.active) and first is not None and first.vmid != ctx.container.vmid:
        peers = " ".join(m.ip for m in members(ctx.phase) if m.vmid != ctx.container.vmid)
        script = _AFTER_LEADER.format(peers=peers, port=REST_PORT, unit=UNIT, own=ctx.container.ip,
                                      tries=CLONE_WAIT_S // 2, seconds=CLONE_WAIT_S, start_conf=START_CONF,
                                      write_start_conf=WRITE_START_CONF)
        return [command(ctx, COMPONENT, f"start {UNIT} once another member leads, wait for its server",
                        script, needs_peers=True)]
    return service(ctx, facts, COMPONENT, UNIT, reload=content_changed(facts, [conf]))


def plan(ctx: HostContext, facts: GuestFacts) -> list[Change]:
    out: list[Change] = [*install(ctx, facts, COMPONENT, PACKAGES)]
    conf = put_file(ctx, facts, COMPONENT, CONFIG, config_content(ctx), mode=0o600, owner="postgres",
                    group="postgres")
    out += [conf, *roles(ctx, facts), *stock_cluster(ctx, facts)]
    out += start(ctx, facts, conf)
    wanted = parameters(ctx)
    out += restart.changes(ctx, facts, {k: str(v) for k, v in wanted.items() if k in RESTART_COMPARED},
                           managed=wanted)
    return out
