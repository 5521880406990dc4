"""The whole life cycle, starting over included: up 0 -> up 1 -> migrate 1 -> destroy 1 -> destroy 0 -> up 0
(phase 3 and 2, which earlier tests of the session built, destroyed first).

Refusals follow the real state: while phase 0's container holds the data a migration moved away, `plan`
and `up` of phase 0 refuse with the same message; once phase 1 is destroyed (its migration record is
closed) and phase 0 too, `up phase0` starts over from nothing. It deletes every container of the
session, so it runs last (tests/e2e/conftest.py moves tests marked `session_end` to the end).
"""

from __future__ import annotations

import pytest

from psa_provision import journal
from psa_provision.migration import steps as migrate

from .conftest import Site, wait_gateway_healthy

pytestmark = [pytest.mark.sandbox, pytest.mark.session_end]


def test_destroy_then_up_starts_over_and_plan_refuses_what_up_refuses(phase0: Site) -> None:
    for phase in ("phase1", "phase2", "phase3"):  # what earlier tests recorded, forgotten as they do
        migrate.journal_for(phase0.inventory_path, phase).path.unlink(missing_ok=True)
        journal.write_migration_grants(phase0.inventory_path, phase, None)
    for phase in ("phase3", "phase2", "phase1"):  # each shares the earlier one's stores: phase 1 cold next
        run = phase0.cli("destroy", phase, "--yes", timeout=900)
        assert run.code == 0, run.output[-4000:]
    up0 = phase0.cli("up", "phase0", "--yes")
    assert up0.code == 0, up0.output[-4000:]
    up1 = phase0.cli("up", "phase1", "--yes")  # cold
    assert up1.code == 0, up1.output[-4000:]
    moved = phase0.cli("migrate", "phase1", timeout=1800)
    assert moved.code == 0, moved.output[-6000:]

    refused = {cmd: phase0.cli(cmd, "phase0", *extra, timeout=300)
               for cmd, extra in (("plan", ()), ("up", ("--yes",)))}
    for cmd, run in refused.items():
        assert run.code == 1 and f"refusing `{cmd} phase0`" in run.output, run.output[-3000:]
        assert "migration phase0 -> phase1 is complete" in run.output, run.output[-3000:]
    assert (refused["plan"].output.replace("refusing `plan", "refusing `up")
            == refused["up"].output), "plan and up refuse with the same message"

    gone1 = phase0.cli("destroy", "phase1", "--yes", timeout=900)
    assert gone1.code == 0 and "the migration into phase1 is closed" in gone1.output, gone1.output[-3000:]
    assert not migrate.journal_for(phase0.inventory_path, "phase1").path.exists()
    closed = list(migrate.journal_for(phase0.inventory_path, "phase1").path.parent.glob(
        "migrate-phase1.journal.jsonl.closed-*"))
    assert closed, "the closed record is kept"
    gone0 = phase0.cli("destroy", "phase0", "--yes", timeout=900)
    assert gone0.code == 0 and "1 destroyed" in gone0.output, gone0.output[-3000:]

    plan = phase0.cli("plan", "phase0", timeout=600)
    assert plan.code == 2 and "refusing" not in plan.output, plan.output[-3000:]
    again = phase0.cli("up", "phase0", "--yes")
    assert again.code == 0 and again.summary()[2] == 0, again.output[-4000:]
    wait_gateway_healthy(phase0)
    second = phase0.cli("up", "phase0", "--yes")
    assert second.code == 0 and second.summary()[0] == 0, second.output[-4000:]
