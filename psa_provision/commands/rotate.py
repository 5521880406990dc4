"""`psa-provision rotate-secrets [component]`: new passwords in the secrets file, the services and .env.

Order, so that a rerun always converges: (1) the new values are written to the secrets file
(atomic, 0600); (2) what `up` cannot see or must not do all at once is set directly: RabbitMQ keeps
no readable trace of a password, so `rabbitmqctl change_password` runs with the new one on stdin; a
replicated Redis set (phase 3: Redis servers and their Sentinels) moves to the new password live, in
the steps of services/redis/passwords.py (ROTATION), each on every member before the next and the
Sentinels restarted one at a time, so no replica or Sentinel is ever refused; (3) a normal `up` does
the rest, because it compares against the secrets file: PostgreSQL's role password (SCRAM verifier
differs -> ALTER ROLE with the SQL on stdin), a standalone redis.conf (requirepass -> restart redis),
.env (JWT secret, admin and store passwords -> `pm2 reload --only` the apps that read a changed
variable, see services/app: APP_STORES, component.py; the others keep running), then waits until all
are healthy. Between (2) and the reload in (3) the app's connections to Redis, authenticated with the
old password, stay open; a new one it opens in that window is refused.
Interrupted? Run the same command again: it rotates once more and converges (each Redis step reads
the password a server accepts from its own file, or takes the new one).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from psa_provision import secrets as secrets_mod
from psa_provision.commands.up import UpResult, up
from psa_provision.errors import InputError
from psa_provision.output import Output
from psa_provision.phases import Phase
from psa_provision.secrets import Secrets
from psa_provision.sensitive import Sensitive
from psa_provision.services import app as app_service
from psa_provision.services import redis as redis_service
from psa_provision.services.rabbitmq import USERS as RABBIT_USER_KEYS
from psa_provision.services.redis import passwords as redis_passwords
from psa_provision.services.redis.topology import replicated
from psa_provision.site import Site, load_site, ssh_connection

COMPONENTS: dict[str, tuple[str, ...]] = {
    "postgresql": ("postgresql.app_password",),
    "redis": ("redis.password",),
    "rabbitmq": ("rabbitmq.admin_password", "rabbitmq.app_password"),
    "app": ("app.jwt_secret", "app.admin_password"),
}
# Not rotated here. The Erlang cookie: members with different cookies cannot talk, so a new cookie
# means stopping every RabbitMQ member at once (a planned outage), not a rolling change. Patroni's
# users: a new password must reach the roles on the leader (ALTER ROLE) before every member's config,
# else replication and pg_rewind stop; rotate-secrets does not do that yet. The VRRP password: while
# the pair disagree each drops the other's adverts and both take the VIP.
NOT_ROTATED = frozenset({"rabbitmq.erlang_cookie", "postgresql.superuser_password",
                         "postgresql.replication_password", "postgresql.rewind_password",
                         "patroni.restapi_password", "keepalived.auth_pass"})
RABBIT_USERS = {key: user for user, (key, _) in RABBIT_USER_KEYS.items()}  # secret key -> RabbitMQ user
# stdin carries the password only; rabbitmqctl reads it when no password argument is given
RABBIT_CHANGE = "rabbitmqctl -q change_password {user}"


@dataclass
class RotateResult:
    """What was rotated (key names only) and the `up` that carried the values to the services."""

    keys: list[str]
    up: UpResult


def keys_for(component: str) -> tuple[str, ...]:
    """The secret keys of a component (`all`: every rotatable key)."""
    if component == "all":
        return tuple(k for keys in COMPONENTS.values() for k in keys)
    if component not in COMPONENTS:
        raise InputError(f"unknown component {component!r} for rotate-secrets",
                         hint=f"one of: {', '.join([*COMPONENTS, 'all'])}")
    return COMPONENTS[component]


def new_values(current: Secrets, keys: tuple[str, ...]) -> dict[str, str]:
    """The secrets file's content with fresh values for `keys` (every other value kept)."""
    fresh = secrets_mod.generate()
    return {**current.as_dict(), **{k: fresh[k] for k in keys}}


def load(inventory: Path, phase: str) -> Site:
    """The site whose secrets to rotate (the phase whose containers use them)."""
    return load_site(inventory, phase)


def rotate(site: Site, component: str, out: Output) -> RotateResult:
    """Rotate the component's secrets everywhere they are used, then converge with `up`."""
    keys = keys_for(component)
    path = site.inventory.secrets_file
    values = new_values(site.secrets, keys)
    secrets_mod.store(path, values)
    out.note(f"new values for {', '.join(keys)} written to {path}")
    site.secrets = secrets_mod.load_secrets(path)
    for host, apps in readers(site.phase, keys).items():
        out.note(f"{host}: PM2 apps reading the new values, reloaded: {', '.join(apps) or 'none'}")
    _rabbitmq_passwords(site, [k for k in keys if k in RABBIT_USERS], out)
    if redis_service.SECRET in keys:
        _redis_sets(site, out)
    return RotateResult(list(keys), up(site, out))


def readers(phase: Phase, keys: tuple[str, ...]) -> dict[str, list[str]]:
    """Per app container: the PM2 apps that read one of these secrets (the only ones `up` reloads)."""
    variables = [app_service.SECRET_ENV[k] for k in keys if k in app_service.SECRET_ENV]
    out: dict[str, list[str]] = {}
    for spec in phase.containers:
        apps = phase.services_on(spec.vmid)
        if "app" in spec.components and apps:
            out[spec.hostname] = sorted({a for v in variables for a in app_service.env_readers(v, apps)})
    return out


def _rabbitmq_passwords(site: Site, keys: list[str], out: Output) -> None:
    """Set RabbitMQ user passwords (stdin only) where RabbitMQ runs and the user exists already."""
    if not keys:
        return
    for spec in site.phase.containers:
        if "rabbitmq" not in spec.components:
            continue
        conn = ssh_connection(site.inventory, spec)
        try:
            for key in keys:
                user = RABBIT_USERS[key]
                out.note(f"{spec.hostname}: rabbitmqctl change_password {user} (password on stdin)")
                exists = (f"rabbitmqctl -q list_users </dev/null | awk -v u={shlex.quote(user)} "
                          "'$1 == u {f = 1} END {exit !f}'")
                script = f"if {exists}; then {RABBIT_CHANGE.format(user=shlex.quote(user))}; fi\n"
                conn.run(script, stdin=site.secrets.get(key).value + "\n")
        finally:
            conn.close()


def _redis_sets(site: Site, out: Output) -> None:
    """Move every member of the phase's replicated Redis sets (Redis + Sentinel) to the new password:
    each step of ROTATION on every member before the next, one member at a time."""
    members = [spec for spec in site.phase.containers if replicated(site.phase, spec)]
    if not members:
        return
    new = Sensitive.join(site.secrets.get(redis_service.SECRET), "\n")
    conns = {spec.hostname: ssh_connection(site.inventory, spec) for spec in members}
    try:
        for what, script in redis_passwords.ROTATION:
            for spec in members:
                out.note(f"{spec.hostname}: {what}")
                conns[spec.hostname].run("set -euo pipefail\n" + script, stdin=new)
    finally:
        for conn in conns.values():
            conn.close()
