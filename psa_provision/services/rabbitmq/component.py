"""RabbitMQ (Debian 12's rabbitmq-server 3.10): config, management plugin, admin + psa_app users, no guest.

Everything listens on loopback, epmd (4369) and the distribution port (25672) too, without renaming
the node: the files doing so are written before the package (a cold install starts right) and, when
they change on an installed guest, epmd is rebound and the node restarted.

Facts hold no secret, so a password is set only when its user is created (`rabbitmqctl add_user
NAME` reads it from stdin); changing a stored password is `rotate-secrets`' job.

A member of a cluster (phase 3, cluster.py) listens on its container address for its peers, shares
the Erlang cookie, and joins the phase's first member in `up`'s second wave.
"""

from __future__ import annotations

import dataclasses
import shlex

from ...changes import Change, Noop, Sensitive
from ...facts import GuestFacts
from ...render import render
from ..common import command, content_changed, install, put_file, restart_needed, service
from ..context import HostContext
from . import (
    CLI_PORTS,
    COMPONENT,
    CONF,
    ENV_CONF,
    EPMD_DROPIN,
    INETRC,
    PACKAGES,
    PLUGINS,
    REBIND_EPMD,
    TEMPLATES,
    UNIT,
    USERS,
    VHOST,
    cluster,
)
from .facts import RabbitFacts

ALL = (".*", ".*", ".*")


def _has_user(name: str) -> str:
    """Shell test for a RabbitMQ user. stdin from /dev/null: rabbitmqctl would eat a password meant for
    the next command; awk reads to the end, so pipefail never sees a SIGPIPE."""
    found = "'$1 == u {f = 1} END {exit !f}'"
    return f"rabbitmqctl -q list_users </dev/null | awk -v u={shlex.quote(name)} {found}"


def _user_changes(ctx: HostContext, rabbit: RabbitFacts | None, name: str) -> list[Change]:
    key, tags = USERS[name]
    q = shlex.quote
    users = rabbit.users if rabbit else {}
    perms = rabbit.permissions if rabbit else {}
    out: list[Change] = []
    if name not in users:
        exists = _has_user(name)
        out.append(command(ctx, COMPONENT, f"create user {name}",
                           f"{exists} || rabbitmqctl -q add_user {q(name)}\n",
                           stdin=Sensitive.join(ctx.secrets.get(key), "\n")))
    if users.get(name, frozenset()) != frozenset(tags):
        out.append(command(ctx, COMPONENT, f"set tags of {name}: {' '.join(tags) or '(none)'}",
                           f"rabbitmqctl -q set_user_tags {q(name)} {' '.join(q(t) for t in tags)}\n"))
    if perms.get((VHOST, name)) != ALL:
        out.append(command(ctx, COMPONENT, f"grant {name} all permissions on vhost {VHOST}",
                           f"rabbitmqctl -q set_permissions -p {q(VHOST)} {q(name)} '.*' '.*' '.*'\n"))
    return out or [Noop(ctx.host, COMPONENT, f"user {name} present with tags and permissions")]


def loopback_files(ctx: HostContext, facts: GuestFacts) -> list[Change]:
    """rabbitmq-env.conf, erl_inetrc and the epmd.socket drop-in (root's files: the package may be absent);
    a cluster member's name its peers by address and open epmd on its own."""
    host = ctx.container.hostname
    members = cluster.members(ctx.phase, ctx.container)
    address = ctx.container.ip if members else ""
    hosts = [(c.ip, c.hostname) for c in members]
    env = render(TEMPLATES[ENV_CONF], hostname=host, inetrc=INETRC, address=address,
                 erl_address="{" + address.replace(".", ",") + "}",
                 cli_min=CLI_PORTS[0], cli_max=CLI_PORTS[1])
    return [put_file(ctx, facts, COMPONENT, ENV_CONF, env),
            put_file(ctx, facts, COMPONENT, INETRC, render(TEMPLATES[INETRC], hostname=host, hosts=hosts)),
            put_file(ctx, facts, COMPONENT, EPMD_DROPIN, render(TEMPLATES[EPMD_DROPIN], address=address))]


def plan(ctx: HostContext, facts: GuestFacts) -> list[Change]:
    loopback = loopback_files(ctx, facts)
    out: list[Change] = [*loopback, *install(ctx, facts, COMPONENT, PACKAGES)]
    members = cluster.members(ctx.phase, ctx.container)
    bind = ctx.container.ip if members else ctx.listen_address()
    conf = put_file(ctx, facts, COMPONENT, CONF, render(TEMPLATES[CONF], bind=bind,
                                                        members=[cluster.node(c) for c in members]),
                    owner="rabbitmq", group="rabbitmq")
    plugins = put_file(ctx, facts, COMPONENT, PLUGINS, render(TEMPLATES[PLUGINS]),
                       owner="rabbitmq", group="rabbitmq")
    out += [conf, plugins]
    if content_changed(facts, loopback[2:]):
        where = f"127.0.0.1:4369 and {ctx.container.ip}:4369" if members else "127.0.0.1:4369"
        out.append(command(ctx, COMPONENT, f"rebind epmd to {where}", REBIND_EPMD))
    cookie = cluster.cookie(ctx, facts) if members else []
    out += cookie
    restart = restart_needed(facts, UNIT, [*loopback, conf, plugins, *cookie],
                             [ENV_CONF, INETRC, CONF, PLUGINS])
    out += service(ctx, facts, COMPONENT, UNIT, restart=restart)
    join = cluster.join(ctx, facts) if members else []
    out += join
    later = any(not isinstance(c, Noop) for c in join)  # a joining node gets the cluster's users
    for name in USERS:
        out += [_later(c) if later else c for c in _user_changes(ctx, facts.rabbitmq, name)]
    if facts.rabbitmq is None or "guest" in facts.rabbitmq.users:
        out.append(command(ctx, COMPONENT, "delete the default guest user",
                           f"if {_has_user('guest')}; then\n"
                           "  rabbitmqctl -q delete_user guest\nfi\n"))
    else:
        out.append(Noop(ctx.host, COMPONENT, "guest user absent"))
    if later:
        out[-1] = _later(out[-1])
    return out


def _later(change: Change) -> Change:
    """The change in `up`'s second wave (after this node joined its cluster)."""
    return change if isinstance(change, Noop) else dataclasses.replace(change, needs_peers=True)
