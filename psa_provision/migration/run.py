"""One run of `migrate PHASE`: preflight, then every step not done yet, in order, under both phase locks."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from psa_provision.errors import ProvisionError, ProxmoxError
from psa_provision.journal import PhaseLock
from psa_provision.migration.phase1 import StoreSteps
from psa_provision.migration.phase2 import ServiceSteps
from psa_provision.migration.phase3 import HaSteps
from psa_provision.migration.record import StepState, read_states
from psa_provision.migration.steps import STORES, Report, Step, report
from psa_provision.output import Output
from psa_provision.preflight import ContainerState
from psa_provision.services.app import ENV_FILE
from psa_provision.services.catalog import SERVICES
from psa_provision.services.registry import MOVERS
from psa_provision.site import Site
from psa_provision.waits import finish_open_tasks


class Migration(StoreSteps, ServiceSteps, HaSteps):
    """One run of `migrate <phase>`: connections, the journal, and the steps in order."""

    # -- preflight -------------------------------------------------------------------------------
    def preflight(self) -> None:
        """Source containers running, target containers there, running and provisioned, movers present."""
        missing = [s.name for s in self.steps if s.name in STORES and s.name not in MOVERS]
        if missing:
            raise ProvisionError(f"no data mover for {', '.join(missing)} in this build",
                                 hint="nothing was changed")
        for spec in self.old.containers:
            status = self._status(spec)
            if status != "running":
                raise ProxmoxError(f"{self.old.name} container {spec.vmid} ({spec.hostname}) is "
                                   f"{status or 'missing'}: it holds the data to migrate",
                                   hint=f"start it (pct start {spec.vmid}) and run the migration again")
        up_first = f"run `psa-provision up {self.new.name}` first"
        for spec in self.new.containers:
            status = self._status(spec)
            if status != "running":
                raise ProxmoxError(f"{self.new.name} container {spec.vmid} ({spec.hostname}) is "
                                   f"{status or 'missing'}", hint=up_first)
        for step in self.steps:
            if step.target is None or step.kind == "ha":  # phase 3: `up` converged base only so far
                continue
            units = " ".join(SERVICES[step.name] if step.name in STORES else SERVICES["app"])
            check = f"systemctl is-active --quiet {units}"
            check += f" && test -f {ENV_FILE}" if step.name == "app" else ""
            if not self.conn(step.target).run(check, check=False).ok:
                raise ProvisionError(f"{step.target.hostname} ({step.target.ip}) has no running {step.name} "
                                     f"({units}): phase 1 is not provisioned", hint=up_first)

    # -- run -------------------------------------------------------------------------------------
    def run(self) -> Report:
        """Every step not done yet, in order; the report of all steps."""
        started = time.monotonic()
        locks = [PhaseLock.for_phase(self.site.inventory_path, p.name) for p in (self.old, self.new)]
        with _all_held(locks):
            states = read_states(self.journal.entries())
            if states.get("finish", StepState()).finished:
                return report(self.steps, states, 0.0)
            self.journal.record("run-start", command=f"migrate {self.new.name}")
            self.preflight()
            src = self.old.with_component("app")[0]
            finish_open_tasks(self.px, self.journal, [ContainerState(src, {}, True)], self.out.note)
            for step in self.steps:
                state = states.get(step.name, StepState())
                if state.finished:
                    self.say(step, "done earlier")
                    continue
                self._run_step(step, state)
                states = read_states(self.journal.entries())
            self.journal.record("run-end", command=f"migrate {self.new.name}")
        return report(self.steps, states, round(time.monotonic() - started, 1))

    def _run_step(self, step: Step, state: StepState) -> None:
        todo = [s for s in step.substeps if s not in state.done]
        if state.done:
            self.say(step, f"resuming: {', '.join(state.done)} done earlier")
        handover_steps = {"takeover": self._takeover, "service": self._service, "gateway": self._gateway,
                          "release": self._release}
        if step.kind == "ha":
            self._ha(step, todo)
        elif step.kind in handover_steps:
            handover_steps[step.kind](step, todo)
        elif step.name == "prepare":
            self._prepare(step, todo)
        elif step.name == "finish":
            self._finish(step, todo)
        elif step.name == "app":
            self._app(step, todo)
        else:
            self._store(step, todo, state)


@contextmanager
def _all_held(locks: list[PhaseLock]) -> Iterator[None]:
    """Hold every lock (old phase and new: no `up` of either may run during the migration)."""
    taken: list[PhaseLock] = []
    try:
        for lock in locks:
            lock.acquire()
            taken.append(lock)
        yield
    finally:
        for lock in reversed(taken):
            lock.release()


def migrate(site: Site, out: Output) -> Report:
    """Run (or resume) the migration to site.phase; MigrationFailed when a verify rolled a step back."""
    migration = Migration(site, out)
    try:
        return migration.run()
    finally:
        migration.close()
