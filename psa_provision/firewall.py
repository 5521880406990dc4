"""The Proxmox firewall of a phase's containers: the rules the topology needs, and the API calls to get there.

Pure: the phase says which container serves what to whom; the current Proxmox state (GET config,
firewall options and rules, datacenter options) comes in as dicts. Only a phase of several containers
gets the firewall (phase 0 keeps everything on loopback in one container, with nothing to filter).
Rules carry a `psa-provision:` comment; rules without it (an operator's own) are left where they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .changes import ApiCall, Change, Noop
from .phases import ContainerSpec, Phase
from .services.rabbitmq import CLI_PORTS as RABBITMQ_CLI

COMPONENT = "firewall"
TAG = "psa-provision:"
GATEWAY = "api-gateway"
SSH_PORT = 22
# component -> the TCP port its clients (the app containers) use
STORE_PORTS: dict[str, int] = {"postgresql": 5432, "redis": 6379, "rabbitmq": 5672, "elasticsearch": 9200}
# component -> the TCP ports the other members of its cluster use (phase 3): Redis replication and
# Sentinel (Sentinel's port is also the app's way to the primary); RabbitMQ's epmd, distribution port
# and its CLI tools' node ports (a range, as Proxmox writes one); ES's transport; Patroni's streaming
# replication and REST API (a new member asks the others' /leader); etcd's clients and peers.
CLUSTER_PORTS: dict[str, tuple[int | str, ...]] = {
    "redis": (6379, 26379), "rabbitmq": (4369, 25672, f"{RABBITMQ_CLI[0]}:{RABBITMQ_CLI[1]}"),
    "elasticsearch": (9300,), "postgresql": (5432, 8008), "etcd": (2379, 2380)}
CLIENT_CLUSTER_PORTS: dict[str, tuple[int, ...]] = {"redis": (26379,)}
OPTIONS: dict[str, str] = {"enable": "1", "policy_in": "DROP", "policy_out": "ACCEPT"}


@dataclass(frozen=True)
class Rule:
    """One inbound ACCEPT rule of a container's firewall (tcp to dport, from source or anywhere; another
    protocol, e.g. vrrp, without a port: dport 0)."""

    dport: int | str  # a port, or a range `low:high`
    source: str
    comment: str
    proto: str = "tcp"

    def params(self) -> dict[str, object]:
        """POST .../firewall/rules parameters (enabled: PVE adds rules disabled unless enable=1)."""
        params: dict[str, object] = {"type": "in", "action": "ACCEPT", "proto": self.proto,
                                     "enable": 1, "comment": f"{TAG} {self.comment}"}
        if self.dport:
            params["dport"] = str(self.dport)
        if self.source:
            params["source"] = self.source
        return params

    def key(self) -> tuple[str, str, str, str, str, str, str]:
        p = self.params()
        return _rule_key({k: str(v) for k, v in p.items()})


def _rule_key(rule: dict[str, Any]) -> tuple[str, str, str, str, str, str, str]:
    """What makes two rules the same (as GET rules returns them or as we would POST them)."""
    return tuple(str(rule.get(k, "")) for k in  # type: ignore[return-value]
                 ("type", "action", "proto", "dport", "source", "enable", "comment"))


def enabled(phase: Phase) -> bool:
    """A phase of several containers gets the firewall: its containers talk to each other. The backup
    repository host does not count: phase 0 plus its backup container keeps phase 0's open bridge."""
    return len([c for c in phase.containers if c.components != ["base", "backup"]]) > 1


def backup_peers(phase: Phase, spec: ContainerSpec) -> list[str]:
    """IPs whose SSH `spec` accepts for pgBackRest: the repository host on a database container
    (backups, stanza), the archiving database containers on the repository host (archive-push)."""
    if "pgbackrest" in spec.components:
        return sorted(c.ip for c in phase.containers if "backup" in c.components)
    if "backup" in spec.components:
        return sorted(c.ip for c in phase.containers if "pgbackrest" in c.components)
    return []


def admin_sources(phase: Phase) -> list[str]:
    """Where SSH comes from: the host side of the phase's bridges (their gateways), as in the sandbox."""
    return sorted({c.gateway for c in phase.containers if c.gateway})


def clients(phase: Phase, spec: ContainerSpec) -> list[str]:
    """IPs of the other containers that run the app: they use this container's stores."""
    return sorted(c.ip for c in phase.containers if c.vmid != spec.vmid and "app" in c.components)


def cluster_peers(phase: Phase, spec: ContainerSpec, component: str) -> list[str]:
    """IPs of the other members of `spec`'s cluster that run `component` ([] when it runs alone)."""
    if spec.cluster is None or component not in CLUSTER_PORTS:
        return []
    return sorted(c.ip for c in phase.containers
                  if c.vmid != spec.vmid and c.cluster == spec.cluster and component in c.components)


def rules(phase: Phase, spec: ContainerSpec) -> list[Rule]:
    """The inbound rules `spec` needs in `phase`: SSH from the admin side, each store's port from its
    clients, the gateway's port from anywhere, other services' ports from the other app containers."""
    out = [Rule(SSH_PORT, src, "ssh from the admin side") for src in admin_sources(phase)]
    out += [Rule(SSH_PORT, ip, "pgbackrest ssh") for ip in backup_peers(phase, spec)]
    for component in spec.components:
        port = STORE_PORTS.get(component)
        if port is not None:
            out += [Rule(port, ip, f"{component} client") for ip in clients(phase, spec)]
        peers = cluster_peers(phase, spec, component)
        if peers:
            out += [Rule(p, ip, f"{component} client") for p in CLIENT_CLUSTER_PORTS.get(component, ())
                    for ip in clients(phase, spec)]
            out += [Rule(p, ip, f"{component} cluster peer") for p in CLUSTER_PORTS.get(component, ())
                    for ip in peers]
    balancers = sorted(c.ip for c in phase.with_component("haproxy") if c.vmid != spec.vmid)
    for name, service in sorted(phase.services_on(spec.vmid).items(), key=lambda kv: kv[1].port):
        if name == GATEWAY:
            out.append(Rule(service.port, "", f"{name} (public entry)"))
        else:  # the load balancers check /health and forward the callers' requests
            callers = sorted({*clients(phase, spec), *balancers})
            out += [Rule(service.port, ip, f"{name} caller") for ip in callers]
    if "haproxy" in spec.components:
        out += load_balancer_rules(phase, spec)
    return out + patroni_rules(phase, spec)


def patroni_rules(phase: Phase, spec: ContainerSpec) -> list[Rule]:
    """Phase 3's PostgreSQL: a member admits the load balancers to the server and to Patroni's REST API
    (HAProxy's /leader and /replica checks); an etcd member admits the PostgreSQL members (Patroni's
    store); a load balancer admits the app containers to the leader and replica ports."""
    patroni = [c for c in phase.with_component("postgresql") if c.cluster]
    if not patroni:
        return []
    out: list[Rule] = []
    balancers = sorted(c.ip for c in phase.with_component("haproxy") if c.vmid != spec.vmid)
    if spec in patroni:
        what = {5432: "postgresql via the load balancer", 8008: "patroni check of the load balancer"}
        out += [Rule(port, ip, what[port]) for port in (5432, 8008) for ip in balancers]
    if "etcd" in spec.components:
        out += [Rule(2379, c.ip, "etcd client (patroni)") for c in patroni if c.vmid != spec.vmid]
    if "haproxy" in spec.components:
        out += [Rule(port, ip, "postgresql via the load balancer") for port in (5000, 5001)
                for ip in clients(phase, spec)]
    return out


def load_balancer_rules(phase: Phase, spec: ContainerSpec) -> list[Rule]:
    """A load balancer: the gateway's port from anywhere, the other services' from the app containers,
    and VRRP (IP protocol 112, keepalived's unicast adverts) from the other member of the pair."""
    out: list[Rule] = []
    for name, service in sorted(phase.services.items(), key=lambda kv: kv[1].port):
        if name == GATEWAY:
            out.append(Rule(service.port, "", f"{name} via the load balancer (public entry)"))
        else:
            out += [Rule(service.port, ip, f"{name} via the load balancer") for ip in clients(phase, spec)]
    if "keepalived" in spec.components:
        out += [Rule(0, c.ip, "keepalived vrrp peer", proto="vrrp")
                for c in phase.with_component("keepalived") if c.vmid != spec.vmid]
    return out


def _kv(text: str) -> dict[str, str]:
    return dict(p.split("=", 1) for p in str(text).split(",") if "=" in p)


def net_flag_change(spec: ContainerSpec, config: dict[str, Any]) -> Change:
    """PUT config net0 with firewall=1 (the MAC and the rest kept) unless the flag is already set."""
    net0 = str(config.get("net0", ""))
    if _kv(net0).get("firewall") == "1":
        return Noop(spec.hostname, COMPONENT, f"net0 of {spec.vmid} has firewall=1")
    parts = [p for p in net0.split(",") if p and not p.startswith("firewall=")]
    value = ",".join([*parts, "firewall=1"])
    params: dict[str, object] = {"net0": value}
    if config.get("digest"):
        params["digest"] = config["digest"]
    return ApiCall(spec.hostname, COMPONENT, f"firewall=1 on net0 of container {spec.vmid}", action="config",
                   node=spec.node, vmid=spec.vmid, params=params, effect="live",
                   diff={"net0": (net0, value)})


def rule_changes(spec: ContainerSpec, want: list[Rule], current: list[dict[str, Any]]) -> list[Change]:
    """Our rules exactly as wanted, in order, on top; else delete ours (last first) and add the wanted.

    POST .../firewall/rules ignores `pos` and puts the new rule first (pve-firewall
    API2/Firewall/Rules.pm register_create_rule: `unshift @$rules, $rule`), so the wanted rules are
    posted last first: they end up on top, in order, and the next run finds them in place.
    """
    ordered = sorted(current, key=lambda r: int(r.get("pos", 0)))
    ours = [r for r in ordered if str(r.get("comment", "")).startswith(TAG)]
    if [_rule_key(r) for r in ordered[:len(want)]] == [w.key() for w in want] and len(ours) == len(want):
        return [Noop(spec.hostname, COMPONENT, f"{len(want)} firewall rules in place")]
    out: list[Change] = []
    for old in sorted(ours, key=lambda r: -int(r.get("pos", 0))):
        out.append(ApiCall(spec.hostname, COMPONENT, f"delete stale rule {old.get('pos')} "
                           f"({old.get('comment', '')})", action="firewall-rule-delete", node=spec.node,
                           vmid=spec.vmid, params={"pos": int(old.get("pos", 0))},
                           diff={"rule": (old.get("comment"), None)}))
    for new in reversed(want):
        params = new.params()
        where = f" from {new.source}" if new.source else " from anywhere"
        out.append(ApiCall(spec.hostname, COMPONENT, f"allow tcp/{new.dport}{where} ({new.comment})",
                           action="firewall-rule-add", node=spec.node, vmid=spec.vmid,
                           params=params, diff={"rule": (None, new.comment)}))
    return out


def options_change(spec: ContainerSpec, current: dict[str, Any]) -> Change:
    """enable=1, policy_in DROP, policy_out ACCEPT on the container's firewall."""
    diff = {k: (current.get(k), v) for k, v in OPTIONS.items() if str(current.get(k, "")) != v}
    if not diff:
        return Noop(spec.hostname, COMPONENT, f"firewall of {spec.vmid} on (policy_in DROP)")
    params: dict[str, object] = dict(OPTIONS)  # no digest: the rule changes before it rewrite the same file
    return ApiCall(spec.hostname, COMPONENT, f"enable the firewall of container {spec.vmid} (policy_in DROP)",
                   action="firewall-options", node=spec.node, vmid=spec.vmid, params=params,
                   diff={k: (o, n) for k, (o, n) in diff.items()})


def cluster_change(host: str, current: dict[str, Any]) -> Change:
    """The datacenter firewall on: without it no container rule is enforced."""
    if str(current.get("enable", "0")) == "1":
        return Noop(host, COMPONENT, "datacenter firewall on")
    return ApiCall(host, COMPONENT, "enable the datacenter firewall", action="datacenter-firewall-options",
                   params={"enable": 1},
                   diff={"enable": (current.get("enable", 0), 1)})


def plan(phase: Phase, spec: ContainerSpec, *, config: dict[str, Any], options: dict[str, Any],
         current_rules: list[dict[str, Any]], cluster: dict[str, Any]) -> list[Change]:
    """Rules first (so SSH stays open), then the container's options, the net0 flag, the datacenter switch."""
    if not enabled(phase):
        return []
    return [*rule_changes(spec, rules(phase, spec), current_rules), options_change(spec, options),
            net_flag_change(spec, config), cluster_change(spec.hostname, cluster)]
