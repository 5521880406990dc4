"""Phase 0 -> 1: each store moved into its own container, one at a time, with the writers quiesced.

Per store: snapshot the source container, quiesce the writers (PM2 on the old app container), move,
verify, point .env at the new store and restart PM2, health check, stop + disable the old service;
then `app` (PM2 started on phase 1's app container, stopped + disabled on the old one). A failed
verify rolls its step back and stops.
"""

from __future__ import annotations

import shlex
import time

from psa_provision.apply import JournaledTask
from psa_provision.journal import write_migration_grants
from psa_provision.migration.base import PM2, PM2_START, PM2_STOP, MigrationBase
from psa_provision.migration.record import StepState
from psa_provision.migration.steps import ENV_KEYS, SNAPSHOT_PREFIX, MigrationFailed, Step
from psa_provision.phases import ContainerSpec
from psa_provision.seams import sabotage_store
from psa_provision.services.app import APP_USER, ENV_FILE
from psa_provision.services.catalog import SERVICES
from psa_provision.services.mover import Check
from psa_provision.services.registry import MOVERS
from psa_provision.ssh import Connection
from psa_provision.waits import wait_healthy


class StoreSteps(MigrationBase):
    """The steps of a store migration (phase 0 -> 1): prepare, one per store, app, finish."""

    # -- prepare / finish: what can be done before any writer stops -------------------------------
    def _prepare(self, step: Step, todo: list[str]) -> None:
        app = self.app_step
        assert app.target is not None and app.source is not None
        if "hold app" in todo:
            self._sub(step, "hold app")
            self._grants(hold_app=True)
            self.say(step, f"PM2 apps on {app.target.hostname} stopped until the app step "
                           "(they started against empty stores)")
            self.conn(app.target).run(PM2_STOP, user=APP_USER)
            self.record(step, "hold app")
        if "grants" in todo:
            self._sub(step, "grants")
            for store in self._store_steps():
                self._grant(store, app.source)
            self.record(step, "grants")
        self.record(step, "done")

    def _finish(self, step: Step, todo: list[str]) -> None:
        if "revoke grants" in todo:
            self._sub(step, "revoke grants")
            write_migration_grants(self.site.inventory_path, self.new.name, None)
            for store in self._store_steps():
                self._revoke(store)
            self.record(step, "revoke grants")
        self.record(step, "done")
        self.say(step, f"migration to {self.new.name} complete; the old services are stopped and disabled, "
                       f"their data stays until `psa-provision cleanup {self.old.name}-leftovers`")

    # -- a store ---------------------------------------------------------------------------------
    def _store(self, step: Step, todo: list[str], state: StepState) -> None:
        assert step.source is not None and step.target is not None
        mover = MOVERS[step.name]
        app = self.app_step.source
        assert app is not None
        src, dst = self.conn(step.source), self.conn(step.target)
        if "snapshot" in todo:
            self._snapshot(step)
        quiesced_at = state.quiesced_at
        def log(text: str) -> None:
            self.out.note(f"[{step.name}] {text}")

        if "move" in todo:  # e.g. Redis: the target replicates while the writers still write
            mover.prepare(src, dst, self.site.secrets, log, source_ip=step.source.ip)
        if "switch" in todo:  # writers stay stopped until the switch: stop them again after a kill
            self._sub(step, "quiesce")
            self.say(step, f"quiescing writers: PM2 apps on {app.hostname} stopped")
            if "quiesce" in todo or quiesced_at is None:
                quiesced_at = time.time()
            self.conn(app).run(PM2_STOP, user=APP_USER)
            if "quiesce" in todo:
                self.record(step, "quiesce", at=quiesced_at)
        if "move" in todo:
            self._sub(step, "move")
            self.say(step, f"moving {step.name} data {step.source.hostname} -> {step.target.hostname}")
            mover.move(src, dst, self.site.secrets, log)
            self.record(step, "move")
            self._sabotage(step, dst)
        if "verify" in todo:
            self._sub(step, "verify")
            checks = mover.verify(src, dst, self.site.secrets)
            self._print_checks(step, checks)
            failed = [c for c in checks if not c.passed]
            if not checks:
                self.say(step, "verify: neither side holds any of the app's data (nothing to compare)")
            if failed:
                self._roll_back(step, failed)
            self.record(step, "verify", checks=len(checks))
        if "switch" in todo:
            self._sub(step, "switch")
            self._switch(step, app)
            self.record(step, "switch")
        quiesce_s = round(time.time() - quiesced_at, 1) if quiesced_at else None
        if "retire" in todo:
            self._sub(step, "retire")
            self._retire(step)
            self.record(step, "retire")
        self.record(step, "done", quiesce_s=quiesce_s)
        if quiesce_s is not None:
            self.say(step, f"done; writes were quiesced for {quiesce_s:.1f} s")

    def _snapshot(self, step: Step) -> None:
        """A Proxmox snapshot of the source container (taken again if one of that name is left over)."""
        assert step.source is not None
        spec = step.source
        self._sub(step, "snapshot")
        name = f"{SNAPSHOT_PREFIX}{step.name}"
        self.say(step, f"snapshot {name} of container {spec.vmid}")
        if name in self.px.snapshots(spec.node, spec.vmid):
            old = JournaledTask(self.journal, f"migrate {step.name}: delete old snapshot")
            self.px.delete_snapshot(spec.node, spec.vmid, name, track=old)
        why = f"psa-provision: before migrate {self.new.name} {step.name}"
        self.px.snapshot(spec.node, spec.vmid, name, why,
                         track=JournaledTask(self.journal, f"migrate {step.name}: snapshot"))
        self.record(step, "snapshot", snapshot=name, vmid=spec.vmid)

    def _sabotage(self, step: Step, dst: Connection) -> None:
        """Test seam (seams.sabotage_store): the moved data may be damaged here so that verify fails."""
        sabotage_store(step.name, dst, self.site.secrets, self.out.warn)

    def _print_checks(self, step: Step, checks: list[Check]) -> None:
        rows = [[c.what, c.source, c.target, "ok" if c.passed else "DIFFERENT"] for c in checks]
        self.out.table(f"verify {step.name}", ["check", "source", "target", "result"], rows)

    def _roll_back(self, step: Step, failed: list[Check]) -> None:
        """Empty the target, start the writers again on the untouched source, stop with the reason."""
        assert step.target is not None
        app = self.app_step.source
        assert app is not None
        self.out.warn(f"[{step.name}] verify failed: rolling the step back")
        MOVERS[step.name].discard(self.conn(step.target), self.site.secrets,
                                  lambda text: self.out.note(f"[{step.name}] {text}"))
        source = self.conn(app)
        source.run(f"systemctl start {' '.join(SERVICES[step.name])}\n")
        source.run(PM2_START, user=APP_USER)
        with self.out.steps() as progress:
            wait_healthy(source, self.old, app, progress)
        self.record(step, "rolled-back", failed=[c.what for c in failed])
        names = "; ".join(f"{c.what}: source {c.source}, target {c.target}" for c in failed)
        raise MigrationFailed(f"{step.name}: verify failed ({names}); the step was rolled back: "
                              f"{step.target.hostname} emptied, {app.hostname} serves from its own "
                              f"{step.name} again",
                              hint="find out why the copies differ, then run the same command again")

    def _switch(self, step: Step, app: ContainerSpec) -> None:
        """.env of the old app container points at the new store; PM2 restarted; healthy again."""
        assert step.target is not None
        key = ENV_KEYS[step.name]
        expr = shlex.quote(f"s|^{key}=.*|{key}={step.target.ip}|")
        self.say(step, f"{ENV_FILE} on {app.hostname}: {key}={step.target.ip}; PM2 apps started again")
        conn = self.conn(app)
        line = shlex.quote(f"{key}={step.target.ip}")
        conn.run(f"sed -i -e {expr} {ENV_FILE}\ngrep -qx {line} {ENV_FILE}\n")
        conn.run(PM2_START, user=APP_USER)
        with self.out.steps() as progress:
            wait_healthy(conn, self.old, app, progress)

    def _retire(self, step: Step) -> None:
        """Stop and disable the old service (its data stays); the app must stay healthy without it."""
        assert step.source is not None
        units = " ".join(SERVICES[step.name])
        self.say(step, f"stopping and disabling {units} on {step.source.hostname} (data kept)")
        self.conn(step.source).run(f"systemctl disable --now {units} 2>&1\n")
        app = self.app_step.source
        assert app is not None
        with self.out.steps() as progress:
            wait_healthy(self.conn(app), self.old, app, progress)

    # -- the app ---------------------------------------------------------------------------------
    def _app(self, step: Step, todo: list[str]) -> None:
        assert step.source is not None and step.target is not None
        if "snapshot" in todo:
            self._snapshot(step)
        if "start" in todo:
            self._sub(step, "start")
            self._grants(hold_app=False)
            self.say(step, f"PM2 apps started on {step.target.hostname}")
            target = self.conn(step.target)
            target.run(PM2_START, user=APP_USER)
            with self.out.steps() as progress:
                wait_healthy(target, self.new, step.target, progress)
            self.record(step, "start")
        if "retire" in todo:
            self._sub(step, "retire")
            self.say(step, f"PM2 stopped and pm2-psa disabled on {step.source.hostname}")
            self.conn(step.source).run(PM2 + "pm2 kill >/dev/null 2>&1 || true\n", user=APP_USER)
            self.conn(step.source).run("systemctl disable --now pm2-psa 2>&1\n")
            self.record(step, "retire")
        self.record(step, "done", quiesce_s=0.0)
