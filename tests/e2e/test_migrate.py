"""`migrate phase1` for real: phase 0's data moved into phase 1's containers under load, nothing lost.

Phase 1 is provisioned with the same inventory and secrets as the session's phase 0 (fixture `phase1`).
First a forced verify failure (PSA_MIGRATE_SABOTAGE) must roll its step back; then a migration runs
while a bounded load generator creates tickets through the gateway (following it from phase 0's
container to phase 1's app container), is killed in the middle of a step (PSA_KILL_AT), resumed with
the same command, and every acknowledged ticket must be in PostgreSQL on phase 1's PostgreSQL container
and found through phase 1's gateway; `cleanup phase0-leftovers` then removes the old services.
Afterwards phase 0's container is rolled back to the session's converged snapshot (`reset_phase0`), so
the later phase-0 tests find it as they expect; phase 1 stays migrated for tests/e2e/test_phase1.py.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator

import pytest

from psa_provision import journal, proxmox
from psa_provision.migration import steps as migrate
from psa_provision.seams import ENABLE_ENV
from psa_provision.ssh import Connection
from psa_provision.testing.loadgen import TicketLoad, request
from psa_provision.testing.sabotage import SABOTAGE_ENV

from .conftest import Site, q
from .test_phase1 import Phase1, provision

pytestmark = [pytest.mark.sandbox]


@pytest.fixture(scope="session")
def target(phase0: Site) -> Phase1:
    """Phase 1 with phase 0's inventory: the same provisioning as test_phase1.py's `phase1` fixture."""
    return provision(phase0)

SEED_TICKETS = 200
RATE = 5.0  # tickets per second from the load generator
LOAD_BOUND_S = 1200.0  # the generator stops by itself after this, whatever happens
PSQL = "cd / && runuser -u postgres -- psql -X -q -At -d psa_platform -c "


@pytest.fixture
def fresh_migration(phase0: Site, target: Phase1, converged_snapshot: str,
                    monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No migration recorded for this inventory yet (an earlier session's journal and grants forgotten);
    tables printed wide enough that a state is never wrapped."""
    monkeypatch.setenv("COLUMNS", "200")
    migrate.journal_for(phase0.inventory_path, "phase1").path.unlink(missing_ok=True)
    journal.write_migration_grants(phase0.inventory_path, "phase1", None)
    yield
    # phase 0 is rolled back to its converged snapshot (reset_phase0): the migration never happened
    # for the tests after this one, which run `up phase0` (refused while a migration is journaled)
    migrate.journal_for(phase0.inventory_path, "phase1").path.unlink(missing_ok=True)
    journal.write_migration_grants(phase0.inventory_path, "phase1", None)


def _sql(conn: Connection, sql: str) -> str:
    return conn.run(PSQL + q(sql)).stdout.strip()


def _tickets_on(conn: Connection) -> set[int]:
    """Ticket ids in PostgreSQL on this container (empty when the table does not exist)."""
    if _sql(conn, "SELECT to_regclass('public.tickets') IS NOT NULL") != "t":
        return set()
    return {int(x) for x in _sql(conn, "SELECT id FROM tickets").split()}


def _login(base: str, site: Site) -> str:
    status, body = request("POST", f"{base}/api/auth/login", {"email": site.secret("app.admin_email"),
                                                               "password": site.secret("app.admin_password")})
    assert status == 200 and body.get("token"), body
    return str(body["token"])


def _env_hosts(conn: Connection) -> dict[str, str]:
    out = conn.run("grep -E '^[A-Z_]+_HOST=' /opt/psa-platform/.env").stdout
    return dict(line.split("=", 1) for line in out.split())


def test_failed_verify_rolls_the_step_back(phase0: Site, target: Phase1, fresh_migration: None,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    refused = phase0.cli("cleanup", "phase0-leftovers", "--yes", timeout=300)
    assert refused.code == 1 and "not complete" in refused.output, refused.output
    monkeypatch.setenv(ENABLE_ENV, "1")  # test hooks open (the sandbox's API is on loopback)
    monkeypatch.setenv(SABOTAGE_ENV, "postgresql")
    run = phase0.cli("migrate", "phase1", timeout=1800)
    monkeypatch.delenv(SABOTAGE_ENV)
    assert run.code == 1, run.output[-6000:]
    assert "verify failed" in run.output and "DIFFERENT" in run.output and "rolled back" in run.output, \
        run.output[-6000:]
    source = phase0.ssh()
    pg = target.ssh(target.with_component("postgresql"))
    try:
        assert _env_hosts(source)["POSTGRES_HOST"] == "127.0.0.1"
        assert source.run("systemctl is-active postgresql", check=False).stdout.strip() == "active"
        assert _tickets_on(pg) == set(), "rollback empties the target"
    finally:
        source.close()
        pg.close()
    base = f"http://{phase0.container.ip}:3000"
    status, ticket = request("POST", f"{base}/api/tickets", {"title": "after rollback", "body": "x"},
                             _login(base, phase0))
    assert status == 201 and ticket.get("id"), ticket
    plan = phase0.cli("migrate", "phase1", "--plan", timeout=120)
    assert plan.code == 0 and "rolled back, to redo" in plan.output, plan.output


def test_migration_under_load_killed_and_resumed_loses_no_acknowledged_write(
        phase0: Site, target: Phase1, fresh_migration: None, reset_phase0: Site,
        monkeypatch: pytest.MonkeyPatch) -> None:
    source_gw = f"http://{phase0.container.ip}:3000"
    target_app = target.with_component("app")
    target_gw = f"http://{target_app.ip}:3000"
    token = _login(source_gw, phase0)
    seeded = []
    for i in range(SEED_TICKETS):
        new = {"title": f"seed {i}", "body": "before the migration"}
        status, body = request("POST", f"{source_gw}/api/tickets", new, token)
        assert status == 201, body
        seeded.append(int(body["id"]))
    load = TicketLoad([source_gw, target_gw], phase0.secret("app.admin_email"),
                      phase0.secret("app.admin_password"), rate=RATE, max_seconds=LOAD_BOUND_S,
                      label="migrate-load").start()
    try:
        _wait_acks(load, 5, "the load generator's first writes through phase 0's gateway")
        monkeypatch.setenv(ENABLE_ENV, "1")
        monkeypatch.setenv("PSA_KILL_AT", "migrate redis: move")  # writers quiesced, move not started
        killed = phase0.cli("migrate", "phase1", timeout=1800)
        monkeypatch.delenv("PSA_KILL_AT")
        assert killed.code == -9, killed.output[-6000:]
        assert "[postgresql] done" in killed.output, killed.output[-6000:]
        plan = phase0.cli("migrate", "phase1", "--plan", timeout=120)
        assert plan.code == 0 and "interrupted after quiesce" in plan.output, plan.output
        resumed = phase0.cli("migrate", "phase1", timeout=1800)
        assert resumed.code == 0, resumed.output[-8000:]
        assert "resuming" in resumed.output and "migration to phase1 complete" in resumed.output
        _wait_acks(load, len(load.result.acked) + 10, "writes through phase 1's gateway after the migration")
    finally:
        result = load.stop()
    migration_s = killed.seconds + resumed.seconds
    sys.stderr.write(
        f"\n[e2e] migrate phase1 under load: {len(seeded)} seeded + {len(result.acked)} acknowledged "
        f"tickets ({result.failures} refused attempts), write downtime (longest gap without a successful "
        f"write) {result.longest_gap_s:.1f} s, migration {migration_s:.0f} s (killed run "
        f"{killed.seconds:.0f} s + resumed run {resumed.seconds:.0f} s); last gateway switches: "
        f"{', '.join(result.switches[-3:])}\n")
    sys.stderr.write(resumed.stdout[-3000:])
    _check_nothing_lost(target, seeded + result.acked)
    _check_source_retired(phase0, target)
    again = phase0.cli("migrate", "phase1", timeout=600)
    assert again.code == 0 and "complete" in again.output, again.output[-3000:]
    check_phase0_refused(phase0)
    _check_cleanup(phase0)


def check_phase0_refused(phase0: Site) -> None:
    """While phase 0's container holds what the migration moved away, `plan` and `up` of phase 0 refuse,
    with the same message, before changing anything."""
    refused = {cmd: phase0.cli(cmd, "phase0", *extra, timeout=300)
               for cmd, extra in (("plan", ()), ("up", ("--yes",)))}
    for cmd, run in refused.items():
        assert run.code == 1 and f"refusing `{cmd} phase0`" in run.output, run.output[-3000:]
        assert "migration phase0 -> phase1 is complete" in run.output, run.output[-3000:]
    assert (refused["plan"].output.replace("refusing `plan", "refusing `up")
            == refused["up"].output), "plan and up refuse with the same message"


def _wait_acks(load: TicketLoad, count: int, what: str, deadline_s: float = 180.0) -> None:
    deadline = time.monotonic() + deadline_s
    while len(load.result.acked) < count:
        assert time.monotonic() < deadline, f"waited {deadline_s:.0f} s for {what}: {len(load.result.acked)}"
        time.sleep(0.5)


def _check_nothing_lost(target: Phase1, acked: list[int]) -> None:
    """Every acknowledged id is in PostgreSQL on phase 1's container and found through its gateway."""
    pg = target.ssh(target.with_component("postgresql"))
    try:
        stored = _tickets_on(pg)
    finally:
        pg.close()
    lost = sorted(set(acked) - stored)
    assert not lost, f"{len(lost)} acknowledged tickets missing in PostgreSQL on 10.0.30.10: {lost[:20]}"
    base = f"http://{target.with_component('app').ip}:3000"
    creds = {"email": target.secret("app.admin_email"), "password": target.secret("app.admin_password")}
    status, body = request("POST", f"{base}/api/auth/login", creds)
    assert status == 200, body
    token = body["token"]
    missing = [i for i in acked if request("GET", f"{base}/api/tickets/{i}", token=token)[0] != 200]
    assert not missing, f"{len(missing)} acknowledged tickets not found via phase 1's gateway: {missing[:9]}"


def _check_source_retired(phase0: Site, target: Phase1) -> None:
    """Old services stopped and disabled (data kept), .env pointing at phase 1, temporary grants gone."""
    source = phase0.ssh()
    try:
        units = "postgresql redis-server rabbitmq-server elasticsearch pm2-psa"
        active = source.run(f"systemctl is-active {units}", check=False).stdout.split()
        enabled = source.run(f"systemctl is-enabled {units}", check=False).stdout.split()
        assert set(active) == {"inactive"} and set(enabled) == {"disabled"}, (active, enabled)
        assert source.run("test -d /var/lib/postgresql/15/main", check=False).ok, "data kept until cleanup"
        hosts = _env_hosts(source)
    finally:
        source.close()
    for component, key in migrate.ENV_KEYS.items():
        assert hosts[key] == target.with_component(component).ip, hosts
    pg = target.with_component("postgresql")
    conn = target.ssh(pg)
    try:
        hba = conn.run("cat /etc/postgresql/15/main/pg_hba.conf").stdout
    finally:
        conn.close()
    assert phase0.container.ip not in hba, "the temporary pg_hba line is removed at the end"
    px = proxmox.connect(target.inventory)
    for spec in target.phase.containers:
        rules = px.request("GET", f"/nodes/{spec.node}/lxc/{spec.vmid}/firewall/rules") or []
        assert not [r for r in rules if str(r.get("comment", "")).startswith(migrate.GRANT_TAG)], rules


def _check_cleanup(phase0: Site) -> None:
    run = phase0.cli("cleanup", "phase0-leftovers", "--yes", timeout=1200)
    assert run.code == 0, run.output[-4000:]
    source = phase0.ssh()
    try:
        assert not source.run("dpkg -s postgresql-15 >/dev/null 2>&1", check=False).ok
        assert not source.run("test -e /var/lib/postgresql", check=False).ok
    finally:
        source.close()
    px = proxmox.connect(phase0.inventory)
    spec = phase0.container
    snaps = px.request("GET", f"/nodes/{spec.node}/lxc/{spec.vmid}/snapshot") or []
    assert not [s for s in snaps if str(s.get("name", "")).startswith(migrate.SNAPSHOT_PREFIX)], snaps
    again = phase0.cli("cleanup", "phase0-leftovers", "--yes", timeout=300)
    assert again.code == 0 and "nothing left over" in again.output, again.output
