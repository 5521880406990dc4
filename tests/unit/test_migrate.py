"""migrate phase1's pure parts: steps from the phase files, journal -> step states, the plan report,
the load generator's write downtime, cleanup's target names, and the grants file `up` reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from psa_provision import journal
from psa_provision.commands import cleanup
from psa_provision.errors import InputError
from psa_provision.inventory import load_inventory
from psa_provision.migration.record import StepState, read_states
from psa_provision.migration.steps import STORES, SUBSTEPS, plan_steps
from psa_provision.migration.steps import report as report_of
from psa_provision.packaged import PHASES_DIR, SANDBOX_INVENTORY
from psa_provision.phases import load_phase
from psa_provision.secrets import Secrets, generate
from psa_provision.services.context import build_context
from psa_provision.services.postgresql import component as postgresql
from psa_provision.testing.loadgen import LoadResult

PHASES = PHASES_DIR


def test_steps_follow_the_phase_files() -> None:
    old, new = load_phase("phase0", PHASES), load_phase("phase1", PHASES)
    steps = plan_steps(old, new)
    assert [s.name for s in steps] == ["prepare", *STORES, "app", "finish"]
    by_name = {s.name: s for s in steps}
    assert by_name["postgresql"].source is not None and by_name["postgresql"].source.vmid == 200
    assert by_name["postgresql"].target is not None and by_name["postgresql"].target.ip == "10.0.30.10"
    for store in STORES:
        target = by_name[store].target
        assert target is not None and store in target.components
    app = by_name["app"]
    assert app.source is not None and app.target is not None
    assert (app.source.vmid, app.target.vmid) == (200, 230)


def test_a_store_already_in_place_is_no_step() -> None:
    new = load_phase("phase1", PHASES)
    assert [s.name for s in plan_steps(new, new)] == ["prepare", "app", "finish"]


def _rec(step: str, state: str, **fields: object) -> dict[str, object]:
    return {"event": "migrate", "step": step, "state": state, **fields}


def test_journal_states_resume_points_and_rollbacks() -> None:
    entries: list[dict[str, object]] = [
        {"event": "run-start"},
        _rec("prepare", "hold app"), _rec("prepare", "grants"), _rec("prepare", "done"),
        _rec("postgresql", "snapshot"), _rec("postgresql", "quiesce", at=100.0), _rec("postgresql", "move"),
        _rec("postgresql", "verify"), _rec("postgresql", "switch"), _rec("postgresql", "retire"),
        _rec("postgresql", "done", quiesce_s=12.5),
        _rec("redis", "snapshot"), _rec("redis", "quiesce", at=200.0), _rec("redis", "move"),
        _rec("redis", "rolled-back", failed=["keys"]),
        _rec("redis", "snapshot"), _rec("redis", "quiesce", at=300.0),
    ]
    states = read_states(entries)
    assert states["prepare"].finished
    assert states["postgresql"].finished and states["postgresql"].quiesce_s == 12.5
    redis = states["redis"]
    assert not redis.finished and redis.done == ["snapshot", "quiesce"] and redis.rolled_back == 1
    assert redis.quiesced_at == 300.0  # the rollback forgot the first quiesce
    assert redis.label == "interrupted after quiesce"
    assert StepState(rolled_back=1).label == "rolled back, to redo"
    assert StepState().label == "to do"


def test_report_sums_quiesce_times_and_says_complete() -> None:
    old, new = load_phase("phase0", PHASES), load_phase("phase1", PHASES)
    steps = plan_steps(old, new)
    states = {s.name: StepState(done=[*s.substeps, "done"], quiesce_s=10.0 if s.name in STORES else None)
              for s in steps}
    report = report_of(steps, states, 60.0)
    assert report.complete and report.total_quiesce_s == 40.0
    assert [r[2] for r in report.rows] == ["done"] * len(steps)
    assert report_of(steps, {}, 0.0).complete is False
    assert all(r[2] == "to do" for r in report_of(steps, {}, 0.0).rows)


def test_every_step_kind_has_substeps() -> None:
    assert set(SUBSTEPS) == {"prepare", *STORES, "app", "finish"}
    for store in STORES:
        order = SUBSTEPS[store]
        assert order.index("quiesce") < order.index("move") < order.index("verify") < order.index("switch")


def test_write_downtime_is_the_longest_gap_between_acks() -> None:
    result = LoadResult(acked=[1, 2, 3], success_times=[1.0, 2.0, 9.5], started=0.0, ended=10.0)
    assert result.longest_gap_s == 7.5
    assert LoadResult(started=0.0, ended=4.0).longest_gap_s == 4.0  # nothing acknowledged at all


@pytest.mark.parametrize("what", ["phase0", "leftovers", "-leftovers", "phase0-stuff"])
def test_cleanup_names_a_phase_leftovers(what: str) -> None:
    with pytest.raises(InputError):
        cleanup.phase_of(what)
    assert cleanup.phase_of("phase0-leftovers") == "phase0"


def test_grants_file_adds_the_old_app_to_pg_hba_and_holds_pm2(tmp_path: Path) -> None:
    inv_path = tmp_path / "sandbox.yml"
    inv_path.write_text((SANDBOX_INVENTORY).read_text()
                        .replace("phases_dir: ", f"phases_dir: {PHASES} #"))
    inv = load_inventory(inv_path)
    phase = load_phase("phase1", PHASES)
    pg = phase.with_component("postgresql")[0]
    secrets = Secrets(generate())
    before = postgresql.hba_content(build_context(inv, phase, pg, secrets, bundle_dir=None))
    journal.write_migration_grants(inv_path, "phase1", {"clients": ["10.0.20.100"], "hold_app": True})
    ctx = build_context(inv, phase, pg, secrets, bundle_dir=None)
    assert ctx.hold_app and ctx.temporary_clients == ("10.0.20.100",)
    during = postgresql.hba_content(ctx)
    assert "10.0.20.100/32" in during and "10.0.20.100/32" not in before
    assert "10.0.20.230/32" in during
    journal.write_migration_grants(inv_path, "phase1", None)
    assert postgresql.hba_content(build_context(inv, phase, pg, secrets, bundle_dir=None)) == before
    assert journal.migration_grants(inv_path, "phase1") == {}


def test_cleanup_removes_every_moved_store_and_says_what() -> None:
    assert set(cleanup.LEFTOVERS) == set(STORES)
    spec = load_phase("phase0", PHASES).containers[0]
    found = cleanup.Leftovers({spec.vmid: ["postgresql"]}, {spec.vmid: spec},
                              {spec.vmid: ["psa_migrate_postgresql"]})
    assert not found.empty
    assert found.lines() == [
        f"container {spec.vmid} ({spec.hostname}): purge postgresql-15 postgresql-client-15 "
        "postgresql-common postgresql-client-common; remove /var/lib/postgresql /etc/postgresql",
        f"container {spec.vmid}: delete snapshot psa_migrate_postgresql"]
    assert cleanup.Leftovers().empty
    script = cleanup._purge_script("redis")
    assert "apt-get purge -y -q $installed" in script and "rm -rf /var/lib/redis /etc/redis" in script


def test_moved_away_says_when_up_of_the_old_phase_is_wrong(tmp_path: Path) -> None:
    from psa_provision.migration.record import journal_for, moved_away

    inv = tmp_path / "sandbox.yml"
    assert moved_away(inv, "phase0", PHASES) is None
    journal_for(inv, "phase1").record("migrate", step="prepare", state="done")
    assert moved_away(inv, "phase0", PHASES) is None  # grants only: nothing moved yet
    journal_for(inv, "phase1").record("migrate", step="postgresql", state="snapshot")
    why = moved_away(inv, "phase0", PHASES)
    assert why is not None and "under way" in why and "postgresql" in why
    assert moved_away(inv, "phase3", PHASES) is None


class _Guests:
    """A ProxmoxClient that only lists the cluster's guests."""

    def __init__(self, vmids: list[int]) -> None:
        self.vmids = vmids

    def cluster_guests(self) -> list[dict[str, int]]:
        return [{"vmid": v} for v in self.vmids]


@pytest.mark.parametrize(("guests", "refused"), [
    ([200, 100, 230], True),   # phase 0's container still holds the data the migration moved away
    ([100, 230], False),       # phase 0 destroyed, phase 1 running: nothing stale can start again
    (None, True),              # the API cannot tell: the journal alone decides
])
def test_refusal_follows_which_containers_exist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                guests: list[int] | None, refused: bool) -> None:
    from types import SimpleNamespace

    from psa_provision.errors import ProxmoxError
    from psa_provision.migration import steps as migrate

    inv = tmp_path / "sandbox.yml"
    migrate.journal_for(inv, "phase1").record("migrate", step="postgresql", state="moved")
    site = SimpleNamespace(inventory_path=inv, inventory=SimpleNamespace(phases_dir=PHASES),
                           phase=load_phase("phase0", PHASES))

    def connect(_inv: object) -> _Guests:
        if guests is None:
            raise ProxmoxError("the Proxmox API at https://127.0.0.1:1 is unreachable")
        return _Guests(guests)

    monkeypatch.setattr(migrate, "connect", connect)
    if refused:
        with pytest.raises(InputError, match=r"refusing `plan phase0`: the migration phase0 -> phase1"):
            migrate.refuse_moved_away(site, "plan")  # type: ignore[arg-type]
    else:
        migrate.refuse_moved_away(site, "plan")  # type: ignore[arg-type]


def test_closing_the_record_of_a_migration_keeps_it_and_ends_the_refusal(tmp_path: Path) -> None:
    from psa_provision.migration import record as migration_record
    from psa_provision.migration.record import journal_for, moved_away

    inv = tmp_path / "sandbox.yml"
    assert migration_record.close_migration_record(inv, "phase1") is None  # nothing recorded
    journal_for(inv, "phase1").record("migrate", step="finish", state="done")
    journal_for(inv, "phase1").record("migrate", step="postgresql", state="done")
    assert moved_away(inv, "phase0", PHASES) is not None
    closed = migration_record.close_migration_record(inv, "phase1")
    assert closed is not None and closed.name.startswith("migrate-phase1.journal.jsonl.closed-")
    assert "postgresql" in closed.read_text()
    assert moved_away(inv, "phase0", PHASES) is None
    assert not migration_record.migration_finished(inv, "phase1")
