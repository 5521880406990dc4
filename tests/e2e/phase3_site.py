"""Phase 3 provisioned ONCE per session (33 containers on pve1..pve3), shared by its tests.

`phase3` (session fixture): in a full session, the phase 3 that test_migrate_phase3 migrated from the
session's phase 2 (MIGRATED), as it is. Run alone (`pytest -m phase3 tests/e2e/test_phase3.py`): every
container of an earlier phase whose vmid phase 3 uses is removed (its HA resource first), then a cold
`up phase3 --yes`; with PSA_E2E_KEEP=1 a warm `up phase3` of what is there instead.
`reset_phase3`: after a test that breaks something (a drill) and did not say it healed, `up phase3`
converges the platform again, as an admin would after a failed drill. Not Proxmox snapshots: the
sandbox's snapshot copies a rootfs with the container frozen, about 25 s each under load here, so
snapshotting the 33 took 14 minutes, froze each member (a Patroni leader longer than its ttl) and a
rollback of all of them takes as long, where `up` converges them in one or two.
The fixture is built once even when several modules import it (each import is a fixture of its own).
Tests using it are marked `phase3`: they run after every other e2e test (tests/e2e/conftest.py), as
phase 3 reuses phase 1's and phase 2's vmids.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from psa_provision.inventory import Inventory, load_inventory
from psa_provision.phases import Phase, load_phase

from .conftest import Run, clear_vmids, run_cli, sandbox_credentials, write_inventory

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


_BUILT: list[Phase3] = []


@pytest.fixture(scope="session")
def phase3(tmp_path_factory: pytest.TempPathFactory) -> Phase3:
    if _BUILT:
        return _BUILT[0]
    if MIGRATED:  # the session's phase 2, migrated to phase 3 by test_migrate_phase3: used as it is
        inv = load_inventory(MIGRATED[0])
        _BUILT.append(Phase3(MIGRATED[0], inv, load_phase("phase3", inv.phases_dir), None))
        return _BUILT[0]
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
    keep = os.environ.get("PSA_E2E_KEEP") == "1"
    if not keep:
        clear_vmids(phase)
    first = run_cli(inventory, "up", "phase3", "--yes", timeout=UP_TIMEOUT)
    sys.stderr.write(f"\n[e2e] {'warm' if keep else 'cold'} `up phase3`: exit {first.code} in "
                     f"{first.seconds:.0f} s\n")
    assert first.code == 0, f"up phase3 failed:\n{first.output[-8000:]}"
    _BUILT.append(Phase3(inventory, inv, phase, first))
    return _BUILT[0]


@pytest.fixture
def reset_phase3(phase3: Phase3) -> Iterator[Phase3]:
    """For a test that breaks phase 3 (a drill): afterwards `up phase3` converges it again, unless the
    test cleared `dirty` (a drill that healed the platform itself and checked it: nothing to undo)."""
    phase3.dirty = True
    yield phase3
    if phase3.dirty:
        healed = phase3.cli("up", "phase3", "--yes", timeout=UP_TIMEOUT)
        assert healed.code == 0, f"up phase3 after the test did not converge it:\n{healed.output[-6000:]}"
        phase3.dirty = False
