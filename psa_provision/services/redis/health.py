"""Redis's `psa-provision health` probe: an authenticated PING answers PONG.

The password comes on the probe script's stdin ($REDIS_PASSWORD); export is a shell builtin, so it
never becomes a process argument (env VAR=... would).
"""

from ...phases import Phase
from ..members import MemberFacts
from . import MASTER_NAME, SENTINEL_PORT
from .topology import MARK_CONFIG, MARK_SENTINEL, RedisFacts, parse

PROBE = 'export REDISCLI_AUTH="$REDIS_PASSWORD"; probe redis redis-cli -h 127.0.0.1 --no-auth-warning PING'


def judge(code: int, detail: str) -> tuple[bool, str]:
    return detail == "PONG", "PING answered PONG" if detail == "PONG" else f"PING answered {detail!r}"


# Phase 3: a replicated set's health from every member's view (pure). views: hostname -> (its address,
# its RedisFacts as the facts probe reads them, its Sentinel's `SENTINEL ckquorum` answer).
def set_verdict(views: dict[str, tuple[str, RedisFacts, str]]) -> list[tuple[bool, str]]:
    """(ok, why) lines: the Sentinels agree on one primary, it is the only Redis with role master,
    every other member follows it with its link up, and every Sentinel reaches the quorum."""
    named = {f.sentinel_master for _, f, _ in views.values()}
    primary = next(iter(named)) if len(named) == 1 and "" not in named else ""
    seen = ", ".join(f"{h}: {f.sentinel_master or '?'}" for h, (_, f, _) in sorted(views.items()))
    out = [(bool(primary), f"Sentinels agree: primary {primary}" if primary else
            f"Sentinels disagree on the primary ({seen})")]
    masters = sorted(h for h, (_, f, _) in views.items() if f.role == "master")
    one = len(masters) == 1 and views[masters[0]][0] == primary
    out.append((one, f"one primary: {masters[0]}" if one else
                f"Redis with role master: {', '.join(masters) or 'none'} (Sentinels name {primary or '?'})"))
    for host, (ip, f, quorum) in sorted(views.items()):
        if ip != primary:
            ok = f.role == "slave" and f.master_host == primary and f.link_up
            out.append((ok, f"{host} replicates {primary}" if ok else
                        f"{host}: role {f.role or '?'}, follows {f.master_host or 'nobody'}, "
                        f"link {'up' if f.link_up else 'down'}"))
        out.append((quorum.startswith("OK"), f"{host}'s Sentinel: {quorum.strip() or 'no answer'}"))
    return out


# Phase 3's cross-member verdict (`psa-provision health`): each member's replication and its Sentinel's
# primary in topology.parse's format, and its Sentinel's `ckquorum`, gathered with its health probe
# (services/members.py); the password as the probe has it (stdin, exported).
_CLI = 'redis-cli -h 127.0.0.1 --no-auth-warning'
FACTS = f"""export REDISCLI_AUTH="$REDIS_PASSWORD"
redis_set() {{
  {_CLI} INFO replication
  echo {MARK_CONFIG}
  echo {MARK_SENTINEL}
  {_CLI} -p {SENTINEL_PORT} SENTINEL get-master-addr-by-name {MASTER_NAME}
}}
fact redis-set redis_set
fact redis-ckquorum {_CLI} -p {SENTINEL_PORT} SENTINEL ckquorum {MASTER_NAME}"""


def cluster_verdict(phase: Phase, members: list[MemberFacts]) -> tuple[bool, str]:
    """set_verdict over every member's view in one line: its problems, else who is primary; a member
    that gave no facts counts as a Redis in no role and a Sentinel naming no primary nor answering."""
    views: dict[str, tuple[str, RedisFacts, str]] = {}
    for m in members:
        quorum = f"no answer ({m.absent})" if m.absent else m.text("redis-ckquorum")
        views[m.hostname] = (m.ip, parse(m.text("redis-set")), quorum)  # no output: nothing known
    lines = set_verdict(views)
    bad = [why for ok, why in lines if not ok]
    if bad:
        return False, "; ".join(bad)
    primary = next(h for h, (_, f, _) in views.items() if f.role == "master")
    replicas = sorted(h for h in views if h != primary)
    return True, (f"primary {primary} ({views[primary][0]}), named by every Sentinel, each at quorum; "
                  f"{', '.join(replicas)} replicate it, links up")
