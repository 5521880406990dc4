"""pgBackRest's desired state: the database side (component `pgbackrest`) and the repository host
(planned by the backup component through `repository`). Pure: (ctx, facts) -> Changes.

Database side: the package, pgbackrest.conf naming the repository host, postgres's SSH identity,
the repository's key in postgres's authorized_keys; PostgreSQL's archive settings live in its own
drop-in (services/postgresql, `archive_settings`). Repository side: the package, user pgbackrest,
the repository directory, pgbackrest.conf naming every database container, the keys, and the
systemd timers of the full (weekly) and differential (daily) backups. The stanza is created by the
first backup (the timers' units and `psa-provision backup` run stanza-create first); until then
PostgreSQL keeps its WAL.
"""

from __future__ import annotations

import ipaddress
import shlex

from ...changes import Change, Noop, PutFile
from ...facts import GuestFacts
from ...phases import ContainerSpec, Phase
from ...render import render
from ..common import command, packages, put_file, service
from ..context import HostContext
from ..postgresql import PORT as PG_PORT
from . import (
    ARCHIVE_TIMEOUT_S,
    COMPONENT,
    CONF,
    DB_AUTHORIZED,
    DB_KEY,
    DB_SSH_CONFIG,
    DB_SSH_DIR,
    LOG_PATH,
    PACKAGES,
    PG_DATA,
    REPO_AUTHORIZED,
    REPO_HOME,
    REPO_KEY,
    REPO_PATH,
    REPO_SSH_CONFIG,
    REPO_SSH_DIR,
    REPO_USER,
    RETENTION_DIFF,
    RETENTION_FULL,
    SCHEDULE,
    STANZA,
    TEMPLATES,
    UNIT_DIR,
    archive_command,
    timer_units,
)
from .keys import KeyPair

KEY_OPTIONS = "no-agent-forwarding,no-X11-forwarding,no-port-forwarding"


def repository_host(phase: Phase) -> ContainerSpec | None:
    """The phase's backup container (the pgBackRest repository host), if it has one."""
    hosts = phase.with_component("backup")
    return hosts[0] if hosts else None


def archive_settings(ctx: HostContext) -> dict[str, object] | None:
    """PostgreSQL's archive settings when this container archives into a repository host, else None."""
    repo = repository_host(ctx.phase)
    if COMPONENT not in ctx.container.components or repo is None or ctx.backup_keys is None:
        return None
    return {"repo": repo.hostname, "command": archive_command(ctx.container.hostname),
            "timeout": ARCHIVE_TIMEOUT_S}


def db_conf(repo_ip: str, *, pg_path: str = PG_DATA) -> str:
    """pgbackrest.conf of a database container (or of a restore target) whose repository is `repo_ip`."""
    return render(TEMPLATES["db"], repo_host=repo_ip, repo_user=REPO_USER, stanza=STANZA, pg_path=pg_path,
                  pg_port=PG_PORT)


def repo_conf(pg_hosts: list[str]) -> str:
    """pgbackrest.conf of the repository host: retention, and every archiving database container."""
    return render(TEMPLATES["repo"], repo_path=REPO_PATH, retention_full=RETENTION_FULL,
                  retention_diff=RETENTION_DIFF, stanza=STANZA, pg_hosts=pg_hosts, pg_path=PG_DATA,
                  pg_port=PG_PORT)


def ssh_config(peers: list[str], key: str) -> str:
    return render(TEMPLATES["ssh_config"], peers=peers, key=key)


def authorized_keys(public: str, networks: list[str]) -> str:
    """One line: the peer's key, usable from the phase's networks only, without forwarding."""
    return f'from="{",".join(networks)}",{KEY_OPTIONS} {public}\n'


def networks(phase: Phase) -> list[str]:
    """The networks of the phase's containers (restore targets sit on the same bridges)."""
    return sorted({str(ipaddress.IPv4Interface(c.ip_cidr).network) for c in phase.containers})


def private_key(ctx: HostContext, facts: GuestFacts, path: str, key: KeyPair, owner: str) -> Change:
    """The private key file (0600): compared by checksum; its content is never shown nor read back."""
    have = facts.files.get(path)
    if have is not None and (have.sha256, have.mode, have.owner, have.group) == (
            key.private.sha256, 0o600, owner, owner):
        return Noop(ctx.host, COMPONENT, f"{path} up to date")
    why = "create" if have is None else "update"
    return PutFile(ctx.host, COMPONENT, f"{why} {path}", path=path, content=key.private, mode=0o600,
                   owner=owner, group=owner, diff=f"--- {path}\n+++ {path}\n(a private key: not shown)\n")


def ssh_dir(ctx: HostContext, facts: GuestFacts, path: str, owner: str) -> Change:
    have = facts.dirs.get(path)
    if have is not None and (have.mode, have.owner, have.group) == (0o700, owner, owner):
        return Noop(ctx.host, COMPONENT, f"{path} in place")
    q = shlex.quote
    return command(ctx, COMPONENT, f"directory {path} (0700 {owner})",
                   f"install -d -m 0700 -o {q(owner)} -g {q(owner)} {q(path)}\n")


def _keys(ctx: HostContext) -> tuple[KeyPair, KeyPair] | None:
    """(db, repo) key pairs; None for a context built without them (site.load_site refuses a phase
    with a backup container whose keys are missing, so only a hand-made context lacks them)."""
    keys = ctx.backup_keys
    return None if keys is None else (keys.db, keys.repo)


def plan(ctx: HostContext, facts: GuestFacts) -> list[Change]:
    """The database side (runs after the postgresql component, whose drop-in sets archive_command)."""
    repo = repository_host(ctx.phase)
    keys = _keys(ctx)
    if repo is None or keys is None:  # phases.validate refuses the first; see _keys for the second
        return []
    mine, theirs = keys
    return [
        packages(ctx, facts, COMPONENT, PACKAGES),
        put_file(ctx, facts, COMPONENT, CONF, db_conf(repo.ip)),
        ssh_dir(ctx, facts, DB_SSH_DIR, "postgres"),
        private_key(ctx, facts, DB_KEY, mine, "postgres"),
        put_file(ctx, facts, COMPONENT, DB_AUTHORIZED, authorized_keys(theirs.public, [f"{repo.ip}/32"]),
                 mode=0o600, owner="postgres", group="postgres"),
        put_file(ctx, facts, COMPONENT, DB_SSH_CONFIG, ssh_config([repo.ip], DB_KEY), mode=0o600,
                 owner="postgres", group="postgres"),
    ]


def repository(ctx: HostContext, facts: GuestFacts, component: str) -> list[Change]:
    """The repository host: package, user, repository, config, keys, the backup timers."""
    pg_hosts = [c.ip for c in ctx.phase.with_component(COMPONENT)]
    keys = _keys(ctx)
    if keys is None:
        return []
    theirs, mine = keys
    q = shlex.quote
    out: list[Change] = [packages(ctx, facts, component, PACKAGES)]
    if REPO_USER in facts.users:
        out.append(Noop(ctx.host, component, f"user {REPO_USER} exists"))
    else:
        out.append(command(ctx, component, f"user {REPO_USER} (owns the repository)",
                           f"id -u {REPO_USER} >/dev/null 2>&1 || adduser --system --group --home "
                           f"{q(REPO_HOME)} --shell /bin/bash {REPO_USER}\n"))
    for path in (REPO_PATH, LOG_PATH):
        have = facts.dirs.get(path)
        if have is not None and (have.mode, have.owner, have.group) == (0o750, REPO_USER, REPO_USER):
            out.append(Noop(ctx.host, component, f"{path} in place"))
        else:
            out.append(command(ctx, component, f"directory {path} (0750 {REPO_USER})",
                               f"install -d -m 0750 -o {REPO_USER} -g {REPO_USER} {q(path)}\n"
                               f"chown -R {REPO_USER}:{REPO_USER} {q(path)}\n"))
    out += [
        put_file(ctx, facts, component, CONF, repo_conf(pg_hosts)),
        ssh_dir(ctx, facts, REPO_SSH_DIR, REPO_USER),
        private_key(ctx, facts, REPO_KEY, mine, REPO_USER),
        put_file(ctx, facts, component, REPO_AUTHORIZED, authorized_keys(theirs.public, networks(ctx.phase)),
                 mode=0o600, owner=REPO_USER, group=REPO_USER),
        put_file(ctx, facts, component, REPO_SSH_CONFIG, ssh_config(pg_hosts, REPO_KEY), mode=0o600,
                 owner=REPO_USER, group=REPO_USER),
    ]
    for kind, calendar in SCHEDULE.items():
        unit, timer = timer_units(kind)
        files = [
            put_file(ctx, facts, component, f"{UNIT_DIR}/{unit}",
                     render(TEMPLATES["service"], kind=kind, stanza=STANZA, user=REPO_USER)),
            put_file(ctx, facts, component, f"{UNIT_DIR}/{timer}",
                     render(TEMPLATES["timer"], kind=kind, calendar=calendar)),
        ]
        out += files
        if any(not isinstance(c, Noop) for c in files):
            out.append(command(ctx, component, f"systemctl daemon-reload ({timer})",
                               "systemctl daemon-reload\n"))
        out += service(ctx, facts, component, timer, restart=any(not isinstance(c, Noop) for c in files))
    return out
