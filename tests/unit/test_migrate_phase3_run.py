"""How `migrate phase3` runs a step of several containers (the app's second copies): converged side by
side, at most the step's `at_once` at a time; each container checked by its own check; a failure of one
leaves the step to redo, and the rerun converges them all again. Guests and converges are doubles."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import pytest

from psa_provision.errors import GuestError
from psa_provision.journal import Journal
from psa_provision.migration.phase3 import HaSteps
from psa_provision.migration.phase3_steps import SECOND_COPIES, SECOND_COPIES_AT_ONCE, actions
from psa_provision.migration.record import read_states
from psa_provision.migration.steps import MigrationFailed, Step, plan_steps
from psa_provision.output import Output
from psa_provision.packaged import PHASES_DIR
from psa_provision.phases import ContainerSpec, Phase, load_phase
from psa_provision.ssh.wire import Result

P2, P3 = (load_phase(n, PHASES_DIR) for n in ("phase2", "phase3"))
NEW_APPS = (122, 123, 131, 141, 151, 161, 171, 181)  # phase3.yml's `also_on` containers


class Guest:
    """A container's connection: every command answers exit 0 unless the container is `sick`."""

    def __init__(self, steps: Steps, spec: ContainerSpec) -> None:
        self.steps, self.spec = steps, spec

    def run(self, script: str, *, check: bool = True, stdin: object = None) -> Result:
        self.steps.ran.append((self.spec.vmid, script))
        return Result("", "", 3 if self.spec.vmid in self.steps.sick else 0)


class Steps(HaSteps):
    """HaSteps with guests and converges as doubles: records who converged, how many at once."""

    def __init__(self, tmp_path: Path, *, broken: frozenset[int] = frozenset(),
                 sick: frozenset[int] = frozenset()) -> None:
        self.old, self.new = P2, P3
        self.err = io.StringIO()
        self.out = Output(stdout=io.StringIO(), stderr=self.err)
        self.journal = Journal(tmp_path / "migrate-phase3.journal.jsonl")
        self.steps = plan_steps(P2, P3)
        self._actions = {a.name: a for a in actions(P2, P3, {})}
        self.broken, self.sick = broken, sick
        self.converged: list[int] = []
        self.ran: list[tuple[int, str]] = []
        self.running = self.most = 0
        self.lock = threading.Lock()

    def conn(self, spec: ContainerSpec) -> Guest:  # type: ignore[override]
        return Guest(self, spec)

    def converge(self, spec: ContainerSpec, phase: Phase, *, files_only: bool = False,
                 progress: object = None) -> None:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.converged.append(spec.vmid)
        time.sleep(0.1)  # a build: long enough that converges allowed at once overlap
        with self.lock:
            self.running -= 1
        if spec.vmid in self.broken:
            raise GuestError(f"{spec.hostname}: npm ci failed")


def step(steps: Steps, name: str) -> Step:
    return next(s for s in steps.steps if s.name == name)


def test_the_second_copies_converge_side_by_side_at_most_at_once_then_each_is_checked(tmp_path: Path) -> None:
    steps = Steps(tmp_path)
    steps._ha(step(steps, SECOND_COPIES), ["run", "check"])
    assert sorted(steps.converged) == list(NEW_APPS)
    assert steps.most == SECOND_COPIES_AT_ONCE
    assert sorted(v for v, _ in steps.ran) == list(NEW_APPS), "the check ran on every copy"
    assert all("pm2-psa" in script for _, script in steps.ran)
    assert read_states(steps.journal.entries())[SECOND_COPIES].done == ["run", "check", "done"]


def test_a_copy_that_fails_leaves_the_step_to_redo_and_the_rerun_converges_them_all(tmp_path: Path) -> None:
    steps = Steps(tmp_path, broken=frozenset({141, 171}))
    with pytest.raises(GuestError, match="psa-tickets-2"):  # the first failure in the step's order
        steps._ha(step(steps, SECOND_COPIES), ["run", "check"])
    assert sorted(steps.converged) == list(NEW_APPS), "the others ran to their end"
    assert "psa-tickets-2: npm ci failed" in steps.err.getvalue()
    assert "psa-assets-2: npm ci failed" in steps.err.getvalue()
    assert SECOND_COPIES not in read_states(steps.journal.entries()), "no sub-step recorded: redo from run"
    rerun = Steps(tmp_path)
    rerun._ha(step(rerun, SECOND_COPIES), ["run", "check"])
    assert sorted(rerun.converged) == list(NEW_APPS)
    assert read_states(rerun.journal.entries())[SECOND_COPIES].finished


def test_a_failed_check_names_the_copy_and_undoes_nothing(tmp_path: Path) -> None:
    steps = Steps(tmp_path, sick=frozenset({131}))
    with pytest.raises(MigrationFailed) as failed:
        steps._ha(step(steps, SECOND_COPIES), ["run", "check"])
    message = failed.value.message
    assert message.startswith(f"{SECOND_COPIES}: ") and "on psa-crm-2" in message
    assert "psa-gateway-2" not in message and "nothing to undo" in message
    state = read_states(steps.journal.entries())[SECOND_COPIES]
    assert state.done == [] and state.label == "rolled back, to redo"


def test_a_phase2_app_container_is_its_own_step_and_rolls_back_to_phase2(tmp_path: Path) -> None:
    steps = Steps(tmp_path, sick=frozenset({130}))
    with pytest.raises(MigrationFailed) as failed:
        steps._ha(step(steps, "psa-crm"), ["run", "check"])
    assert steps.converged == [130, 130], "phase 3's plan, then phase 2's again"
    assert failed.value.message.startswith("psa-crm on psa-crm: ")
    assert "the step was rolled back" in failed.value.message
