"""etcd's `psa-provision health` probe and verify's reading of the cluster (pure parsing, recorded output).

`etcdctl endpoint health` (etcd-client 3.4, v3 API by default) commits a proposal through the member:
it answers only while the cluster has a quorum. `--cluster -w json` asks every member the cluster lists:
`[{"endpoint": URL, "health": bool, "took": "...", "error": "..."}]`; `member list -w json`:
`{"header": {...}, "members": [{"ID": n, "name": ..., "peerURLs": [...], "clientURLs": [...]}]}`
(a member added but not started yet has no name and no client URLs).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ...phases import Phase
from ..members import MemberFacts, merge, unanswered, verdict
from ..parse import dicts
from . import CLIENT_PORT

LOCAL = f"http://127.0.0.1:{CLIENT_PORT}"
PROBE = f"probe etcd etcdctl --endpoints={LOCAL} --dial-timeout=5s --command-timeout=10s endpoint health"
ETCDCTL = f"etcdctl --endpoints={LOCAL} --dial-timeout=5s --command-timeout=10s"
HEALTH = f"{ETCDCTL} endpoint health --cluster -w json"
MEMBERS = f"etcdctl --endpoints={LOCAL} --dial-timeout=5s member list -w json"


def judge(code: int, detail: str) -> tuple[bool, str] | None:
    """`... is healthy: successfully committed proposal` when the member reaches a quorum."""
    if code == 0 and "is healthy" in detail:
        return True, "member healthy (committed a proposal)"
    return None  # the default judgement: exit code and etcdctl's own words


@dataclass(frozen=True)
class Endpoint:
    url: str
    healthy: bool
    error: str = ""


@dataclass(frozen=True)
class Member:
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]

    @property
    def started(self) -> bool:
        return bool(self.name and self.client_urls)


def parse_health(text: str) -> list[Endpoint]:
    """`endpoint health --cluster -w json` -> one Endpoint per member (ValueError if not that JSON)."""
    doc = json.loads(text)
    if not isinstance(doc, list):
        raise ValueError("etcdctl endpoint health: expected a JSON list")
    return [Endpoint(str(d.get("endpoint", "")), d.get("health") is True, str(d.get("error", "")))
            for d in dicts(doc)]


def parse_members(text: str) -> list[Member]:
    """`member list -w json` -> the members (ValueError if not that JSON)."""
    doc = json.loads(text)
    if not isinstance(doc, dict):
        raise ValueError("etcdctl member list: expected a JSON object")
    return [Member(str(m.get("name", "")), tuple(map(str, m.get("peerURLs") or ())),
                   tuple(map(str, m.get("clientURLs") or ()))) for m in dicts(doc.get("members"))]


def problems(expected: list[str], members: list[Member], endpoints: list[Endpoint]) -> list[str]:
    """What keeps the cluster from being the phase's: members missing or foreign, endpoints unhealthy.

    expected: the member names (container hostnames) the phase file gives.
    """
    out: list[str] = []
    names = [m.name for m in members if m.started]
    missing = sorted(set(expected) - set(names))
    extra = sorted(set(names) - set(expected))
    unstarted = [m.peer_urls[0] if m.peer_urls else "?" for m in members if not m.started]
    if missing:
        out.append(f"members missing: {', '.join(missing)}")
    if extra:
        out.append(f"members not in the phase file: {', '.join(extra)}")
    if unstarted:
        out.append(f"members added but not started: {', '.join(unstarted)}")
    sick = [f"{e.url} ({e.error or 'unhealthy'})" for e in endpoints if not e.healthy]
    if sick:
        out.append(f"unhealthy endpoints: {'; '.join(sick)}")
    if len(endpoints) < len(expected):
        out.append(f"{len(endpoints)} endpoints answered, the phase has {len(expected)} members")
    return out


# Phase 3's cross-member verdict (`psa-provision health`): each member's `member list` and `endpoint
# health --cluster`, gathered with its health probe (services/members.py). `endpoint health` exits 1
# when an endpoint is unhealthy, after printing every endpoint's JSON: its output is judged whatever
# the exit code.
FACTS = f"fact etcd-members {MEMBERS}\nfact etcd-health {HEALTH}"


def cluster_verdict(phase: Phase, members: list[MemberFacts]) -> tuple[bool, str]:
    """Every member of the phase file started in the cluster and healthy (`problems`), as each member
    that answers sees it; none answering is a problem of its own."""
    views: dict[str, list[str]] = {}
    for m in members:
        try:
            views[m.hostname] = problems([c.hostname for c in members], parse_members(m.text("etcd-members")),
                                         parse_health(m.text("etcd-health")))
        except ValueError:  # json.JSONDecodeError too: no answer from this member
            continue
    if not views:
        return False, f"no member's etcdctl answered ({'; '.join(unanswered(members, 'etcd-members'))})"
    return verdict(merge(views), f"{len(members)} members started, every endpoint healthy (quorum)")
