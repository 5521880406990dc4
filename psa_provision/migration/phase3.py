"""Phase 2 -> 3: the standalone stores become their clusters' first members, step by step (phase3_steps).

Each step runs, then its check; a failed check runs the step's rollback (a shared container converges
phase 2's plan again) and stops the migration naming the check. The journal records `run` and `check`
per step, so a killed run resumes at the first step whose check has not been recorded. A step of
several containers (`together`: etcd's members, the app's second copies) converges them side by side,
at most its `at_once`; when one fails, the step fails once all have ended, with no `run` recorded, so
the rerun converges them all again (a converged one changes nothing).
"""

from __future__ import annotations

import dataclasses
import time

from psa_provision import planner
from psa_provision.apply import apply
from psa_provision.changes import Noop, Package, Plan, PutFile
from psa_provision.errors import ProvisionError
from psa_provision.facts_ahead import gather_facts_and_health
from psa_provision.journal import write_migration_grants
from psa_provision.migration.base import MigrationBase
from psa_provision.migration.phase3_steps import HaAction, actions
from psa_provision.migration.steps import MigrationFailed, Step
from psa_provision.output import StepProgress
from psa_provision.phases import ContainerSpec, Phase
from psa_provision.reads import side_by_side
from psa_provision.services import rabbitmq
from psa_provision.services.app import APP_HOME, APP_USER
from psa_provision.services.context import build_context
from psa_provision.services.patroni.component import user_passwords
from psa_provision.services.rabbitmq import migration as rabbitmq_migration
from psa_provision.ssh import Connection
from psa_provision.waits import wait_healthy

CHECK_EVERY_S = 3.0
FILES_ONLY = (Package, PutFile)  # `files` steps: install and write, start and stop nothing


class HaSteps(MigrationBase):
    """The steps of phase 2 -> 3 (phase3_steps.actions), run in order with their checks."""

    _actions: dict[str, HaAction] | None = None

    def ha_action(self, step: Step) -> HaAction:
        if self._actions is None:
            ctx = build_context(self.site.inventory, self.new, self.new.containers[0],
                                        self.site.secrets, bundle_dir=None)
            self._actions = {a.name: a for a in actions(self.old, self.new, user_passwords(ctx))}
        return self._actions[step.name]

    def _ha(self, step: Step, todo: list[str]) -> None:
        action = self.ha_action(step)
        if action.kind == "hold":
            write_migration_grants(self.site.inventory_path, self.new.name, {"converting": True})
        elif action.kind == "release":
            write_migration_grants(self.site.inventory_path, self.new.name, None)
            self.say(step, f"migration to {self.new.name} complete: `psa-provision up {self.new.name}` "
                           "converges it from now on")
        else:
            spec = self.new.container(action.vmid)
            if "run" in todo:
                self._sub(step, "run")
                self.say(step, action.summary)
                self._run_action(action, spec)
                self.record(step, "run")
            if "check" in todo:
                self._sub(step, "check")
                problems = self._check(action, spec)
                if problems:
                    self._roll_back_ha(step, action, spec, problems)
                if action.again:
                    self.converge(spec, self.new)
                self.record(step, "check")
        self.record(step, "done", quiesce_s=0.0)

    def _run_action(self, action: HaAction, spec: ContainerSpec) -> None:
        if action.kind == "script" and action.run:
            result = self.conn(spec).run(action.run, stdin=action.stdin, check=False)
            if not result.ok:
                self.out.warn(f"[{action.name}] exit {result.exit_code}: {result.stdout.strip()[-300:]}")
        elif action.kind == "queues":
            moved = rabbitmq_migration.move_all(self.conn(spec), self.site.secrets, rabbitmq.VHOST,
                                                self.out.note)
            self.out.note(f"[{action.name}] quorum now: {', '.join(moved) or 'no classic queue was left'}")
        elif action.kind in ("converge", "files"):
            specs = [spec, *(self.new.container(v) for v in action.together)]
            with self.out.steps() as progress:
                side_by_side(lambda s: self._converge_one(action, s, progress), specs,
                             workers=action.at_once or len(specs))

    def _converge_one(self, action: HaAction, spec: ContainerSpec, progress: StepProgress) -> None:
        """One container of a converge or files step; side by side with others, its failure is named
        here (side_by_side raises only the first, once every container has ended)."""
        try:
            self.converge(spec, self.new, files_only=action.kind == "files", progress=progress)
        except ProvisionError as exc:
            if action.together:
                first = exc.message.splitlines()[0] if exc.message else type(exc).__name__
                named = first if first.startswith(spec.hostname) else f"{spec.hostname}: {first}"
                self.out.warn(f"[{action.name}] {named}")
            raise

    def converge(self, spec: ContainerSpec, phase: Phase, *, files_only: bool = False,
                 progress: StepProgress | None = None) -> None:
        """Apply `phase`'s plan of the container as `up` would (only packages and files when
        files_only); an app container then answers /health before the next step (its wait shown on
        `progress`, else on a progress of its own)."""
        conn = self.conn(spec)
        facts, _ = gather_facts_and_health(conn, phase, spec, self.site.secrets)
        site = dataclasses.replace(self.site, phase=phase)
        changes = planner.guest_plan(site, spec, facts).changes
        if files_only:
            changes = [c for c in changes if isinstance(c, (*FILES_ONLY, Noop))]
        summary = apply(Plan(changes), {spec.hostname: conn}, self.px, self.journal, None,
                        pm2_user=APP_USER, pm2_home=APP_HOME)
        if summary.error is not None:
            raise summary.error
        if "app" in spec.components and phase.services_on(spec.vmid) and not files_only:
            if progress is not None:
                wait_healthy(conn, phase, spec, progress)
                return
            with self.out.steps() as own:
                wait_healthy(conn, phase, spec, own)

    def _check(self, action: HaAction, spec: ContainerSpec) -> list[str]:
        """The action's check; asked again every few seconds for up to its settle_s while it fails."""
        deadline = time.monotonic() + action.settle_s
        while True:
            problems = self._check_once(action, spec)
            if not problems or time.monotonic() >= deadline:
                return problems
            time.sleep(CHECK_EVERY_S)

    def _check_once(self, action: HaAction, spec: ContainerSpec) -> list[str]:
        """The check on each container of the step (its own check: action.check_on), problems named
        by container when the step has several."""
        problems: list[str] = []
        for each in [spec, *(self.new.container(v) for v in action.together)]:
            check = action.check_on(each.vmid)
            if not check:
                continue
            result = self.conn(each).run(check, check=False)
            if action.judge is not None:
                problems += action.judge(result.exit_code, result.stdout)
            elif not result.ok:
                where = f" on {each.hostname}" if action.together else ""
                problems.append(f"{check.strip().splitlines()[0]}{where} (exit {result.exit_code})")
        return problems

    def _roll_back_ha(self, step: Step, action: HaAction, spec: ContainerSpec, problems: list[str]) -> None:
        """Undo the step (its rollback script, or phase 2's plan again on a shared container), then stop."""
        self.out.warn(f"[{step.name}] {'; '.join(problems)}: rolling the step back")
        conn: Connection = self.conn(spec)
        if action.rollback:
            conn.run(action.rollback, check=False)
        elif action.shared and action.kind in ("converge", "files"):
            self.converge(self.old.container(spec.vmid), self.old)
        self.record(step, "rolled-back", failed=problems)
        where = "" if action.together else f" on {spec.hostname}"  # else each problem names its container
        undone = ("the step was rolled back" if action.rollback or action.shared else
                  "nothing to undo (no container of the step ran in the phase before)")
        raise MigrationFailed(f"{step.name}{where}: {'; '.join(problems)}; {undone}",
                              hint="find out why (the container's journal: journalctl -u <unit>), then run "
                                   "the same command again: it resumes at this step")
