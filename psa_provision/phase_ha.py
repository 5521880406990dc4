"""High-availability checks of a phase file: nothing may be a single point of failure.

Part of `phases --check` (phases.validate), each finding at the file and line to fix:
- a cluster whose members hold a quorum (PostgreSQL under Patroni, etcd, Redis with Sentinel,
  RabbitMQ, Elasticsearch) has at least 3 members, so it survives losing one; that no two members
  share a node is checked with the other cluster rules in phases.py;
- a load balancer (haproxy) is never alone: a pair, or more, in one cluster, each running keepalived,
  all with the same `vip` in their bridge's subnet that no container has as its own address;
- in a phase marked `high_availability: true`: every application service runs on at least 2 containers
  on different nodes, every store runs in a cluster, PostgreSQL has an etcd cluster as Patroni's store,
  and the services have a load balancer pair in front of them.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from pathlib import Path

from .loader import Loc, line_of, show
from .phases import SUBNETS, ContainerSpec, Phase, Problem

# Components whose cluster decides by majority (or elects a primary by one): 3 members survive one loss.
QUORUM_COMPONENTS: tuple[str, ...] = ("postgresql", "etcd", "redis", "rabbitmq", "elasticsearch")
MIN_QUORUM_MEMBERS = 3
LOAD_BALANCER = "haproxy"
VIP_KEEPER = "keepalived"


def ha_problems(phase: Phase, lines: dict[Loc, int], path: Path) -> list[Problem]:
    """Every HA finding of one phase file (errors only)."""
    out = _quorum(phase, lines, path) + _load_balancers(phase, lines, path)
    if phase.high_availability:
        out += _services_spread(phase, lines, path) + _stores_clustered(phase, lines, path)
    return out


def _members(phase: Phase) -> dict[str, list[tuple[int, ContainerSpec]]]:
    """cluster name -> [(index in the file, container)] in file order."""
    out: dict[str, list[tuple[int, ContainerSpec]]] = defaultdict(list)
    for i, c in enumerate(phase.containers):
        if c.cluster is not None:
            out[c.cluster].append((i, c))
    return out


def _quorum(phase: Phase, lines: dict[Loc, int], path: Path) -> list[Problem]:
    """A quorum cluster with fewer than 3 members loses its majority (or its primary) with one member."""
    out: list[Problem] = []
    for name, members in _members(phase).items():
        kinds = sorted({k for _, c in members for k in c.components if k in QUORUM_COMPONENTS})
        if not kinds or len(members) >= MIN_QUORUM_MEMBERS:
            continue
        i, _ = members[0]
        vmids = ", ".join(str(c.vmid) for _, c in members)
        out.append(Problem(str(path), line_of(("containers", i, "cluster"), lines),
                           f"cluster {show(name)} has {len(members)} member(s) ({vmids}); {', '.join(kinds)} "
                           f"needs >= {MIN_QUORUM_MEMBERS} to keep a quorum when one is lost -> add members "
                           f"with cluster: {show(name)} on other nodes"))
    return out


def _load_balancers(phase: Phase, lines: dict[Loc, int], path: Path) -> list[Problem]:
    """No lone load balancer: each is in a cluster of >= 2 with keepalived and one shared, valid vip."""
    out: list[Problem] = []
    clusters = _members(phase)
    addresses = {c.ip: c.vmid for c in phase.containers}
    for i, c in enumerate(phase.containers):
        where = str(path)
        if LOAD_BALANCER not in c.components:
            if c.vip is not None:
                out.append(Problem(where, line_of(("containers", i, "vip"), lines),
                                   f"container {c.vmid} has a vip but no {LOAD_BALANCER} -> a vip belongs "
                                   f"to a load balancer pair ({LOAD_BALANCER} and {VIP_KEEPER}); remove it"))
            continue
        peers = [p for _, p in clusters.get(c.cluster or "", []) if LOAD_BALANCER in p.components]
        if len(peers) < 2:
            out.append(Problem(where, line_of(("containers", i, "components"), lines),
                               f"load balancer {c.vmid} is alone: losing it stops every service behind it -> "
                               "add a second load balancer container on another node, both with the same "
                               "cluster: and vip:"))
        if VIP_KEEPER not in c.components:
            out.append(Problem(where, line_of(("containers", i, "components"), lines),
                               f"load balancer {c.vmid} has no {VIP_KEEPER} to move its vip -> add "
                               f"{VIP_KEEPER} to its components"))
        if c.vip is None:
            out.append(Problem(where, line_of(("containers", i, "vmid"), lines),
                               f"load balancer {c.vmid} has no vip -> add vip: with the virtual address its "
                               "pair shares, e.g. 10.0.20.250/24"))
            continue
        out += _vip(c, i, peers, addresses, lines, path)
    return out


def _vip(c: ContainerSpec, i: int, peers: list[ContainerSpec], addresses: dict[str, int],
         lines: dict[Loc, int], path: Path) -> list[Problem]:
    """The vip is an address with prefix in the bridge's subnet, shared by the pair, no one's own."""
    line = line_of(("containers", i, "vip"), lines)
    vip = str(c.vip)
    try:
        iface = ipaddress.IPv4Interface(vip)
    except ValueError:
        return [Problem(str(path), line, f"vip '{show(vip)}' is not an IPv4 address with prefix -> write "
                        "e.g. 10.0.20.250/24")]
    subnet = SUBNETS.get(c.bridge)
    if "/" not in vip or iface.network != ipaddress.IPv4Interface(c.ip_cidr).network:
        return [Problem(str(path), line, f"vip {vip} is not in {c.bridge}'s subnet "
                        f"{subnet or ipaddress.IPv4Interface(c.ip_cidr).network} -> write a free address "
                        "there, with the same prefix as ip_cidr")]
    out: list[Problem] = []
    owner = addresses.get(str(iface.ip))
    if owner is not None:
        out.append(Problem(str(path), line, f"vip {iface.ip} is container {owner}'s own address -> pick an "
                           "address no container has"))
    others = sorted({str(p.vip) for p in peers if p.vip is not None and p.vip != vip})
    if others:
        out.append(Problem(str(path), line, f"load balancer {c.vmid} has vip {vip} but its pair has "
                           f"{', '.join(others)} -> give every member of the pair the same vip"))
    return out


def _services_spread(phase: Phase, lines: dict[Loc, int], path: Path) -> list[Problem]:
    """Each application service on >= 2 containers on different nodes, behind a load balancer pair."""
    out: list[Problem] = []
    nodes = {c.vmid: c.node for c in phase.containers}
    for name, svc in phase.services.items():
        placed = [v for v in svc.containers if v in nodes]  # unknown vmids are _placement's finding
        on = sorted({nodes[v] for v in placed})
        if len(on) < 2:
            where = f"{' and '.join(map(str, placed)) or 'no container'}" + (f" (node {on[0]})" if on else "")
            out.append(Problem(str(path), line_of(("services", name), lines),
                               f"service {show(name)} runs on {where}: losing that node stops it -> add "
                               "also_on: [vmid] naming a container on another node that lists the service"))
    if phase.services and not any(LOAD_BALANCER in c.components for c in phase.containers):
        out.append(Problem(str(path), line_of(("services",), lines),
                           "no load balancer in front of the services -> add a pair of containers with "
                           f"components [base, {LOAD_BALANCER}, {VIP_KEEPER}], one cluster: and one vip:"))
    return out


def _stores_clustered(phase: Phase, lines: dict[Loc, int], path: Path) -> list[Problem]:
    """Every store is a cluster member; PostgreSQL's cluster has etcd as Patroni's store."""
    out: list[Problem] = []
    for i, c in enumerate(phase.containers):
        alone = [k for k in c.components if k in QUORUM_COMPONENTS]
        if alone and c.cluster is None:
            out.append(Problem(str(path), line_of(("containers", i, "vmid"), lines),
                               f"container {c.vmid} runs {', '.join(alone)} outside any cluster: a single "
                               "point of failure -> add cluster: and members on the other nodes"))
    clusters = _members(phase)
    has_etcd = any(any("etcd" in c.components for _, c in m) for m in clusters.values())
    for name, members in clusters.items():
        if not has_etcd and any("postgresql" in c.components for _, c in members):
            i, _ = members[0]
            out.append(Problem(str(path), line_of(("containers", i, "cluster"), lines),
                               f"cluster {show(name)} runs PostgreSQL under Patroni, which needs an etcd "
                               "cluster as its store -> add 3 containers with components [base, etcd] and "
                               "cluster: etcd, one per node"))
    return out
