"""Starting over: every phase destroyed (3, 2, 1: each shares the earlier one's stores; then 0), after
which `plan phase0` wants to create container 200 from nothing and refuses nothing: the project is back
where `init` left it. It deletes every container of the session, so it runs last (tests/e2e/conftest.py
moves tests marked `session_end` to the end).

CI stops there, for its time budget: the cold `up` that follows is the same as the session's first one,
and test_resume.py destroys phase 0 and builds it again in the same project. The whole life cycle (up 0
-> up 1 -> migrate 1 -> destroy 1 -> destroy 0 -> up 0 from nothing, a second `up` changing nothing)
is the `beyond_ci` test here: while phase 0's container holds the data a migration moved away, `plan`
and `up` of phase 0 refuse with the same message (CI checks that in tests/e2e/test_migrate.py, right
after its migration); once phase 1 is destroyed (its migration record is closed) and phase 0 too, `up
phase0` starts over from nothing.
"""

from __future__ import annotations

import pytest

from psa_provision import journal
from psa_provision.migration import steps as migrate

from .conftest import Site, wait_gateway_healthy
from .test_migrate import check_phase0_refused

pytestmark = [pytest.mark.sandbox, pytest.mark.session_end]


def _destroy_later_phases(phase0: Site) -> None:
    for phase in ("phase1", "phase2", "phase3"):  # what earlier tests recorded, forgotten as they do
        migrate.journal_for(phase0.inventory_path, phase).path.unlink(missing_ok=True)
        journal.write_migration_grants(phase0.inventory_path, phase, None)
    for phase in ("phase3", "phase2", "phase1"):  # each shares the earlier one's stores
        run = phase0.cli("destroy", phase, "--yes", timeout=900)
        assert run.code == 0, run.output[-4000:]


def _destroy_phase0_then_plan_wants_it_made(phase0: Site) -> None:
    """phase 0 destroyed; `plan` then wants to create it again (exit 2) and refuses nothing."""
    gone0 = phase0.cli("destroy", "phase0", "--yes", timeout=900)
    assert gone0.code == 0 and "1 destroyed" in gone0.output, gone0.output[-3000:]
    plan = phase0.cli("plan", "phase0", timeout=600)
    assert plan.code == 2 and "refusing" not in plan.output, plan.output[-3000:]
    assert f"create container {phase0.container.vmid}" in plan.output, plan.output[-3000:]


def _start_over(phase0: Site) -> None:
    """phase 0 destroyed, `plan` wants it made, `up` makes it from nothing; a second `up` changes nothing."""
    _destroy_phase0_then_plan_wants_it_made(phase0)
    again = phase0.cli("up", "phase0", "--yes")
    assert again.code == 0 and again.summary()[2] == 0, again.output[-4000:]
    wait_gateway_healthy(phase0)
    second = phase0.cli("up", "phase0", "--yes")
    assert second.code == 0 and second.summary()[0] == 0, second.output[-4000:]


def test_destroy_every_phase_then_plan_phase0_starts_from_nothing(phase0: Site) -> None:
    _destroy_later_phases(phase0)
    _destroy_phase0_then_plan_wants_it_made(phase0)


@pytest.mark.beyond_ci  # cold `up phase0` twice, a cold `up phase1` and `migrate phase1`
def test_destroy_then_up_starts_over_and_plan_refuses_what_up_refuses(phase0: Site) -> None:
    _destroy_later_phases(phase0)
    up0 = phase0.cli("up", "phase0", "--yes")
    assert up0.code == 0, up0.output[-4000:]
    up1 = phase0.cli("up", "phase1", "--yes")  # cold
    assert up1.code == 0, up1.output[-4000:]
    moved = phase0.cli("migrate", "phase1", timeout=1800)
    assert moved.code == 0, moved.output[-6000:]

    check_phase0_refused(phase0)

    gone1 = phase0.cli("destroy", "phase1", "--yes", timeout=900)
    assert gone1.code == 0 and "the migration into phase1 is closed" in gone1.output, gone1.output[-3000:]
    assert not migrate.journal_for(phase0.inventory_path, "phase1").path.exists()
    closed = list(migrate.journal_for(phase0.inventory_path, "phase1").path.parent.glob(
        "migrate-phase1.journal.jsonl.closed-*"))
    assert closed, "the closed record is kept"
    _start_over(phase0)
