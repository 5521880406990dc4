"""The phase's clusters judged across their members for `psa-provision health` (phase 3). Pure.

A cluster is the containers sharing a `cluster:` in the phase file (two or more); the service judging
it is the one its members run (PostgreSQL members: Patroni). Each member's health probe also runs that
service's FACTS, so the verdict needs no round trip of its own; the verdict is the service's own
(services/<name>/health.py `cluster_verdict`), one line per cluster naming what is wrong and where.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..phases import ContainerSpec, Phase
from .elasticsearch import health as elasticsearch
from .etcd import health as etcd
from .keepalived import health as keepalived
from .members import MemberFacts
from .patroni import health as patroni
from .patroni import patroni_managed
from .rabbitmq import health as rabbitmq
from .redis import health as redis

Verdict = Callable[[Phase, list[MemberFacts]], tuple[bool, str]]


@dataclass(frozen=True)
class Judge:
    """The service that judges a cluster: its name, the facts it needs of each member, its verdict."""

    component: str
    facts: str
    verdict: Verdict


JUDGES: dict[str, Judge] = {j.component: j for j in (
    Judge("etcd", etcd.FACTS, etcd.cluster_verdict),
    Judge("patroni", patroni.FACTS, patroni.cluster_verdict),
    Judge("redis", redis.FACTS, redis.cluster_verdict),
    Judge("rabbitmq", rabbitmq.FACTS, rabbitmq.cluster_verdict),
    Judge("elasticsearch", elasticsearch.FACTS, elasticsearch.cluster_verdict),
    Judge("keepalived", keepalived.FACTS, keepalived.cluster_verdict),
)}


@dataclass(frozen=True)
class Cluster:
    name: str
    judge: Judge
    members: tuple[ContainerSpec, ...]


@dataclass(frozen=True)
class ClusterVerdict:
    """One cluster's line: ok or not, and why (naming members)."""

    name: str
    component: str
    members: tuple[str, ...]
    ok: bool
    why: str


def judge_of(spec: ContainerSpec) -> Judge | None:
    """The service that judges the cluster `spec` is a member of (None: none of them runs there)."""
    if patroni_managed(spec.components, spec.cluster):
        return JUDGES["patroni"]
    return next((JUDGES[c] for c in JUDGES if c in spec.components), None)


def clusters(phase: Phase) -> list[Cluster]:
    """The phase's clusters of two or more members with a service to judge them, in phase order."""
    found: dict[str, list[ContainerSpec]] = {}
    for spec in phase.containers:
        if spec.cluster:
            found.setdefault(spec.cluster, []).append(spec)
    out = []
    for name, members in found.items():
        judge = judge_of(members[0])
        if judge is not None and len(members) > 1:
            out.append(Cluster(name, judge, tuple(members)))
    return out


def facts_script(phase: Phase, spec: ContainerSpec) -> str:
    """The facts `spec`'s health probe gathers for its cluster's verdict ("" outside a cluster)."""
    for cluster in clusters(phase):
        if any(m.vmid == spec.vmid for m in cluster.members):
            return cluster.judge.facts
    return ""


def verdicts(phase: Phase, gathered: Mapping[str, MemberFacts]) -> list[ClusterVerdict]:
    """Each cluster's verdict from its members' facts (hostname -> facts; a member missing there gave
    none)."""
    out = []
    for cluster in clusters(phase):
        members = [gathered.get(m.hostname) or MemberFacts(m.hostname, m.ip, absent="not probed")
                   for m in cluster.members]
        ok, why = cluster.judge.verdict(phase, members)
        out.append(ClusterVerdict(cluster.name, cluster.judge.component,
                                  tuple(m.hostname for m in cluster.members), ok, why))
    return out
