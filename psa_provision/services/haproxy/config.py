"""haproxy.cfg from the phase: which app services the load balancer fronts and where each one runs.

Pure. A frontend per app service (the gateway and the seven services) binds `*:<port>`, so it also
answers on the VIP without `net.ipv4.ip_nonlocal_bind` (a sysctl an unprivileged container may not
set): on the backup the VIP is absent and the wildcard socket simply sees no traffic for it.
Other services contribute whole sections (e.g. PostgreSQL's leader/replica frontends checked through
Patroni's REST API) through SECTIONS: functions of the phase that return haproxy.cfg text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ...phases import APP_SERVICES, Phase
from ...render import render
from ..patroni import haproxy as patroni_haproxy
from . import COMPONENT, CONF, HEALTH_PATH, STATS_SOCKET, TEMPLATES

# Sections other services add to haproxy.cfg (each: phase -> text, "" for nothing): PostgreSQL's
# leader (5000) and replica (5001) frontends, checked through Patroni's REST API.
SECTIONS: tuple[Callable[[Phase], str], ...] = (patroni_haproxy.fragment,)


@dataclass(frozen=True)
class Server:
    name: str  # the container's hostname
    address: str  # ip:port


@dataclass(frozen=True)
class Backend:
    """One app service behind the load balancer: its port and the containers that run it."""

    service: str
    port: int
    servers: tuple[Server, ...]


def backends(phase: Phase) -> list[Backend]:
    """Every app service of the phase, with each container whose `services` list names it."""
    out = []
    for service in sorted(APP_SERVICES, key=APP_SERVICES.__getitem__):
        spec = phase.services.get(service)
        if spec is None:
            continue
        hosts = [c for c in phase.containers if service in c.services]
        servers = tuple(Server(c.hostname, f"{c.ip}:{spec.port}") for c in hosts)
        out.append(Backend(service, spec.port, servers))
    return out


def front_address(phase: Phase) -> str | None:
    """Where clients reach the load balancers: the phase file's `vip` (without prefix), else the first
    load balancer's address; None when the phase has none."""
    lbs = phase.with_component(COMPONENT)
    if not lbs:
        return None
    vip = next((c.vip for c in lbs if c.vip), None)
    return vip.split("/")[0] if vip else lbs[0].ip


def wildcard_ports(phase: Phase) -> list[int]:
    """The ports haproxy.cfg binds on every address (`*:<port>`): each app service's and the
    PostgreSQL leader/replica frontends'."""
    return sorted({b.port for b in backends(phase)} | {lst.port for lst in patroni_haproxy.listens(phase)})


def load_balancers(phase: Phase) -> list[str]:
    """Hostnames of the phase's load balancer containers (they run haproxy)."""
    return [c.hostname for c in phase.with_component("haproxy")]


def conf_content(phase: Phase) -> str:
    """haproxy.cfg for every load balancer of the phase (both of a pair get the same file)."""
    extra = [text.strip("\n") for text in (section(phase) for section in SECTIONS) if text.strip()]
    return render(TEMPLATES[CONF], backends=backends(phase), health_path=HEALTH_PATH,
                  stats_socket=STATS_SOCKET, extra_sections=extra)
