"""Phase 3 as the HA phase file will have it for PostgreSQL: etcd and Patroni on the three PostgreSQL
containers (100 on pve1, 101 on pve2, 102 on pve3; 10.0.30.10-12), the load balancer 240 (10.0.20.240)."""

from __future__ import annotations

from test_planner import CA, SECRETS

from psa_provision import inventory, phases
from psa_provision.packaged import PHASES_DIR, SANDBOX_INVENTORY
from psa_provision.phases import Phase
from psa_provision.secrets import Secrets
from psa_provision.services.context import HostContext

PG_VMIDS = (100, 101, 102)


def ha_phase() -> Phase:
    phase = phases.load_phase("phase3", PHASES_DIR)
    containers = []
    for c in phase.containers:
        if c.vmid in PG_VMIDS:
            c = c.model_copy(update={"components": ["base", "etcd", "postgresql", "patroni"]})
        containers.append(c)
    return phase.model_copy(update={"containers": containers})


def ha_ctx(vmid: int = 100, temporary_clients: tuple[str, ...] = ()) -> HostContext:
    phase = ha_phase()
    inv = inventory.load_inventory(SANDBOX_INVENTORY)
    return HostContext(inv, phase, phase.container(vmid), Secrets(SECRETS), (CA,),
                       temporary_clients=temporary_clients)
