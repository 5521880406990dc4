"""etcd: /etc/default/etcd naming every member of the phase's etcd cluster, then the package, then the unit.

The members are the phase file's containers that run the `etcd` component (one per node; three for a
quorum that survives the loss of any one). The environment file is written before the package is
installed: Debian's postinst starts etcd at once, and a first start with the package's empty defaults
would bootstrap a one-member cluster in /var/lib/etcd/default that later settings cannot turn into a
member of ours (etcd reads ETCD_INITIAL_* only while its data directory is empty). With our file in
place (dpkg keeps it: --force-confold), the first start already joins the phase's cluster; that start
waits for a quorum, so the members are installed side by side (`up` plans containers in parallel).
Changing the membership of a running cluster is `etcdctl member add/remove`, not this file.
"""

from __future__ import annotations

from ...facts import GuestFacts
from ...phases import ContainerSpec, Phase
from ...plan import Change
from ...render import render
from ..common import install, put_file, restart_needed, service
from ..context import HostContext
from . import CLIENT_PORT, COMPONENT, DEFAULTS, PACKAGES, PEER_PORT, TEMPLATES, UNIT


def members(phase: Phase) -> list[ContainerSpec]:
    """The containers of the phase's etcd cluster, in phase-file order."""
    return phase.with_component(COMPONENT)


def client_urls(phase: Phase) -> list[str]:
    """http://IP:2379 of every member (what Patroni's etcd3 section and etcdctl --endpoints list)."""
    return [f"http://{m.ip}:{CLIENT_PORT}" for m in members(phase)]


def cluster_token(phase: Phase) -> str:
    """ETCD_INITIAL_CLUSTER_TOKEN: unique per phase, so members of another cluster cannot join by mistake."""
    return f"psa-{phase.name}-etcd"


def environment(phase: Phase, me: ContainerSpec) -> dict[str, str]:
    """The ETCD_* variables of member `me` (etcd 3.4 reads --initial-cluster as ETCD_INITIAL_CLUSTER)."""
    peers = ",".join(f"{m.hostname}=http://{m.ip}:{PEER_PORT}" for m in members(phase))
    return {
        "ETCD_NAME": me.hostname,
        "ETCD_INITIAL_CLUSTER": peers,
        "ETCD_INITIAL_CLUSTER_STATE": "new",
        "ETCD_INITIAL_CLUSTER_TOKEN": cluster_token(phase),
        "ETCD_INITIAL_ADVERTISE_PEER_URLS": f"http://{me.ip}:{PEER_PORT}",
        "ETCD_LISTEN_PEER_URLS": f"http://{me.ip}:{PEER_PORT}",
        "ETCD_LISTEN_CLIENT_URLS": f"http://{me.ip}:{CLIENT_PORT},http://127.0.0.1:{CLIENT_PORT}",
        "ETCD_ADVERTISE_CLIENT_URLS": f"http://{me.ip}:{CLIENT_PORT}",
    }


def defaults_content(ctx: HostContext) -> str:
    return render(TEMPLATES[DEFAULTS], env=environment(ctx.phase, ctx.container))


def plan(ctx: HostContext, facts: GuestFacts) -> list[Change]:
    conf = put_file(ctx, facts, COMPONENT, DEFAULTS, defaults_content(ctx))
    out: list[Change] = [conf, *install(ctx, facts, COMPONENT, PACKAGES)]
    out += service(ctx, facts, COMPONENT, UNIT, restart=restart_needed(facts, UNIT, [conf], [DEFAULTS]))
    return out
