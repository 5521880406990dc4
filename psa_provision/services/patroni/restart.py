"""Settings of a member's Patroni file that take effect only at a server restart, applied one member at
a time: the replicas first, in phase-file order, the leader last. Pure: (ctx, facts) -> Changes.

The case it is for: the backup container added to a running phase 3 puts archive_mode into every
member's local parameters (component.archive_parameters). Patroni reloads its file on SIGHUP (the
component's reload), writes the new value into postgresql.conf and reloads PostgreSQL; a setting of
context postmaster then shows as pending_restart (pg_settings, and Patroni's flag in GET /patroni and
`patronictl list`) until the server restarts. `patronictl restart <scope> <member> --pending` restarts
it through Patroni, which keeps the leader key while its own server restarts: no failover, the leader's
writes pause for the restart (seconds). Restarting the Patroni daemon instead may fail the leader over
(Patroni's docs, "PostgreSQL parameters that touch shared memory"). A restart only of the members that
need it, not a switchover first: a switchover also pauses writes, and adds a new timeline.

A member whose facts show a setting not yet running (the wanted value differs from the running one, or
one of the tool's parameters waits for a restart) gets two changes:
1. `up`'s first wave: wait until Patroni has loaded the file (the value runs already, or Patroni flags
   the member pending_restart; Patroni reloads within its loop_wait), so that before the second wave
   starts every member that needs a restart says so;
2. the second wave (needs_peers): wait for its turn, restart through Patroni, wait until Patroni runs the
   server without the flag. A replica's turn comes once no replica before it in the phase file is
   pending a restart or restarting; the leader's once no other member is. A member down (not running)
   holds no one up; the order is read again at each look, so a failover in between is followed.
"""

from __future__ import annotations

import shlex
from collections.abc import Collection, Mapping

from ...changes import Change, Noop
from ...facts import GuestFacts
from ...phases import ContainerSpec, Phase
from ..common import command
from ..context import HostContext
from . import COMPONENT, CONFIG, REST_PORT, SCOPE, members

TURN_WAIT_S = 600  # for the members ahead (each restart takes seconds; a stuck one fails this one)
LOADED_WAIT_S = 120  # Patroni reloads its file within loop_wait, and PostgreSQL's config with it
RESTARTED_WAIT_S = 300  # Patroni's own default for a server to start (primary_start_timeout)

# GET /patroni of a member (Patroni 3.0: "state" running/starting/restarting/..., "role" master or
# replica, "pending_restart": true only when set); {} when it does not answer
_STATUS = f"""import json, sys, urllib.request
def status(ip):
    try:
        with urllib.request.urlopen(f"http://{{ip}}:{REST_PORT}/patroni", timeout=3) as answer:
            return json.load(answer)
    except Exception:
        return {{}}
"""
# argv: my address, the members before me in the phase file, every other member. Prints `done` (no
# restart pending any more: exit 0), `go` (exit 0) or `wait <addresses>` (exit 1).
TURN = _STATUS + """mine, before, others = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
me = status(mine)
if not me.get("pending_restart"):
    print("done")
    sys.exit(0)
leader = me.get("role") in ("master", "primary")
def ahead(s):
    if s.get("state") in ("restarting", "starting"):
        return True
    replica = s.get("role") not in ("master", "primary")
    return bool(s.get("pending_restart")) and s.get("state") == "running" and (leader or replica)
waiting = [ip for ip in (others if leader else before) if ahead(status(ip))]
if waiting:
    print("wait " + " ".join(waiting))
    sys.exit(1)
print("go")
"""
# argv: my address. Exit 0 once Patroni runs the server without a pending restart.
RESTARTED = _STATUS + """me = status(sys.argv[1])
sys.exit(0 if me.get("state") == "running" and not me.get("pending_restart") else 1)
"""
PENDING = _STATUS + """sys.exit(0 if status(sys.argv[1]).get("pending_restart") else 1)
"""


def stale(facts: GuestFacts, wanted: Mapping[str, str], managed: Collection[str]) -> list[str]:
    """The settings the running server lacks: a wanted value it runs without, or one of the tool's
    parameters (`managed`) flagged pending_restart. [] when no server answers: it starts with the file."""
    pg = facts.postgres
    if pg is None or pg.in_recovery is None:
        return []
    out = [name for name, value in wanted.items() if pg.settings.get(name, value) != value]
    return out + sorted(n for n in pg.pending_restart if n in managed and n not in out)


def running_sql(wanted: Mapping[str, str]) -> str:
    """SQL answering t when the server runs with every `wanted` value (f when it has none to check)."""
    rows = ", ".join(f"({_literal(k)}, {_literal(v)})" for k, v in sorted(wanted.items()))
    if not rows:
        return "SELECT false"
    return (f"SELECT coalesce(bool_and(s.setting = w.v), false) FROM (VALUES {rows}) AS w(n, v) "  # noqa: S608
            "JOIN pg_settings s ON s.name = w.n")


def loaded_script(spec: ContainerSpec, wanted: Mapping[str, str]) -> str:
    """Bash: wait until the server runs with `wanted`, or Patroni flags it pending a restart."""
    running = f"cd / && runuser -u postgres -- psql -XAtc {shlex.quote(running_sql(wanted))}"
    return (f"for _ in $(seq {LOADED_WAIT_S // 2}); do\n"
            f"  [ \"$({running})\" = t ] && exit 0\n"
            f"  python3 -c {shlex.quote(PENDING)} {spec.ip} && exit 0\n"
            "  sleep 2\ndone\n"
            f"echo '{spec.hostname}: Patroni has not loaded {CONFIG} in {LOADED_WAIT_S} s (no pending "
            "restart, the settings not running)' >&2\nexit 1\n")


def restart_script(phase: Phase, spec: ContainerSpec) -> str:
    """Bash: this member's turn (see the module docstring), `patronictl restart --pending`, then wait
    until Patroni runs the server without the flag."""
    peers = members(phase)
    others = [m.ip for m in peers if m.vmid != spec.vmid]
    before = [m.ip for m in peers[:[m.vmid for m in peers].index(spec.vmid)]]
    q = shlex.quote
    name = spec.hostname
    return (f"turn=''\nfor _ in $(seq {TURN_WAIT_S // 2}); do\n"
            f"  turn=$(python3 -c {q(TURN)} {spec.ip} {q(' '.join(before))} {q(' '.join(others))}) && break\n"
            "  sleep 2\ndone\n"
            f"case \"$turn\" in\n  done) echo '{name}: no restart pending'; exit 0 ;;\n  go) ;;\n"
            f"  *) echo \"{name}: after {TURN_WAIT_S} s the members ahead still restart or wait to: "
            "$turn\" >&2\n     exit 1 ;;\nesac\n"
            # its answer is not its exit code (patronictl prints Failed and exits 0): the wait below judges
            f"patronictl -c {CONFIG} restart {SCOPE} {q(name)} --pending --force || true\n"
            f"for _ in $(seq {RESTARTED_WAIT_S // 2}); do\n"
            f"  python3 -c {q(RESTARTED)} {spec.ip} && exit 0\n  sleep 2\ndone\n"
            f"echo '{name}: the server is not running without a pending restart {RESTARTED_WAIT_S} s after "
            "patronictl restart' >&2\nexit 1\n")


def changes(ctx: HostContext, facts: GuestFacts, wanted: Mapping[str, str],
            managed: Collection[str]) -> list[Change]:
    """The two changes of a member whose server lacks settings of its file (none when it has them)."""
    names = stale(facts, wanted, managed)
    if not names:
        return [Noop(ctx.host, COMPONENT, "the server runs with every setting of its file")]
    shown = ", ".join(names)
    return [command(ctx, COMPONENT, f"wait until Patroni has loaded {shown} (running, or pending a "
                    "restart)", loaded_script(ctx.container, wanted)),
            command(ctx, COMPONENT, f"restart PostgreSQL through Patroni for {shown} (replicas one at a "
                    "time, the leader last)", restart_script(ctx.phase, ctx.container), needs_peers=True)]


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
