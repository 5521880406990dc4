"""What `plan` and `up` read from Proxmox per container, asked side by side.

Whether a container exists, where and whether it runs, is one cluster-wide read (/cluster/resources);
what it is configured with is not: PVE has no call that returns many containers' configs or firewalls,
and drift in net0, the nameserver or a rule is visible only there. So each container's own reads (its
pending config; its firewall options and rules) are made for every container at once, at most READERS
in flight: a converged run's wall time then does not grow with the container count, while its call
count grows by exactly those reads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from psa_provision import firewall
from psa_provision.phases import ContainerSpec, Phase
from psa_provision.proxmox import ProxmoxClient

READERS = 8  # API reads in flight at once (requests keeps 10 connections per host in its pool)

T = TypeVar("T")
R = TypeVar("R")


def side_by_side(read: Callable[[T], R], items: Iterable[T], *, workers: int = READERS) -> list[R]:
    """read(item) for every item, at most `workers` at once; the answers in the items' order. A read
    that fails raises here, the first in the items' order, once every read has ended."""
    todo = list(items)
    if len(todo) <= 1:
        return [read(item) for item in todo]
    with ThreadPoolExecutor(max_workers=min(workers, len(todo)), thread_name_prefix="px-read") as pool:
        futures = [pool.submit(read, item) for item in todo]
    return [future.result() for future in futures]


@dataclass(frozen=True)
class FirewallNow:
    """A container's firewall as Proxmox has it (options and rules), with the datacenter's options."""

    options: dict[str, Any]
    rules: list[dict[str, Any]]
    cluster: dict[str, Any]


def firewall_now(px: ProxmoxClient, phase: Phase, specs: Sequence[ContainerSpec],
                 cluster: dict[str, Any] | None = None) -> dict[int, FirewallNow]:
    """vmid -> FirewallNow of each existing container in `specs` (none when the phase has no firewall):
    the datacenter's options (`cluster`, as preflight read them, else read here once), each
    container's options and rules side by side."""
    if not firewall.enabled(phase) or not specs:
        return {}
    if cluster is None:
        cluster = px.datacenter_firewall_options()

    def read(job: tuple[ContainerSpec, str]) -> Any:
        spec, what = job
        if what == "options":
            return px.firewall_options(spec.node, spec.vmid)
        return px.firewall_rules(spec.node, spec.vmid)

    answers = iter(side_by_side(read, [(spec, what) for spec in specs for what in ("options", "rules")]))
    return {spec.vmid: FirewallNow(next(answers), next(answers), cluster) for spec in specs}
