"""HAProxy's PostgreSQL frontends: 5000 to the leader, 5001 to the replicas, by Patroni's REST API.

Data for the load balancer's home to include in its haproxy.cfg (`fragment(phase)`), as Patroni's own
haproxy.cfg does it: TCP listens whose servers are the cluster's members, each checked over HTTP on
port 8008 (`option httpchk GET /leader`, `http-check expect status 200`). A member that stops
answering 200 is marked down after 3 failed checks 3 s apart and its sessions are cut
(`on-marked-down shutdown-sessions`), so clients reconnect to the new leader instead of hanging on
the old one; it comes back after 2 good checks.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...phases import Phase
from ...render import render
from . import LEADER_PORT, PG_PORT, REPLICA_PORT, REST_PORT, members

TEMPLATE = "haproxy-postgresql.cfg.j2"
# HAProxy's `timeout client/server` must outlast an idle pooled connection: the LB's defaults section
# sets them (Patroni's example: 30m), this fragment only adds listens.
MAXCONN = 100


@dataclass(frozen=True)
class Server:
    name: str
    ip: str
    port: int = PG_PORT
    check_port: int = REST_PORT
    maxconn: int = MAXCONN


@dataclass(frozen=True)
class Listen:
    """One HAProxy `listen` section: a port routed to the members whose REST `check_path` answers 200."""

    name: str
    port: int
    check_path: str
    servers: tuple[Server, ...]
    bind: str = "*"


def listens(phase: Phase, bind: str = "*") -> list[Listen]:
    """postgresql_primary on 5000 (GET /leader), postgresql_replicas on 5001 (GET /replica); none
    when the phase has no Patroni cluster."""
    servers = tuple(Server(m.hostname, m.ip) for m in members(phase))
    if not servers:
        return []
    return [Listen("postgresql_primary", LEADER_PORT, "/leader", servers, bind),
            Listen("postgresql_replicas", REPLICA_PORT, "/replica", servers, bind)]


def fragment(phase: Phase, bind: str = "*") -> str:
    """The listens as haproxy.cfg text ("" without a Patroni cluster)."""
    found = listens(phase, bind)
    return render(TEMPLATE, listens=found) if found else ""


def client_endpoint(phase: Phase) -> tuple[str, int] | None:
    """(host, port) where the apps reach the PostgreSQL leader: the load balancer's virtual IP (the
    phase file's `vip`; else its first container's address) on port 5000; None when the phase has no
    Patroni cluster or no load balancer (the apps then reach the server itself)."""
    lbs = phase.with_component("haproxy")
    if not members(phase) or not lbs:
        return None
    vip = next((c.vip for c in lbs if c.vip), None)
    return (vip.split("/")[0] if vip else lbs[0].ip), LEADER_PORT
