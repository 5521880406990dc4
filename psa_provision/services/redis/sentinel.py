"""Redis Sentinel beside each member of a replicated set (phase 3): quorum 2 of 3.

Sentinel rewrites sentinel.conf itself (the current primary, the replicas and Sentinels it found,
epochs), so the tool writes the file once, when no Sentinel monitors the set yet, with the primary
of the moment; afterwards it only compares the settings it owns. A changed down-after or
failover-timeout or quorum is set live (SENTINEL SET, which Sentinel saves); any other owned setting
drifting rewrites the file with the current primary and restarts the Sentinel. The monitored address
is never the tool's to put back: Sentinel's last answer is the primary.

Its passwords (requirepass, auth-pass) are masked in the facts, so the file comparison sees only that
the lines are there; their values are compared by digest (passwords.py explains it): a stale auth-pass
is set live (SENTINEL SET, which Sentinel saves), a stale requirepass, which Redis 7.0's Sentinel reads
only at start, means the file edited in place and a restart, its learned state kept.

A Sentinel whose unit is not active (it failed: it could not read its file; or it was stopped) gets
its whole file again, with the primary of the moment as its member's Redis sees it, and a restart
after `systemctl reset-failed` (systemd refuses to start a unit that hit its start limit until then).

Redis 7.0's Sentinel writes `sentinel auth-pass` back unquoted whenever it rewrites its file (sentinel.c,
rewriteConfigSentinelOption: "sentinel auth-pass %s %s"), and its parser (sdssplitargs) then refuses a
line whose password holds white space or a quote: the Sentinel no longer starts. Such a Redis password
is refused before anything is written (check_password).
"""

from __future__ import annotations

import shlex

from ...changes import Change, Noop, Sensitive
from ...errors import InputError
from ...facts import GuestFacts
from ...phases import Phase
from ...render import render
from ...secrets import Secrets
from ..common import command, content_changed, fix_mode, put_file, service
from ..context import HostContext
from . import (
    CLUSTER_MODE,
    COMPONENT,
    DOWN_AFTER_MS,
    FAILOVER_TIMEOUT_MS,
    MASTER_NAME,
    PORT,
    QUORUM,
    SECRET,
    SENTINEL_CONF,
    SENTINEL_PORT,
    SENTINEL_TEMPLATE,
    SENTINEL_UNIT,
    passwords,
    topology,
)
from .conffile import conf_word, directives, drift

MONITOR = f"sentinel monitor {MASTER_NAME}"
UNREWRITABLE = frozenset(" \t\r\n'\"")  # what an unquoted word of Sentinel's own file cannot hold
SECRET_KEYS = ("requirepass", f"sentinel auth-pass {MASTER_NAME}")
# per-master settings SENTINEL SET changes live: key in the file -> (SET option, wanted value)
LIVE: dict[str, tuple[str, str]] = {
    f"sentinel down-after-milliseconds {MASTER_NAME}": ("down-after-milliseconds", str(DOWN_AFTER_MS)),
    f"sentinel failover-timeout {MASTER_NAME}": ("failover-timeout", str(FAILOVER_TIMEOUT_MS)),
}
# bash: the Sentinel's password (first stdin line) into the environment, never argv
AUTH = "IFS= read -r REDISCLI_AUTH\nexport REDISCLI_AUTH\n"


def refuse_unrewritable_password(phase: Phase, secrets: Secrets) -> None:
    """Before any call: a phase that runs Sentinels (a replicated Redis set) needs a Redis password
    Sentinel can write back (check_password); `up` and `plan` of a phase whose conversion `migrate`
    holds plan no sentinel.conf yet, and must refuse all the same."""
    if any(topology.replicated(phase, c) for c in phase.containers):
        check_password(secrets)


def check_password(secrets: Secrets) -> None:
    """InputError naming the secrets file when the Redis password cannot survive Sentinel's rewrite."""
    found = sorted({repr(c) for c in secrets.get(SECRET).value if c in UNREWRITABLE})
    if found:
        raise InputError(f"{secrets.where(SECRET)}: {SECRET} holds {', '.join(found)}: Redis 7.0's "
                         "Sentinel writes it back unquoted into sentinel.conf on every rewrite (each "
                         "failover) and then cannot read its own file",
                         hint="`psa-provision rotate-secrets redis --phase <the phase running now>` gives "
                              "Redis a new password of letters and digits; then run this again")


def content(ctx: HostContext, primary: str) -> str:
    check_password(ctx.secrets)
    ip = ctx.container.ip
    return render(SENTINEL_TEMPLATE, port=SENTINEL_PORT, bind=f"{ip} 127.0.0.1", announce_ip=ip,
                  password=conf_word(ctx.secrets.get(SECRET).value), name=MASTER_NAME, primary=primary,
                  redis_port=PORT, quorum=QUORUM, down_after_ms=DOWN_AFTER_MS,
                  failover_timeout_ms=FAILOVER_TIMEOUT_MS)


def sentinel_set(ctx: HostContext, options: list[tuple[str, str]]) -> Change:
    """SENTINEL SET on the local Sentinel (it saves the change in its file); an error reply fails."""
    words = " ".join(f"{shlex.quote(k)} {shlex.quote(v)}" for k, v in options)
    script = (AUTH + f"answer=$(redis-cli -h 127.0.0.1 -p {SENTINEL_PORT} --no-auth-warning "
              f"SENTINEL SET {MASTER_NAME} {words})\n"
              '[ "$answer" = OK ] || { echo "SENTINEL SET answered: $answer" >&2; exit 1; }\n')
    names = ", ".join(f"{k} {v}" for k, v in options)
    return command(ctx, COMPONENT, f"SENTINEL SET {MASTER_NAME} {names}", script,
                   stdin=Sensitive.join(ctx.secrets.get(SECRET), "\n"))


def password_changes(ctx: HostContext, facts: GuestFacts) -> list[Change]:
    """The Sentinel's passwords where their digests (passwords.py) are not the secrets file's: its own
    requirepass only by a restart with its file edited in place (which writes auth-pass too), auth-pass
    alone live (SENTINEL SET, saved by Sentinel)."""
    held = facts.redis.passwords if facts.redis else {}
    wrong = passwords.stale(held, ctx.secrets.get(SECRET).value,
                            (passwords.SENTINEL_REQUIREPASS, passwords.AUTH_PASS))
    stdin = Sensitive.join(ctx.secrets.get(SECRET), "\n")
    if passwords.SENTINEL_REQUIREPASS in wrong:
        return [command(ctx, COMPONENT, f"sentinel requirepass: the secrets file's password, {SENTINEL_CONF} "
                                        f"edited in place (learned state kept), restart {SENTINEL_UNIT}, "
                                        "wait for the quorum", passwords.SENTINEL_RESTART, stdin=stdin)]
    if wrong:
        return [command(ctx, COMPONENT, f"sentinel auth-pass {MASTER_NAME}: the secrets file's password "
                                        "(SENTINEL SET, saved by Sentinel; no restart)",
                        passwords.AUTH_PASS_LIVE, stdin=stdin)]
    return []


def heal(ctx: HostContext, facts: GuestFacts, want: str, state: str) -> list[Change]:
    """A Sentinel that does not run (it could not read its file, or was stopped): the whole file again,
    with the primary of the moment, and a restart; reset-failed first, as systemd refuses to start a
    unit that hit its start limit until then."""
    unit = shlex.quote(SENTINEL_UNIT)
    return [put_file(ctx, facts, COMPONENT, SENTINEL_CONF, want, mode=CLUSTER_MODE, owner="redis",
                     group="redis"),
            command(ctx, COMPONENT, f"reset-failed {SENTINEL_UNIT} (it is {state or 'not active'})",
                    f"systemctl reset-failed {unit} 2>/dev/null || true\n"),
            *service(ctx, facts, COMPONENT, SENTINEL_UNIT, restart=True)]


def plan(ctx: HostContext, facts: GuestFacts, primary: str) -> list[Change]:
    """The Sentinel's file (written once, see the module docstring), its settings, its unit."""
    want = content(ctx, primary)
    have = facts.files.get(SENTINEL_CONF)
    found = directives(have.content) if have is not None and have.content is not None else {}
    out: list[Change] = []
    unit = facts.services.get(SENTINEL_UNIT)
    if have is not None and unit is not None and not unit.active:  # written once, yet not running
        return heal(ctx, facts, want, unit.state)
    if MONITOR not in found:  # the package's default file, or none: the first write
        conf = put_file(ctx, facts, COMPONENT, SENTINEL_CONF, want, mode=CLUSTER_MODE, owner="redis",
                        group="redis")
        return [conf, *service(ctx, facts, COMPONENT, SENTINEL_UNIT, restart=content_changed(facts, [conf]))]
    assert have is not None and have.content is not None
    keys = drift(want, have.content, presence_only=SECRET_KEYS, free_first_arg=(MONITOR,))
    quorum_only = MONITOR in keys and [a[1:2] for a in found[MONITOR]] == [(str(PORT),)]
    live = [LIVE[k] for k in keys if k in LIVE] + ([("quorum", str(QUORUM))] if quorum_only else [])
    rest = [k for k in keys if k not in LIVE and not (k == MONITOR and quorum_only)]
    restart = False
    if rest:  # a setting only a restart takes: the whole file again, with the primary of the moment
        out.append(put_file(ctx, facts, COMPONENT, SENTINEL_CONF, want, mode=CLUSTER_MODE, owner="redis",
                            group="redis"))
        restart = True
    else:
        if live:
            out.append(sentinel_set(ctx, live))
        out.extend(password_changes(ctx, facts))
        if (have.mode, have.owner, have.group) != (CLUSTER_MODE, "redis", "redis"):
            out.append(fix_mode(ctx, COMPONENT, have, CLUSTER_MODE, "redis", "redis"))
        if not out:
            out.append(Noop(ctx.host, COMPONENT, f"{SENTINEL_CONF} holds the tool's settings "
                                                 "(the rest is Sentinel's)"))
    return out + service(ctx, facts, COMPONENT, SENTINEL_UNIT, restart=restart)
