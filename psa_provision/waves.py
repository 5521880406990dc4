"""Containers of a phase brought up side by side, and the Proxmox firewall state their plan starts from.

Two waves in a bounded thread pool. First every container does all it can on its own: created, started,
packages, files, the app bundle built; then what needs the others (changes marked `needs_peers`):
the stores first (a RabbitMQ member joins its seed, a Patroni replica starts once a member leads, the
app's objects on the Patroni leader), then the app containers (start or reload their PM2 apps, wait for
/health). So an app container's build runs alongside the stores' installs instead of after them.
Members that only start with a quorum (etcd: its package's first start waits for its peers) run
side by side at the head of the first wave, never queued behind each other. A container that fails is
reported and the others go on; an app container whose store failed does not start its apps (it could
only time out waiting for /health).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from psa_provision import firewall
from psa_provision.changes import Change
from psa_provision.errors import ProvisionError
from psa_provision.phases import ContainerSpec, Phase
from psa_provision.proxmox import ProxmoxClient
from psa_provision.reads import FirewallNow
from psa_provision.services.container import ha as container_ha

WORKERS = 3  # containers configured at once (each apt-get/dpkg run is CPU and disk bound)


class HasSpec(Protocol):
    """A container state (preflight.ContainerState): its phase spec."""

    spec: ContainerSpec


S = TypeVar("S", bound=HasSpec)


@dataclass
class Failure:
    """One container that did not converge, and why."""

    spec: ContainerSpec
    error: ProvisionError


def is_app(spec: ContainerSpec) -> bool:
    """An app container: its PM2 apps need the stores, so they start in the second wave."""
    return bool(spec.services) or "app" in spec.components


def starts_with_quorum(spec: ContainerSpec) -> bool:
    """A member whose install only finishes once its peers run too (etcd waits for a quorum)."""
    return any(c in QUORUM_AT_INSTALL for c in spec.components)


def is_load_balancer(spec: ContainerSpec) -> bool:
    return "haproxy" in spec.components or "keepalived" in spec.components


Finish = Callable[[], None]


# How long a store's first provisioning takes, roughly (packages and their post-install work; measured
# on the sandbox, with the real Elasticsearch's download counted): at most WORKERS run at once, so the
# long ones start first and a short one, not RabbitMQ's Erlang, is the last to begin.
STORE_WEIGHT = {"rabbitmq": 3, "postgresql": 3, "elasticsearch": 2, "redis": 1}
QUORUM_AT_INSTALL = ("etcd",)


def first_wave_order(states: Sequence[S]) -> list[S]:
    """Members that start with a quorum first (side by side), then app containers (their build is the
    longest part), then the stores, longest first, the load balancers last; phase order among equals."""
    def key(state: S) -> tuple[int, int]:
        spec = state.spec
        weight = max((STORE_WEIGHT.get(c, 0) for c in spec.components), default=0)
        group = 0 if starts_with_quorum(spec) else 1 if is_app(spec) else 3 if is_load_balancer(spec) else 2
        return group, -weight

    return sorted(states, key=key)


def second_wave_order(states: Sequence[S]) -> list[S]:
    """Phase order, except that a gateway container comes last among several app containers (its
    /health asks every other service: started first it would hold a worker waiting for them)."""
    return sorted(states, key=lambda s: firewall.GATEWAY in s.spec.services)


def run_all(states: Sequence[S], work: Callable[[S], Finish], *, note: Callable[[str], None],
            workers: int = WORKERS) -> list[Failure]:
    """work(state) for every container, at most `workers` at once (more when a quorum must start
    together); each returns what is left for it once every container has done its own part: the
    stores' rest runs first, then the app containers'. The failures, in phase order."""
    failures: dict[int, Failure] = {}
    finishes: dict[int, Finish] = {}

    def run(wave: Sequence[S], job: Callable[[S], Finish | None], limit: int) -> None:
        with ThreadPoolExecutor(max_workers=max(1, min(limit, len(wave)))) as pool:
            futures = [(s, pool.submit(job, s)) for s in wave]
            for state, future in futures:
                try:
                    left = future.result()
                except ProvisionError as exc:
                    note(f"{state.spec.hostname} (container {state.spec.vmid}) failed: {exc.message}")
                    failures[state.spec.vmid] = Failure(state.spec, exc)
                    continue
                if left is not None:
                    finishes[state.spec.vmid] = left

    def finish(state: S) -> None:
        finishes.pop(state.spec.vmid)()

    together = sum(1 for s in states if starts_with_quorum(s.spec))
    run(first_wave_order(states), work, max(workers, together))
    run([s for s in states if not is_app(s.spec) and s.spec.vmid in finishes], finish, workers)
    second = second_wave_order([s for s in states if is_app(s.spec) and s.spec.vmid in finishes])
    stores = [f.spec.hostname for f in failures.values() if not is_app(f.spec)]
    if stores:
        for state in second:
            note(f"{state.spec.hostname}: PM2 apps not started, the containers they need failed "
                 f"({', '.join(stores)})")
    elif second:
        run(second, finish, workers)
    return [failures[s.spec.vmid] for s in states if s.spec.vmid in failures]


def firewall_changes(px: ProxmoxClient, phase: Phase, spec: ContainerSpec, config: dict[str, Any] | None,
                     now: FirewallNow | None = None) -> list[Change]:
    """The firewall plan of one container from Proxmox's current state (nothing read for phase 0): `now`
    (read for every container at once, reads.firewall_now), else read here. The datacenter's options
    are read again when `now` saw its firewall off: the first container's plan may switch it on."""
    if not firewall.enabled(phase):
        return []
    on = now is not None and str(now.cluster.get("enable", "0")) == "1"
    cluster = now.cluster if now is not None and on else px.datacenter_firewall_options()
    if config is None:  # not created yet: everything is to do
        return firewall.plan(phase, spec, config={}, options={}, current_rules=[], cluster=cluster)
    if now is None:
        now = FirewallNow(px.firewall_options(spec.node, spec.vmid), px.firewall_rules(spec.node, spec.vmid),
                          cluster)
    return firewall.plan(phase, spec, config=config, options=now.options, current_rules=now.rules,
                         cluster=cluster)


def ha_changes(px: ProxmoxClient, phase: Phase) -> list[Change]:
    """Proxmox HA of a `high_availability` phase from the cluster's current lists: one GET of the
    resources and one of the rules (PVE 9) or groups (PVE 8); nothing read for other phases."""
    if not phase.high_availability:
        return []
    major = px.pve_major()
    rules = px.ha_rules() if major >= container_ha.RULES_SINCE else None
    groups = px.ha_groups() if major < container_ha.RULES_SINCE else None
    return container_ha.plan(phase, major, px.ha_resources(), rules, groups)


def others_holding_data(phase: Phase, earlier: Sequence[Phase], resources: Sequence[Mapping[str, Any]]
                        ) -> list[str]:
    """Notes for containers of earlier phases that still exist (in `resources`, /cluster/resources as
    preflight read it) and this phase leaves alone."""
    mine = {c.vmid for c in phase.containers}
    candidates = [(old, spec) for old in earlier for spec in old.containers if spec.vmid not in mine]
    there = {int(g.get("vmid", -1)) for g in resources if g.get("type") in ("lxc", "qemu")}
    out = []
    for old, spec in candidates:
        if spec.vmid in there:
            out.append(f"container {spec.vmid} ({spec.hostname}, {old.name}) is not touched by this phase: "
                       f"it still holds the data until `psa-provision migrate {phase.name}` moves it")
    return out
