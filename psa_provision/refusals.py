"""Refusals before any call: what a command will not do to a phase, and why (file:line when it is input)."""

from __future__ import annotations

from psa_provision import privileges
from psa_provision.errors import InputError
from psa_provision.inventory import Inventory
from psa_provision.phases import Phase, where


def refuse_root_only(inv: Inventory, phase: Phase) -> None:
    """InputError (file:line) for container features Proxmox lets only root@pam set, when the inventory
    logs in as anyone else; an API token never counts as root@pam, not even root@pam!token."""
    auth = inv.proxmox.auth
    caller = str(auth.token_id if auth.kind == "token" else auth.user)
    for i, spec in enumerate(phase.containers):
        why = privileges.root_only(spec.unprivileged, {str(k): v for k, v in spec.features.items()}, caller)
        if why:
            here = where(phase.name, inv.phases_dir, "containers", i, "features")
            raise InputError(f"{here}: container {spec.vmid}: {why}",
                             hint="keep only nesting on an unprivileged container, or log in as root@pam "
                                  "with a password (proxmox.auth.user) to set the others")


# The components whose clustering each command builds (a cluster is built when its members run one).
# `up` configures every phase-3 cluster: Patroni + etcd, Redis with Sentinel, the RabbitMQ and
# Elasticsearch clusters, the HAProxy + keepalived pair; `migrate` builds the same from phase 2's
# standalone stores (migration/phase3_steps.py).
_BUILT = frozenset({"postgresql", "etcd", "redis", "rabbitmq", "elasticsearch", "haproxy", "keepalived"})
CLUSTERED: dict[str, frozenset[str]] = {"up": _BUILT, "plan": _BUILT, "migrate": _BUILT}


def unbuilt_clusters(phase: Phase, command: str = "up") -> list[str]:
    """The phase's clusters (containers with `cluster:`) that `command` does not build: none of their
    members runs a component whose clustering it configures (CLUSTERED)."""
    built = CLUSTERED.get(command, frozenset())
    members: dict[str, set[str]] = {}
    for c in phase.containers:
        if c.cluster:
            members.setdefault(c.cluster, set()).update(c.components)
    return sorted(name for name, components in members.items() if not components & built)


def refuse_clusters(phase: Phase, command: str) -> None:
    """InputError before any call: `command` of a phase with clusters it does not build would make
    standalone stores that look like high availability and are not."""
    clusters = unbuilt_clusters(phase, command)
    if clusters:
        raise InputError(
            f"refusing `{command} {phase.name}`: its clusters ({', '.join(clusters)}) need replication and "
            f"clustering that `{command}` does not configure yet; every member would run as a standalone "
            "store, which is not high availability",
            hint=f"`psa-provision plan {phase.name}` shows its containers; `up {phase.name}` builds them")
