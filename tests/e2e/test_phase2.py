"""`up phase2` + `migrate phase2` for real, under ticket load: no acknowledged write lost.

Phase 2 keeps phase 1's stores and gives each service its own container. With the session's phase 1
serving (tests/e2e/test_phase1.py's `phase1` fixture; tests/e2e/test_migrate.py has moved phase 0's
data into it earlier in a full session), a bounded load generator creates tickets through phase 1's
gateway while `up phase2` creates and configures the eight service containers (and rewrites the stores'
firewall and pg_hba: phase 1's app must keep writing all along), then `migrate phase2` runs three times:
once with a service sabotaged (PSA_MIGRATE_SABOTAGE: its verify fails, the step is rolled back), once
killed inside a step (PSA_KILL_AT), once resumed to the end; the generator follows the gateway to
phase 2's. Afterwards every acknowledged ticket is in PostgreSQL on phase 2's PostgreSQL container and
found through phase 2's gateway, each service runs on its own container only, the temporary grants are
gone, `verify phase2` passes; the write downtime (longest gap between acknowledged writes) is printed.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator

import pytest

from psa_provision import journal, proxmox
from psa_provision.migration import steps as migrate
from psa_provision.phases import ContainerSpec, Phase, load_phase
from psa_provision.seams import ENABLE_ENV
from psa_provision.testing.loadgen import TicketLoad, request
from psa_provision.testing.sabotage import SABOTAGE_ENV

from .conftest import Run, Site, clear_vmids, q
from .test_phase1 import Phase1, provision

pytestmark = [pytest.mark.sandbox]


@pytest.fixture(scope="session")
def phase1_site(phase0: Site) -> Phase1:
    """The session's phase 1 (test_phase1.py's provisioning, shared)."""
    return provision(phase0)


RATE = 5.0  # tickets per second
LOAD_BOUND_S = 2400.0  # the generator stops by itself after this, whatever happens
SABOTAGED = "auth"
KILL_AT = "migrate tickets: retire"  # routed to 140 already, still running on 230
PSQL = "cd / && runuser -u postgres -- psql -X -q -At -d psa_platform -c "
PM2_NAMES = ("cd / && runuser -u psa -- env HOME=/home/psa PM2_HOME=/home/psa/.pm2 pm2 jlist 2>/dev/null | "
             "node -e 'let s=\"\";process.stdin.on(\"data\",d=>s+=d).on(\"end\",()=>{const t=s.trim();"
             "for(const p of JSON.parse(t.slice(t.lastIndexOf(\"\\n[\")+1)||\"[]\"))"
             "console.log(p.name,p.pm2_env.status)})'\n")


def _fresh(phase1: Phase1, phase2: Phase) -> None:
    """No phase-2 migration recorded; the containers phase 2 adds (not phase 1's) deleted unless
    PSA_E2E_KEEP=1, so `up phase2` is cold as in CI."""
    migrate.journal_for(phase1.inventory_path, "phase2").path.unlink(missing_ok=True)
    journal.write_migration_grants(phase1.inventory_path, "phase2", None)
    if os.environ.get("PSA_E2E_KEEP") == "1":
        return
    # an interrupted phase-3 run leaves them HA resources too, which Proxmox will not delete as such
    clear_vmids(phase2, keep={c.vmid for c in phase1.phase.containers})


def _added(phase1: Phase, phase2: Phase) -> list[ContainerSpec]:
    old = {c.vmid for c in phase1.containers}
    return [c for c in phase2.containers if c.vmid not in old]


def _gateway(phase: Phase) -> str:
    spec = phase.container(phase.services["api-gateway"].container)
    return f"http://{spec.ip}:{phase.services['api-gateway'].port}"


def _wait_acks(load: TicketLoad, count: int, what: str, deadline_s: float = 180.0) -> None:
    deadline = time.monotonic() + deadline_s
    while len(load.result.acked) < count:
        assert time.monotonic() < deadline, f"waited {deadline_s:.0f} s for {what}: {len(load.result.acked)}"
        time.sleep(0.5)


@pytest.fixture
def forget_phase2_migration(phase1_site: Phase1) -> Iterator[None]:
    """Afterwards the phase-2 migration is forgotten (journal, grants): `up phase1` refuses a phase a
    journaled migration moved away from, and a kept session (PSA_E2E_KEEP=1) runs `up phase1` first."""
    yield
    migrate.journal_for(phase1_site.inventory_path, "phase2").path.unlink(missing_ok=True)
    journal.write_migration_grants(phase1_site.inventory_path, "phase2", None)


def test_up_and_migrate_phase2_under_load_lose_no_acknowledged_write(
        phase1_site: Phase1, forget_phase2_migration: None, monkeypatch: pytest.MonkeyPatch) -> None:
    phase1 = phase1_site
    monkeypatch.setenv("COLUMNS", "200")  # notes and tables unwrapped
    phase2 = load_phase("phase2", phase1.inventory.phases_dir)
    _fresh(phase1, phase2)
    old_gw, new_gw = _gateway(phase1.phase), _gateway(phase2)
    load = TicketLoad([old_gw, new_gw], phase1.secret("app.admin_email"), phase1.secret("app.admin_password"),
                      rate=RATE, max_seconds=LOAD_BOUND_S, label="phase2-load").start()
    runs: dict[str, Run] = {}
    try:
        _wait_acks(load, 5, "the first writes through phase 1's gateway")
        before_up = len(load.result.acked)
        runs["up"] = phase1.cli("up", "phase2", "--yes")
        assert runs["up"].code == 0, runs["up"].output[-8000:]
        assert "psa-app (10.0.20.230, phase1) keeps using the stores" in runs["up"].output, runs["up"].output
        during_up = len(load.result.acked) - before_up
        assert not load.result.switches, f"phase 1's gateway refused writes during up: {load.result.switches}"
        assert during_up > 0, "no write was acknowledged while `up phase2` ran"

        monkeypatch.setenv(ENABLE_ENV, "1")  # test hooks open (the sandbox's API is on loopback)
        monkeypatch.setenv(SABOTAGE_ENV, SABOTAGED)
        runs["sabotaged"] = phase1.cli("migrate", "phase2", timeout=1800)
        monkeypatch.delenv(SABOTAGE_ENV)
        out = runs["sabotaged"].output
        assert runs["sabotaged"].code == 1, out[-6000:]
        assert "rolled back" in out and "not online in PM2" in out, out[-6000:]
        _check_rolled_back(phase1, phase2)

        monkeypatch.setenv("PSA_KILL_AT", KILL_AT)
        runs["killed"] = phase1.cli("migrate", "phase2", timeout=1800)
        monkeypatch.delenv("PSA_KILL_AT")
        assert runs["killed"].code == -9, runs["killed"].output[-6000:]
        plan = phase1.cli("migrate", "phase2", "--plan", timeout=120)
        assert plan.code == 0 and "interrupted after route" in plan.output, plan.output

        runs["resumed"] = phase1.cli("migrate", "phase2", timeout=1800)
        out = runs["resumed"].output
        assert runs["resumed"].code == 0 and "resuming" in out and "migration to phase2 complete" in out, \
            out[-8000:]
        _wait_acks(load, len(load.result.acked) + 10, "writes through phase 2's gateway after the migration")
    finally:
        result = load.stop()
    migration_s = sum(r.seconds for k, r in runs.items() if k != "up")
    sys.stderr.write(
        f"\n[e2e] up phase2 under load: {runs['up'].seconds:.0f} s, {during_up} writes acknowledged by "
        f"phase 1's gateway meanwhile; migrate phase2 (sabotaged {runs['sabotaged'].seconds:.0f} s + killed "
        f"{runs['killed'].seconds:.0f} s + resumed {runs['resumed'].seconds:.0f} s = {migration_s:.0f} s): "
        f"{len(result.acked)} tickets acknowledged ({result.failures} refused attempts), write downtime "
        f"(longest gap without a successful write) {result.longest_gap_s:.1f} s; gateway switches: "
        f"{', '.join(result.switches)}\n")
    sys.stderr.write(runs["resumed"].stdout[-2500:])
    assert result.switches and result.switches[-1].endswith(new_gw), result.switches
    _check_nothing_lost(phase1, phase2, result.acked)
    _check_each_service_on_its_own_container(phase1, phase2)
    _check_grants_gone(phase1, phase2)
    again = phase1.cli("migrate", "phase2", timeout=600)
    assert again.code == 0 and "complete" in again.output, again.output[-3000:]
    verified = phase1.cli("verify", "phase2", timeout=1200)
    assert verified.code == 0, verified.output[-6000:]


def _pm2(phase1: Phase1, spec: ContainerSpec) -> dict[str, set[str]]:
    """PM2 app name -> statuses of its instances on the container."""
    conn = phase1.ssh(spec)
    try:
        out = conn.run(PM2_NAMES, check=False).stdout
    finally:
        conn.close()
    apps: dict[str, set[str]] = {}
    for line in out.splitlines():
        if len(line.split()) == 2:
            apps.setdefault(line.split()[0], set()).add(line.split()[1])
    return apps


def _check_rolled_back(phase1: Phase1, phase2: Phase) -> None:
    """The sabotaged service stopped on its new container, still online on 230; 230's gateway healthy."""
    new = phase2.container(phase2.services[SABOTAGED].container)
    assert _pm2(phase1, new).get(SABOTAGED) == {"stopped"}
    old = phase1.with_component("app")
    assert _pm2(phase1, old).get(SABOTAGED) == {"online"}
    status, _ = request("GET", f"{_gateway(phase1.phase)}/health")
    assert status == 200
    plan = phase1.cli("migrate", "phase2", "--plan", timeout=120)
    assert plan.code == 0 and "rolled back, to redo" in plan.output, plan.output


def _check_nothing_lost(phase1: Phase1, phase2: Phase, acked: list[int]) -> None:
    """Every acknowledged id is in PostgreSQL on phase 2's container and found through its gateway."""
    pg = phase2.with_component("postgresql")[0]
    conn = phase1.ssh(pg)
    try:
        stored = {int(x) for x in conn.run(PSQL + q("SELECT id FROM tickets")).stdout.split()}
    finally:
        conn.close()
    lost = sorted(set(acked) - stored)
    assert not lost, f"{len(lost)} acknowledged tickets missing in PostgreSQL on {pg.ip}: {lost[:20]}"
    base = _gateway(phase2)
    creds = {"email": phase1.secret("app.admin_email"), "password": phase1.secret("app.admin_password")}
    status, body = request("POST", f"{base}/api/auth/login", creds)
    assert status == 200, body
    missing = [i for i in acked if request("GET", f"{base}/api/tickets/{i}", token=body["token"])[0] != 200]
    assert not missing, f"{len(missing)} acknowledged tickets not found via phase 2's gateway: {missing[:9]}"


def _check_each_service_on_its_own_container(phase1: Phase1, phase2: Phase) -> None:
    """Each phase-2 container runs its service only, all instances online; nothing left on 230."""
    for spec in _added(phase1.phase, phase2):
        want = {name: {"online"} for name in phase2.services_on(spec.vmid)}
        assert _pm2(phase1, spec) == want, spec.hostname
    conn = phase1.ssh(phase1.with_component("app"))
    try:  # (no `pm2 jlist` here: it would start a PM2 daemon)
        state = conn.run("systemctl is-active pm2-psa; systemctl is-enabled pm2-psa; pgrep -c -u psa node",
                         check=False).stdout.split()
    finally:
        conn.close()
    assert state == ["inactive", "disabled", "0"], state


def _check_grants_gone(phase1: Phase1, phase2: Phase) -> None:
    """No temporary firewall rule anywhere in phase 2, 230 not in pg_hba, no grants file."""
    px = proxmox.connect(phase1.inventory)
    for spec in phase2.containers:
        rules = px.request("GET", f"/nodes/{spec.node}/lxc/{spec.vmid}/firewall/rules") or []
        assert not [r for r in rules if str(r.get("comment", "")).startswith(migrate.GRANT_TAG)], rules
    conn = phase1.ssh(phase2.with_component("postgresql")[0])
    try:
        hba = conn.run("cat /etc/postgresql/15/main/pg_hba.conf").stdout
    finally:
        conn.close()
    assert phase1.with_component("app").ip not in hba
    assert journal.migration_grants(phase1.inventory_path, "phase2") == {}
