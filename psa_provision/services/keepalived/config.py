"""keepalived.conf for each load balancer of the pair, from the phase. Pure.

Decisions (seed: Phase 3 "load balancer"; issue: no single point of failure):
- unicast VRRP (`unicast_src_ip`, `unicast_peer`): the peers are named, nothing relies on multicast
  reaching across the bridge, and only the pair hears the adverts;
- both start as BACKUP with `nopreempt` and different priorities (the first load balancer of the phase
  150, the next 100): the first election is deterministic, and a recovered load balancer does not take
  the VIP back (one failover per fault, not two);
- `track_script` on HAProxy: when HAProxy is not running the instance goes to FAULT and gives the VIP
  up, so the VIP is always where a running HAProxy is;
- the VIP is added to eth0 by keepalived, which needs CAP_NET_ADMIN (and CAP_NET_RAW for VRRP): LXC's
  common.conf drops only mac_admin, mac_override, sys_time, sys_module and sys_rawio, so an
  unprivileged container keeps both, over its own network namespace.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...changes import Secret
from ...errors import InputError
from ...phases import ContainerSpec, Phase
from ...render import render
from . import AUTH_PASS_LENGTH, CONF, INTERFACE, SECRET, TEMPLATES, VIP, VIRTUAL_ROUTER_ID

TOP_PRIORITY = 150
PRIORITY_STEP = 50
TRACK = "/usr/bin/systemctl is-active --quiet haproxy"


@dataclass(frozen=True)
class Peer:
    hostname: str
    ip: str
    priority: int


def pair(phase: Phase) -> list[Peer]:
    """The phase's load balancers (containers running keepalived) in phase-file order, with priorities."""
    members = phase.with_component("keepalived")
    return [Peer(c.hostname, c.ip, TOP_PRIORITY - PRIORITY_STEP * i) for i, c in enumerate(members)]


def vip(phase: Phase) -> str:
    """The virtual IP (with prefix) of the phase's load balancer pair: the phase file's `vip:` of its
    load balancers (phases --check holds them to one shared value), else VIP."""
    return next((c.vip for c in phase.with_component("keepalived") if c.vip), VIP)


def conf_content(phase: Phase, container: ContainerSpec, auth_pass: Secret) -> str:
    """keepalived.conf for `container` (a member of the pair)."""
    if not 1 <= len(auth_pass.value) <= AUTH_PASS_LENGTH:  # a longer one would be cut: its prefix unmasked
        raise InputError(f"secret {SECRET} must be 1 to {AUTH_PASS_LENGTH} characters (VRRP PASS "
                         "authentication)", hint="delete it from the secrets file and run "
                         "`psa-provision init` to generate one")
    peers = pair(phase)
    me = next(p for p in peers if p.hostname == container.hostname)
    return render(TEMPLATES[CONF], me=me, peers=[p for p in peers if p is not me], vip=vip(phase),
                  interface=INTERFACE, router_id=VIRTUAL_ROUTER_ID, track=TRACK,
                  auth_pass=auth_pass.value)
