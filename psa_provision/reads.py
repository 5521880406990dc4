"""What `plan` and `up` read from Proxmox per container, asked side by side.

Whether a container exists and where is one cluster-wide read (/cluster/resources); whether it runs is
one read per node (GET /nodes/{node}/lxc): /cluster/resources gives the status pvestatd broadcast at its
last 10-second sample, `unknown` before the first, not the container's state now. What it is configured
with is neither: PVE has no call that returns many containers' configs or firewalls,
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
from psa_provision.errors import ProxmoxAuthError, ProxmoxError
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


def running_in(lists: Iterable[Sequence[dict[str, Any]]]) -> set[int]:
    """vmids whose row says `running` in nodes' container lists (GET /nodes/{node}/lxc answers)."""
    return {int(row.get("vmid", -1)) for rows in lists for row in rows if row.get("status") == "running"}


def node_lists(px: ProxmoxClient, nodes: Iterable[str]) -> dict[str, list[dict[str, Any]] | None]:
    """node -> its containers as it answers now (GET /nodes/{node}/lxc), read side by side; None for a
    node that does not answer (down)."""
    chosen = sorted(set(nodes))

    def read(node: str) -> list[dict[str, Any]] | None:
        try:
            return px.containers(node)
        except ProxmoxAuthError:
            raise
        except ProxmoxError:
            return None

    return dict(zip(chosen, side_by_side(read, chosen), strict=True))


def guests_now(px: ProxmoxClient) -> dict[int, dict[str, Any]]:
    """vmid -> the guest's /cluster/resources row, a container's `status` and `mem` as its node answers
    now. A node that does not answer (down) leaves its guests the cluster's (`unknown`)."""
    guests = {int(g["vmid"]): dict(g) for g in px.cluster_guests()}
    lists = node_lists(px, {str(g.get("node")) for g in guests.values() if g.get("type") == "lxc"})
    for node, rows in lists.items():
        if rows is None:
            continue
        now = {int(row.get("vmid", -1)): row for row in rows}
        for vmid, guest in guests.items():
            if guest.get("node") == node and guest.get("type") == "lxc":
                row = now.get(vmid, {})
                guest["status"] = "running" if row.get("status") == "running" else "stopped"
                guest["mem"] = row.get("mem", 0)
    return guests


def container_named(px: ProxmoxClient, host: str) -> tuple[str, int] | None:
    """(node, vmid) of the container whose hostname is `host`, from its node's list (the config's name):
    /cluster/resources names a guest only once pvestatd has sampled it. Nodes that do not answer are
    passed over."""
    lists = node_lists(px, {str(g.get("node")) for g in px.cluster_guests() if g.get("type") == "lxc"})
    for node, rows in lists.items():
        for row in rows or []:
            if row.get("name") == host:
                return node, int(row["vmid"])
    return None


def newest_running(phases: Sequence[Phase], guests: dict[int, dict[str, Any]]) -> Phase | None:
    """The last of `phases` whose containers all run in `guests` (guests_now), None when none does."""
    live = [p for p in phases if p.containers and all(
        guests.get(c.vmid, {}).get("status") == "running" for c in p.containers)]
    return live[-1] if live else None


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
