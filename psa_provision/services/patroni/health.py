"""Patroni's `psa-provision health` probe and verify's judgement of the cluster (pure, recorded output).

REST API (patroni/api.py, 3.0): GET /leader answers 200 on the member holding the leader key, else
503; /primary 200 only on a leader that is not a standby cluster's; /replica 200 on a running replica
(not tagged noloadbalance, not lagging past ?lag=), else 503; /sync 200 on a running synchronous
standby, /async on a running asynchronous one; /health 200 while PostgreSQL runs. `patronictl list
-f json` prints one object per member with the columns Cluster, Member, Host, Role, State, TL,
Lag in MB (and Pending restart when a member has one); Role is `Leader`, `Sync Standby`, `Replica`
or `Standby Leader`, State `running` (3.0 has no separate `streaming` state), `starting`,
`stopped`, `crashed`, `start failed`, `creating replica`...
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from ...phases import Phase
from ..members import MemberFacts, unanswered, verdict
from ..parse import dicts
from . import CONFIG

OK, UNAVAILABLE = 200, 503
# GET endpoint -> the answer a member of each role gives (patroni/api.py do_GET, 3.0.2)
ENDPOINTS: dict[str, dict[str, int]] = {
    "/leader": {"leader": OK, "sync_standby": UNAVAILABLE, "replica": UNAVAILABLE},
    "/primary": {"leader": OK, "sync_standby": UNAVAILABLE, "replica": UNAVAILABLE},
    "/replica": {"leader": UNAVAILABLE, "sync_standby": OK, "replica": OK},
    "/sync": {"leader": UNAVAILABLE, "sync_standby": OK, "replica": UNAVAILABLE},
    "/async": {"leader": UNAVAILABLE, "sync_standby": UNAVAILABLE, "replica": OK},
    "/health": {"leader": OK, "sync_standby": OK, "replica": OK},
}
LIST = f"patronictl -c {CONFIG} list -f json"
# The health probe's detail is one line of at most 300 characters: Member, Role and State columns of
# the tsv output, spaces inside a value made `_` ("Sync_Standby"), tabs and newlines made spaces.
PROBE = f"probe patroni sh -c 'patronictl -c {CONFIG} list -f tsv | cut -f2,4,5 | tr \" \" _'"
MAX_LAG_MB = 16  # a streaming replica this far behind the leader (MB of WAL) is not keeping up


@dataclass(frozen=True)
class Member:
    """One row of `patronictl list -f json`."""

    name: str
    host: str
    role: str  # leader, sync_standby, replica, standby_leader
    state: str
    timeline: int | None
    lag_mb: int | None  # None on the leader, or 'unknown'
    pending_restart: bool = False


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    return int(value) if isinstance(value, str) and value.isdigit() else None


def parse_list(text: str) -> list[Member]:
    """`patronictl list -f json` -> members (ValueError if the text is not that JSON)."""
    doc = json.loads(text)
    if not isinstance(doc, list):
        raise ValueError("patronictl list: expected a JSON list of members")
    return [Member(str(row.get("Member", "")), str(row.get("Host", "")),
                   str(row.get("Role", "")).lower().replace(" ", "_"), str(row.get("State", "")),
                   _int(row.get("TL")), _int(row.get("Lag in MB")), bool(row.get("Pending restart")))
            for row in dicts(doc)]


def leader(members: list[Member]) -> Member | None:
    found = [m for m in members if m.role == "leader"]
    return found[0] if len(found) == 1 else None


def problems(members: list[Member], expected: list[str], *, sync_required: bool = True) -> list[str]:
    """Why the cluster is not the phase's healthy HA cluster: one running leader, every other member
    of the phase file a running replica on the leader's timeline and close behind it, one of them the
    synchronous standby (synchronous_mode). Empty when all is well."""
    out: list[str] = []
    names = {m.name for m in members}
    missing = sorted(set(expected) - names)
    if missing:
        out.append(f"members missing: {', '.join(missing)}")
    extra = sorted(names - set(expected))
    if extra:
        out.append(f"members not in the phase file: {', '.join(extra)}")
    leaders = [m for m in members if m.role in ("leader", "standby_leader")]
    if len(leaders) != 1:
        which = ", ".join(m.name for m in leaders) or "none"
        out.append(f"{len(leaders)} leaders ({which}), want exactly one")
    head = leaders[0] if len(leaders) == 1 else None
    if head is not None and head.state != "running":
        out.append(f"leader {head.name} is {head.state}")
    for m in members:
        if head is None or m is head:
            continue
        if m.state != "running":
            out.append(f"replica {m.name} is {m.state or 'in no state'}")
        elif m.timeline is not None and head.timeline is not None and m.timeline != head.timeline:
            out.append(f"replica {m.name} is on timeline {m.timeline}, the leader on {head.timeline}")
        elif m.lag_mb is None or m.lag_mb > MAX_LAG_MB:
            lag = "unknown" if m.lag_mb is None else f"{m.lag_mb} MB"
            out.append(f"replica {m.name} lags the leader by {lag}")
    if sync_required and not any(m.role == "sync_standby" and m.state == "running" for m in members):
        out.append("no synchronous standby: a commit would be acknowledged before any replica has it")
    pending = [m.name for m in members if m.pending_restart]
    if pending:
        out.append(f"restart pending (settings not in effect) on {', '.join(pending)}: patronictl restart")
    return out


def parse_summary(detail: str) -> list[Member]:
    """The health probe's detail (`Member Role State` then three words a member) -> members."""
    words = detail.split()
    if words[:3] != ["Member", "Role", "State"] or len(words) % 3:
        raise ValueError("not patronictl's Member/Role/State columns")
    return [Member(words[i], "", words[i + 1].lower(), words[i + 2].replace("_", " "), None, None)
            for i in range(3, len(words), 3)]


def judge(code: int, detail: str) -> tuple[bool, str] | None:
    """The health line: one leader and every member running."""
    if code != 0:
        return None
    try:
        members = parse_summary(detail)
    except ValueError:
        return False, f"patronictl list answered: {detail[:80]}"
    head = leader(members)
    if head is None:
        return False, f"no single leader among {len(members)} members"
    down = [m.name for m in members if m.state != "running"]
    if down:
        return False, f"leader {head.name}; not running: {', '.join(down)}"
    sync = [m.name for m in members if m.role == "sync_standby"]
    return True, f"leader {head.name}, {len(members) - 1} replicas, sync standby {', '.join(sync) or 'none'}"


def role_from_codes(codes: Mapping[str, int]) -> str:
    """A member's role from the answers of its REST endpoints (path -> HTTP status), as HAProxy sees it:
    `leader`, `sync_standby`, `replica`, or `down` when /health is not 200."""
    if codes.get("/health") != OK:
        return "down"
    if codes.get("/leader") == OK:
        return "leader"
    if codes.get("/sync") == OK:
        return "sync_standby"
    return "replica" if codes.get("/replica") == OK else "down"


# Phase 3's cross-member verdict (`psa-provision health`): each member's `patronictl list -f json`,
# gathered with its health probe (services/members.py).
FACTS = f"fact patroni {LIST}"


def cluster_verdict(phase: Phase, members: list[MemberFacts]) -> tuple[bool, str]:
    """One leader, every other member a replica streaming close behind it, a synchronous standby
    (`problems`), judged on the first member's `patronictl list` that answers: Patroni lists the
    cluster from etcd, so any member's view is the cluster's (a member down shows as missing there)."""
    view: list[Member] | None = None
    for m in members:
        if m.code("patroni") == 0:
            try:
                view = parse_list(m.text("patroni"))
                break
            except ValueError:
                continue
    if view is None:
        return False, f"no member's patronictl list answered ({'; '.join(unanswered(members, 'patroni'))})"
    found = problems(view, [m.hostname for m in members])
    head = leader(view)
    if found or head is None:
        return verdict(found or ["no leader"], "")
    replicas = [f"{m.name} ({'sync, ' if m.role == 'sync_standby' else ''}lag {m.lag_mb} MB)"
                for m in view if m is not head]
    return True, f"leader {head.name}; streaming: {', '.join(replicas)}"
