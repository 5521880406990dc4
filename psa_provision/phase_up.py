"""Containers of a phase brought up side by side, and the Proxmox firewall state their plan starts from.

Stores first (containers without app services), then the app containers, each wave in a bounded thread
pool: a container that fails is reported and the others go on; an app container whose store failed
is skipped (it could only time out waiting for /health).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from psa_provision import firewall
from psa_provision.errors import ProvisionError
from psa_provision.phases import ContainerSpec, Phase
from psa_provision.plan import Change
from psa_provision.proxmox import ProxmoxClient

WORKERS = 3  # containers configured at once (each apt-get/dpkg run is CPU and disk bound)


class HasSpec(Protocol):
    """A container state (engine.ContainerState): its phase spec."""

    spec: ContainerSpec


S = TypeVar("S", bound=HasSpec)


@dataclass
class Failure:
    """One container that did not converge, and why."""

    spec: ContainerSpec
    error: ProvisionError


def is_app(spec: ContainerSpec) -> bool:
    """An app container waits for the stores: it goes in the second wave."""
    return bool(spec.services) or "app" in spec.components


def waves(states: Sequence[S]) -> list[list[S]]:
    """[stores, app containers], empty waves dropped; phase order kept inside a wave, except that a
    gateway container comes last among several app containers (its /health asks every other service:
    started first it would hold a worker waiting for them)."""
    first = [s for s in states if not is_app(s.spec)]
    second = sorted((s for s in states if is_app(s.spec)), key=lambda s: firewall.GATEWAY in s.spec.services)
    return [w for w in (first, second) if w]


def run_all(states: Sequence[S], work: Callable[[S], None], *, note: Callable[[str], None],
            workers: int = WORKERS) -> list[Failure]:
    """work(state) for every container, wave by wave, at most `workers` at once; the failures."""
    failures: list[Failure] = []
    for wave in waves(states):
        if failures and any(is_app(s.spec) for s in wave):
            for state in wave:
                names = ", ".join(f.spec.hostname for f in failures)
                note(f"{state.spec.hostname}: skipped, the containers it needs failed ({names})")
            break
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(wave)))) as pool:
            futures = [(s, pool.submit(work, s)) for s in wave]
            for state, future in futures:
                try:
                    future.result()
                except ProvisionError as exc:
                    note(f"{state.spec.hostname} (container {state.spec.vmid}) failed: {exc.message}")
                    failures.append(Failure(state.spec, exc))
    return failures


def firewall_changes(px: ProxmoxClient, phase: Phase, spec: ContainerSpec,
                     config: dict[str, Any] | None) -> list[Change]:
    """The firewall plan of one container from Proxmox's current state (nothing read for phase 0)."""
    if not firewall.enabled(phase):
        return []
    cluster = px.request("GET", "/cluster/firewall/options") or {}
    if config is None:  # not created yet: everything is to do
        return firewall.plan(phase, spec, config={}, options={}, current_rules=[], cluster=cluster)
    base = f"/nodes/{spec.node}/lxc/{spec.vmid}/firewall"
    return firewall.plan(phase, spec, config=config, options=px.request("GET", f"{base}/options") or {},
                         current_rules=px.request("GET", f"{base}/rules") or [], cluster=cluster)


def others_holding_data(px: ProxmoxClient, phase: Phase, earlier: Sequence[Phase]) -> list[str]:
    """Notes for containers of earlier phases that still exist and this phase leaves alone."""
    mine = {c.vmid for c in phase.containers}
    out = []
    for old in earlier:
        for spec in old.containers:
            if spec.vmid in mine or px.find_vmid(spec.vmid) is None:
                continue
            out.append(f"container {spec.vmid} ({spec.hostname}, {old.name}) is not touched by this phase: "
                       f"it still holds the data until `psa-provision migrate {phase.name}` moves it")
    return out
