"""`up phase3` then `migrate phase3` from a running phase 2 under a ticket load: the standalone stores
become their clusters' first members and no acknowledged ticket is lost (the lead runs this: it needs
phase 2 live, tests/e2e/test_phase2.py's session, and the sandbox's three nodes). What it leaves is
phase 3's for tests/e2e/test_phase3.py, which runs next: `verify phase3`, and the first `up` after the
migration, which must change nothing (not run here: each costs a minute or more of CI's budget on 33
containers)."""

from __future__ import annotations

import sys
import time

import pytest

from psa_provision.phases import load_phase
from psa_provision.testing.loadgen import TicketLoad, request

from .conftest import clear_vmids
from .phase3_site import MIGRATED, MIGRATING
from .test_phase2 import PSQL, Phase1, phase1_site, q  # noqa: F401 - the session's phase-1/2 site

pytestmark = [pytest.mark.sandbox, pytest.mark.phase3]

RATE = 5.0
LOAD_BOUND_S = 3600.0


def _phase2_live(site: Phase1, gateway: str) -> None:
    """Phase 2 serving through its gateway (what test_phase2 leaves); else brought up and migrated."""
    if request("GET", f"{gateway}/health", timeout=10)[0] != 200:
        assert site.cli("up", "phase2", "--yes").code == 0
        assert site.cli("migrate", "phase2", timeout=1800).code == 0


@pytest.mark.timeout(5400)  # phase 0 -> 1 -> 2 when run alone, then phase 3 up and migrated


def test_migrate_phase3_from_phase2_under_load_loses_no_acknowledged_write(
        phase1_site: Phase1) -> None:  # noqa: F811 - the fixture imported above
    site = phase1_site
    MIGRATING.append(site.inventory_path)
    phase2, phase3 = (load_phase(n, site.inventory.phases_dir) for n in ("phase2", "phase3"))
    gateway = f"http://{phase2.container(phase2.services['api-gateway'].container).ip}:3000"
    _phase2_live(site, gateway)
    # what an interrupted run left of phase 3's new containers would be taken for this run's
    clear_vmids(phase3, keep={c.vmid for c in phase2.containers})
    vip = "http://10.0.20.250:3000"
    load = TicketLoad([gateway, vip], site.secret("app.admin_email"), site.secret("app.admin_password"),
                      rate=RATE, max_seconds=LOAD_BOUND_S, label="phase3-load").start()
    try:
        deadline = time.monotonic() + 120
        while len(load.result.acked) < 5:
            assert time.monotonic() < deadline, "no write acknowledged by phase 2's gateway"
            time.sleep(0.5)
        if any(c in site.secret("redis.password") for c in " '\""):  # the session's hostile passwords
            refused = site.cli("plan", "phase3", timeout=600)
            assert refused.code == 1 and "redis.password holds" in refused.output, refused.output[-3000:]
            rotated = site.cli("rotate-secrets", "redis", "--phase", "phase2", "--yes", timeout=1800)
            assert rotated.code == 0, rotated.output[-6000:]
        up = site.cli("up", "phase3", "--yes", timeout=3600)
        assert up.code == 0, up.output[-8000:]
        migrated = site.cli("migrate", "phase3", "--yes", timeout=3600)
        assert migrated.code == 0 and "complete" in migrated.output, migrated.output[-8000:]
    finally:
        result = load.stop()
    sys.stderr.write(f"\n[e2e] migrate phase3 under load: {len(result.acked)} tickets acknowledged, "
                     f"write downtime {result.longest_gap_s:.1f} s, {result.failures} refused attempts\n")
    leader = phase3.container(100)
    conn = site.ssh(leader)
    try:
        stored = {int(x) for x in conn.run(PSQL + q("SELECT id FROM tickets")).stdout.split()}
    finally:
        conn.close()
    lost = sorted(set(result.acked) - stored)
    assert not lost, f"{len(lost)} acknowledged tickets lost: {lost[:20]}"
    MIGRATED.append(site.inventory_path)  # phase 3's tests and drills use it (phase3_site)
