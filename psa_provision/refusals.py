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


def unbuilt_clusters(phase: Phase) -> list[str]:
    """The phase's clusters (containers with `cluster:`, phase 3). This version provisions every member
    as a standalone store: PostgreSQL replication, Redis Sentinel, the RabbitMQ and Elasticsearch
    clusters and the load balancer are not configured yet."""
    return sorted({c.cluster for c in phase.containers if c.cluster})


def refuse_clusters(phase: Phase, command: str) -> None:
    """InputError before any call: `up`/`migrate` of a phase with clusters would build standalone
    stores that look like high availability and are not."""
    clusters = unbuilt_clusters(phase)
    if clusters:
        raise InputError(
            f"refusing `{command} {phase.name}`: its clusters ({', '.join(clusters)}) need replication and "
            "clustering that this version does not configure yet; every member would run as a standalone "
            "store, which is not high availability",
            hint=f"`psa-provision plan {phase.name}` shows its containers; phases without clusters "
                 "(phase0 to phase2) are supported")
