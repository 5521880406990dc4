"""Phase 3 as the phase file has it: PostgreSQL under Patroni on 100-102 (psa-postgres-1..3, 10.0.30.10-12,
`cluster: postgresql`), etcd on 105-107 (psa-etcd-1..3, 10.0.30.50-52), the load balancer pair 240/241
holding the virtual IP 10.0.20.250."""

from __future__ import annotations

from test_planner import CA, SECRETS

from psa_provision import inventory, phases
from psa_provision.packaged import PHASES_DIR, SANDBOX_INVENTORY
from psa_provision.phases import Phase
from psa_provision.secrets import Secrets
from psa_provision.services.context import HostContext


def ha_phase() -> Phase:
    return phases.load_phase("phase3", PHASES_DIR)


def ha_ctx(vmid: int = 100, temporary_clients: tuple[str, ...] = ()) -> HostContext:
    phase = ha_phase()
    inv = inventory.load_inventory(SANDBOX_INVENTORY)
    return HostContext(inv, phase, phase.container(vmid), Secrets(SECRETS), (CA,),
                       temporary_clients=temporary_clients)
