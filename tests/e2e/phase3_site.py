"""Phase 3 provisioned ONCE per session (33 containers on pve1..pve3), shared by its tests.

`phase3` (session fixture): in a full session, the phase 3 that test_migrate_phase3 migrated from the
session's phase 2 (MIGRATED), snapshotted as it is. Run alone (`pytest -m phase3 tests/e2e/test_phase3.py`):
every container of an earlier phase whose vmid phase 3 uses is removed
(its HA resource first), then a cold `up phase3 --yes`, then a Proxmox snapshot E2E_SNAPSHOT of each
container, which `reset_phase3` rolls back to after a test that breaks something (a drill). With
PSA_E2E_KEEP=1 and every container already holding the snapshot, the containers are rolled back
instead of built: a developer's second run takes minutes, not the cold up's.
Tests using it are marked `phase3`: they run after every other e2e test (tests/e2e/conftest.py), as
phase 3 reuses phase 1's and phase 2's vmids.
Expected wall time on the 2-core sandbox: cold `up phase3` 15-25 min (33 containers, three at a time,
16 app builds), the snapshots 1-2 min, the tests below a few minutes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from psa_provision import proxmox
from psa_provision.inventory import Inventory, load_inventory
from psa_provision.phases import Phase, load_phase

from .conftest import Run, admin_api, run_cli, sandbox_credentials, write_inventory

E2E_SNAPSHOT = "e2e_phase3"
UP_TIMEOUT = 3600.0
MIGRATED: list[Path] = []  # the inventory test_migrate_phase3 took from phase 2 to phase 3, if it did
MIGRATING: list[Path] = []  # ... and the one it tried to (a failed migration: no cold build after it)


@dataclass
class Phase3:
    inventory_path: Path
    inventory: Inventory
    phase: Phase
    first_up: Run | None
    dirty: bool = False  # a test under reset_phase3 left it broken (or did not say it healed)

    def cli(self, *args: str, timeout: float = UP_TIMEOUT) -> Run:
        return run_cli(self.inventory_path, *args, timeout=timeout)


def _snapshots(px: proxmox.ProxmoxClient, node: str, vmid: int) -> set[str]:
    return {str(s.get("name")) for s in px.request("GET", f"/nodes/{node}/lxc/{vmid}/snapshot") or []}


def _where(px: proxmox.ProxmoxClient, vmid: int) -> str | None:
    return px.find_vmid(vmid)


def clear_vmids(phase: Phase) -> None:
    """Every guest holding one of the phase's vmids gone: its HA resource, then the container."""
    px = admin_api()
    managed = {str(r.get("sid")) for r in px.request("GET", "/cluster/ha/resources") or []}
    for spec in phase.containers:
        node = _where(px, spec.vmid)
        if f"ct:{spec.vmid}" in managed:
            px.request("DELETE", f"/cluster/ha/resources/ct:{spec.vmid}")
        if node is None:
            continue
        if px.status(node, spec.vmid).get("status") == "running":
            px.stop(node, spec.vmid)
        px.delete(node, spec.vmid)


def snapshot_all(phase: Phase) -> None:
    px = admin_api()
    for spec in phase.containers:
        node = _where(px, spec.vmid) or spec.node
        if E2E_SNAPSHOT in _snapshots(px, node, spec.vmid):
            px.delete_snapshot(node, spec.vmid, E2E_SNAPSHOT)
        px.snapshot(node, spec.vmid, E2E_SNAPSHOT, "converged phase 3 (e2e session)")


def rollback_all(phase: Phase) -> None:
    """Every container back to the converged snapshot (each waits for its task), then started."""
    px = admin_api()
    for spec in phase.containers:
        node = _where(px, spec.vmid) or spec.node
        px.perform(proxmox.Write("rollback", node, spec.vmid, {"snapname": E2E_SNAPSHOT}))
    for spec in phase.containers:
        node = _where(px, spec.vmid) or spec.node
        if px.status(node, spec.vmid).get("status") != "running":
            px.start(node, spec.vmid)


def _all_snapshotted(phase: Phase) -> bool:
    px = admin_api()
    for spec in phase.containers:
        node = _where(px, spec.vmid)
        if node is None or E2E_SNAPSHOT not in _snapshots(px, node, spec.vmid):
            return False
    return True


@pytest.fixture(scope="session")
def phase3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Phase3]:
    if MIGRATED:  # the session's phase 2, migrated to phase 3 by test_migrate_phase3: used as it is
        inv = load_inventory(MIGRATED[0])
        phase = load_phase("phase3", inv.phases_dir)
        snapshot_all(phase)
        yield Phase3(MIGRATED[0], inv, phase, None)
        return
    if MIGRATING:
        pytest.fail("test_migrate_phase3 failed to build phase 3 in this session: its tests have no phase 3")
    given = os.environ.get("PSA_E2E_WORKDIR")
    workdir = Path(given) / "phase3" if given else tmp_path_factory.mktemp("e2e-phase3")
    workdir.mkdir(parents=True, exist_ok=True)
    inventory = write_inventory(workdir, sandbox_credentials())
    run = run_cli(inventory, "init", timeout=600)
    assert run.code == 0, run.output
    inv = load_inventory(inventory)
    phase = load_phase("phase3", inv.phases_dir)
    first: Run | None = None
    if os.environ.get("PSA_E2E_KEEP") == "1" and _all_snapshotted(phase):
        rollback_all(phase)
    else:
        clear_vmids(phase)
        first = run_cli(inventory, "up", "phase3", "--yes", timeout=UP_TIMEOUT)
        sys.stderr.write(f"\n[e2e] cold `up phase3`: exit {first.code} in {first.seconds:.0f} s\n")
        assert first.code == 0, f"cold up phase3 failed:\n{first.output[-8000:]}"
        snapshot_all(phase)
    yield Phase3(inventory, inv, phase, first)


@pytest.fixture
def reset_phase3(phase3: Phase3) -> Iterator[Phase3]:
    """For a test that breaks phase 3 (a drill): afterwards every container is rolled back, unless the
    test cleared `dirty` (a drill that healed the platform itself and checked it: nothing to undo)."""
    phase3.dirty = True
    yield phase3
    if phase3.dirty:
        rollback_all(phase3.phase)
