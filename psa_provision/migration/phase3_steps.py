"""Phase 2 -> 3 as data: which container is converted when, how each step is checked and undone.

The stores stay where phase 2 has them and become the first member of their cluster; phase 3's new
containers join them. `up phase3` on a live phase 2 creates the new containers and leaves every
conversion to `migrate phase3` (conversion_held): converting a store that serves the app is a
migration step, journaled, checked and undone when its check fails. Order:

1. `prepare`: the grants file says a conversion is under way (so `up phase3` keeps holding).
2. etcd: its three members side by side (a member's first start waits for a quorum), then a quorum.
3. PostgreSQL (services/patroni/migration.py): Patroni's packages and files on the standalone
   server, its users, the takeover of the data directory as leader, each replica cloned, a
   synchronous standby.
4. Redis: the replicas first (they copy the standalone while it still serves, phase 2's address and
   password), then the standalone as the cluster's primary with its Sentinel.
5. RabbitMQ: the phase-2 node first (the cluster's cookie and files), then the members join it; then
   each classic queue becomes a quorum queue of the same name (services/rabbitmq/migration.py).
6. Elasticsearch: the phase-2 node restarts with the cluster configuration first, so the new members
   join the cluster that holds the data (not form a second one).
7. The load balancer pair (HAProxy, keepalived: the VIP).
8. The app's second copies (phase 3's new app containers) in one step: built and started side by
   side, at most SECOND_COPIES_AT_ONCE at once; they serve nothing until each answers /health (HAProxy
   holds a backend down until then). Then the phase-2 app containers, which serve, one step each in
   turn: phase 3's .env (PostgreSQL through the VIP's port 5000, Sentinels, the RabbitMQ nodes) and
   PM2 reloads the apps that read it one instance at a time, each checked healthy before the next.
9. `finish`: the grants file goes; `up phase3` converges everything from then on.

A `converge` step applies the container's phase-3 plan from `up` (the service homes know the
clustered configuration), to each of its containers side by side when it has several (`together`),
each then checked by its own units; `files` applies only its packages and files (Patroni's takeover
then starts the server itself); `script` steps are Patroni's own (run, check, rollback).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from psa_provision.changes import Sensitive
from psa_provision.phases import ContainerSpec, Phase
from psa_provision.services.catalog import managed_services
from psa_provision.services.etcd.component import members as etcd_members
from psa_provision.services.patroni import members as patroni_members
from psa_provision.services.patroni import migration as patroni_migration
from psa_provision.services.rabbitmq import cluster as rabbit_cluster
from psa_provision.services.redis import topology as redis_topology

PREPARE, FINISH = "prepare", "finish"
SECOND_COPIES = "app second copies"
# The app's second copies converging at once. Each installs Node.js and PM2 (apt-get, dpkg, npm) and
# builds the bundle (npm ci, tsc): CPU and disk bound, with downloads and the /health polls between.
# The sandbox has 2 cores and phase 2's app containers keep serving meanwhile, so as many as `up`
# configures at once (waves.WORKERS), not all eight.
SECOND_COPIES_AT_ONCE = 3
REPLICA_SETTLE_S = 600.0  # a new replica clones the leader (pg_basebackup) before it streams
SYNC_SETTLE_S = 120.0  # Patroni names a synchronous standby on its next loop
KINDS = ("hold", "converge", "files", "script", "check", "queues", "release")
# the check of the `queues` step: no classic queue left in vhost /
NO_CLASSIC_QUEUE = ("out=$(rabbitmqctl -q list_queues --no-table-headers name type </dev/null) || exit 1\n"
                    "! printf '%s\\n' \"$out\" | grep -Eq '[[:space:]]classic$'\n")


@dataclass(frozen=True)
class HaAction:
    """One step of phase 2 -> 3 on one container (vmid 0: the tool host's own bookkeeping)."""

    name: str
    vmid: int
    kind: str
    summary: str
    run: str = ""  # script steps: bash on the container
    check: str = ""  # bash whose exit code 0 says the step's effect holds ("" for hold/release)
    judge: patroni_migration.Judge | None = field(default=None, compare=False)  # else: exit code 0
    rollback: str = ""  # bash; "" when nothing to undo or undone by converging phase 2's plan again
    stdin: Sensitive | None = None
    shared: bool = False  # the container ran in phase 2 (a rollback converges phase 2's plan again)
    together: tuple[int, ...] = ()  # converge steps: containers converged side by side with `vmid`
    at_once: int = 0  # together steps: at most this many converging at once (0: all of them)
    # together steps: (vmid, its own check) of each of `together` (`check` is `vmid`'s; units may differ)
    checks: tuple[tuple[int, str], ...] = ()
    settle_s: float = 0.0  # how long the check may take to hold (asked again every few seconds)
    # converge again once the check holds: a Patroni replica's clone (Debian's pg_clonecluster_patroni)
    # makes the cluster's files, start.conf among them, after the first pass found none to write
    again: bool = False

    def check_on(self, vmid: int) -> str:
        """The check run on container `vmid` of the step (`vmid` or one of `together`)."""
        return dict(self.checks).get(vmid, self.check)


def units_active(spec: ContainerSpec) -> str:
    """The check of a converge step: every unit the container's components run is active."""
    units = " ".join(managed_services(spec.components, clustered=spec.cluster is not None))
    return f"systemctl is-active --quiet {units}\n" if units else "true\n"


def cluster_order(phase: Phase, component: str) -> list[ContainerSpec]:
    """The members of `component`'s cluster in the phase file's order (the first: phase 2's store)."""
    first = next((c for c in phase.with_component(component) if c.cluster), None)
    if first is None:
        return []
    if component == "redis":
        return redis_topology.members(phase, first)
    if component == "rabbitmq":
        return rabbit_cluster.members(phase, first)
    return [c for c in phase.with_component(component) if c.cluster == first.cluster]


def _converge(spec: ContainerSpec, old_vmids: set[int], why: str) -> HaAction:
    shared = spec.vmid in old_vmids
    return HaAction(f"{spec.hostname}", spec.vmid, "converge", why, check=units_active(spec),
                    shared=shared)


def _together(name: str, specs: list[ContainerSpec], why: str, *, at_once: int = 0) -> HaAction:
    """One converge step for `specs` side by side (the first is the step's vmid), each container checked
    by its own units (units_active)."""
    return HaAction(name, specs[0].vmid, "converge", why, check=units_active(specs[0]),
                    together=tuple(s.vmid for s in specs[1:]), at_once=at_once,
                    checks=tuple((s.vmid, units_active(s)) for s in specs[1:]))


def _patroni(step: patroni_migration.Step, kind: str) -> HaAction:
    return HaAction(f"postgresql {step.name}", step.vmid, kind, step.summary, run=step.run,
                    check=step.check.script, judge=step.check.judge, rollback=step.rollback,
                    stdin=step.stdin, shared=True)


def actions(old: Phase, new: Phase, passwords: dict[str, str]) -> list[HaAction]:
    """Every step from `old` (standalone stores) to `new` (their clusters), in order."""
    old_vmids = {c.vmid for c in old.containers}
    out = [HaAction(PREPARE, 0, "hold", "`up` leaves the stores' conversion to this migration")]
    etcd = etcd_members(new)
    if etcd:  # side by side, all at once: each member's first start waits for a quorum of the others
        out.append(_together("etcd members", etcd, f"etcd: its {len(etcd)} members side by side (a "
                             "member's first start waits for a quorum)"))
    pg = patroni_migration.steps(old, new, passwords)
    source = patroni_migration.source_of(old, new)
    by_name = {s.name: s for s in pg}
    out.append(_patroni(by_name["etcd"], "check"))
    out.append(HaAction(f"postgresql files {source.hostname}", source.vmid, "files",
                        "Patroni's packages and configuration, nothing started or stopped", shared=True))
    out.append(_patroni(by_name["roles"], "script"))
    out.append(_patroni(by_name["takeover"], "script"))
    for member in patroni_members(new):
        if member.vmid == source.vmid:
            continue
        step = by_name[f"replica {member.hostname}"]
        out.append(HaAction(f"postgresql replica {member.hostname}", member.vmid, "converge", step.summary,
                            check=step.check.script, judge=step.check.judge, rollback=step.rollback,
                            settle_s=REPLICA_SETTLE_S, again=True))
    out.append(dataclasses.replace(_patroni(by_name["synchronous"], "check"), settle_s=SYNC_SETTLE_S))
    redis = cluster_order(new, "redis")
    if redis:  # the replicas copy the standalone first, then it becomes their primary
        out += [_converge(m, old_vmids, f"Redis replica of {redis[0].hostname}, its Sentinel")
                for m in redis[1:]]
        out.append(_converge(redis[0], old_vmids, "Redis primary of the set, its Sentinel"))
    rabbit = cluster_order(new, "rabbitmq")
    out += [_converge(m, old_vmids, "RabbitMQ cluster seed (phase 2's node, its data)" if i == 0
                      else f"RabbitMQ member joining {rabbit[0].hostname}") for i, m in enumerate(rabbit)]
    if rabbit:  # before any app gets phase 3's .env: its consumers declare their queues quorum
        out.append(HaAction("rabbitmq quorum queues", rabbit[0].vmid, "queues",
                            "each classic queue becomes a quorum queue of the same name, no message lost",
                            check=NO_CLASSIC_QUEUE, shared=True))
    es = cluster_order(new, "elasticsearch")
    out += [_converge(m, old_vmids, "Elasticsearch: phase 2's node restarts as the cluster's first member"
                      if i == 0 else f"Elasticsearch member joining {es[0].hostname}")
            for i, m in enumerate(es)]
    out += [_converge(m, old_vmids, "load balancer (HAProxy, keepalived)")
            for m in new.with_component("haproxy")]
    copies = sorted((c for c in new.with_component("app") if c.vmid not in old_vmids), key=lambda c: c.vmid)
    if copies:  # they serve nothing until each answers /health: no order among them matters
        out.append(_together(SECOND_COPIES, copies, f"the app's {len(copies)} second copies built and "
                             f"started side by side, at most {SECOND_COPIES_AT_ONCE} at once (each serves "
                             "nothing until it answers /health)", at_once=SECOND_COPIES_AT_ONCE))
    serving = sorted((c for c in new.with_component("app") if c.vmid in old_vmids), key=lambda c: c.vmid)
    out += [_converge(m, old_vmids, "phase 3's .env (the VIP, Sentinels, RabbitMQ nodes), PM2 reload one "
                      "instance at a time") for m in serving]  # they serve: one container at a time
    out.append(HaAction(FINISH, 0, "release", "the grants file goes: `up phase3` converges everything"))
    return out


def standalone_firsts(old: Phase, new: Phase, existing: set[int]) -> list[ContainerSpec]:
    """The first members of `new`'s clusters that are standalone stores of `old` and exist now (phase
    order): the stores a migration converts in place.

    existing: the vmids of containers that exist and were created before `new` (a container `up new`
    created itself, say by a run killed half way, is no store of `old`)."""
    firsts = [m[0] for m in (cluster_order(new, c) for c in ("redis", "rabbitmq", "elasticsearch")) if m]
    firsts += [c for c in patroni_members(new)[:1]]
    standalone = {c.vmid for c in old.containers if c.cluster is None}
    held = {c.vmid for c in firsts if c.vmid in standalone and c.vmid in existing}
    return [c for c in new.containers if c.vmid in held]


def conversion_held(old: Phase, new: Phase, existing: set[int], finished: bool) -> bool:
    """Whether `up new` must leave the stores' conversion to `migrate new`: a phase with clusters whose
    first members are standalone stores of `old` that exist now, while the migration has not finished."""
    if finished or not any(c.cluster for c in new.containers):
        return False
    return bool(standalone_firsts(old, new, existing))


def converged_by_migration(new: Phase) -> list[ContainerSpec]:
    """Every container `actions` converges (phase order): etcd, the Patroni members, the Redis,
    RabbitMQ and Elasticsearch clusters, the load balancers, the app containers."""
    found = {c.vmid for c in [*etcd_members(new), *patroni_members(new), *new.with_component("haproxy"),
                              *new.with_component("app")]}
    found |= {c.vmid for comp in ("redis", "rabbitmq", "elasticsearch") for c in cluster_order(new, comp)}
    return [c for c in new.containers if c.vmid in found]


def held_vmids(old: Phase, new: Phase, existing: set[int], finished: bool) -> frozenset[int]:
    """The containers `up new` converges with held_spec: none unless conversion_held, else every
    container the migration converges, not only the standalone stores. Converged in full before those
    are converted, a new Patroni member would bootstrap a second, empty cluster once its wait for a
    leader runs out; a new RabbitMQ member would fail to join a seed with another Erlang cookie; two new
    Elasticsearch members would elect each other, a second cluster the data never joins; and an app
    container would get phase 3's .env, PostgreSQL through a leader port nobody serves yet."""
    if not conversion_held(old, new, existing, finished):
        return frozenset()
    return frozenset(c.vmid for c in converged_by_migration(new))


def held_spec(spec: ContainerSpec) -> ContainerSpec:
    """What `up` converges of a container while the conversion is held: its base only (the container
    exists, is reachable and has its packages' sources; `migrate` converts it)."""
    return spec.model_copy(update={"components": [c for c in spec.components if c == "base"]})
