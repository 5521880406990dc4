"""`migrate phase1`: phase 0's stores moved one at a time into phase 1's containers, journaled and verified.

Steps: `prepare` (phase 1's app held stopped, temporary grants so phase 0's app reaches the new stores),
one step per store (snapshot the source container, quiesce the writers = PM2 on the old app container,
move, verify, point .env at the new store and restart PM2, health check, stop + disable the old
service), `app` (PM2 started on phase 1's app container, stopped + disabled on the old one), `finish`
(temporary grants removed). Each sub-step is journaled when done, so the same command resumes an
interrupted migration where it stopped; a failed verify rolls its step back and stops.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from psa_provision import firewall, handover, planner
from psa_provision.apply import JournaledTask
from psa_provision.engine import ContainerState, Site, finish_open_tasks, ssh_connection, wait_healthy
from psa_provision.errors import InputError, ProvisionError, ProxmoxError
from psa_provision.journal import PhaseLock, write_migration_grants
from psa_provision.migration_record import StepState, journal_for, moved_away, read_states
from psa_provision.output import Output
from psa_provision.phases import ContainerSpec, Phase, around
from psa_provision.proxmox import ProxmoxClient, connect
from psa_provision.seams import kill_point, sabotage_service, sabotage_store
from psa_provision.services.app import APP_USER, ECOSYSTEM_FILE, ENV_FILE, pm2
from psa_provision.services.app.component import probe_address
from psa_provision.services.catalog import SERVICES
from psa_provision.services.mover import Check
from psa_provision.services.postgresql import HBA as PG_HBA
from psa_provision.services.postgresql import component as pg_component
from psa_provision.services.registry import MOVERS
from psa_provision.ssh import Connection

STORES = ("postgresql", "redis", "rabbitmq", "elasticsearch")
ENV_KEYS = {"postgresql": "POSTGRES_HOST", "redis": "REDIS_HOST", "rabbitmq": "RABBITMQ_HOST",
            "elasticsearch": "ELASTICSEARCH_HOST"}
SUBSTEPS: dict[str, tuple[str, ...]] = {
    "prepare": ("hold app", "grants"),
    **{s: ("snapshot", "quiesce", "move", "verify", "switch", "retire") for s in STORES},
    "app": ("snapshot", "start", "retire"),
    "finish": ("revoke grants",),
}
# phase 1 -> 2 (handover: the stores stay where they are, the stateless services change container)
HANDOVER_SUBSTEPS: dict[str, tuple[str, ...]] = {
    "takeover": ("grants",),
    "service": ("start", "verify", "route", "retire"),
    "gateway": ("start", "verify", "retire"),
    "release": ("revoke grants",),
}
SUPPORTED = ("phase1", "phase2")
GATEWAY = "api-gateway"
SERVICE_TIMEOUT = 180.0  # seconds a moved service (or a rerouted gateway) gets to answer /health
OFFLINE_POLLS = 3  # polls (2 s apart) in a row with no PM2 instance online: the service is down
GRANT_TAG = handover.GRANT_TAG  # not firewall.TAG: `up` leaves these rules where they are
SNAPSHOT_PREFIX = "psa_migrate_"
PM2 = pm2.ENV
PM2_STOP = PM2 + "pm2 stop all >/dev/null 2>&1 || true\n"
PM2_START = PM2 + f"pm2 startOrRestart {ECOSYSTEM_FILE} --update-env >/dev/null\npm2 save >/dev/null\n"


class MigrationFailed(ProvisionError):
    """A step's verify found the target different from the source: the step was rolled back."""


@dataclass(frozen=True)
class Step:
    """One migration step: what moves from which container to which."""

    name: str
    source: ContainerSpec | None = None
    target: ContainerSpec | None = None
    kind: str = ""  # SUBSTEPS key when it is not the name (phase 2's per-service steps)

    @property
    def substeps(self) -> tuple[str, ...]:
        return HANDOVER_SUBSTEPS[self.kind] if self.kind else SUBSTEPS[self.name]


def plan_steps(old: Phase, new: Phase) -> list[Step]:
    """The steps from `old` to `new`, derived from the phase files (which container has what)."""
    if handover.old_apps(old, new):
        return service_steps(old, new)
    steps = [Step("prepare")]
    for store in STORES:
        src, dst = old.with_component(store), new.with_component(store)
        if src and dst and src[0].vmid != dst[0].vmid:
            steps.append(Step(store, src[0], dst[0]))
    src, dst = old.with_component("app"), new.with_component("app")
    if not src or not dst:
        raise InputError(f"{new.name}: no app container in {old.name} or {new.name}: nothing to migrate")
    steps += [Step("app", src[0], dst[0]), Step("finish")]
    return steps


def service_steps(old: Phase, new: Phase) -> list[Step]:
    """`new` keeps `old`'s stores: one step per service that changes container (ports order, the
    gateway last: its step is where clients switch), between `takeover` and `release` of the grants."""
    steps = [Step("prepare", kind="takeover")]
    for name, svc in sorted(new.services.items(), key=lambda kv: (kv[0] == GATEWAY, kv[1].port)):
        before = old.services.get(name)
        if before is None or before.container == svc.container:
            continue
        steps.append(Step(name, old.container(before.container), new.container(svc.container),
                          kind="gateway" if name == GATEWAY else "service"))
    return [*steps, Step("finish", kind="release")]


def phases_of(site: Site) -> tuple[Phase, Phase]:
    """(the phase before site.phase, site.phase) from the phase files."""
    before, _ = around(site.phase.name, site.inventory.phases_dir)
    if not before:
        raise InputError(f"{site.phase.name} is the first phase: there is nothing to migrate from")
    if site.phase.name not in SUPPORTED:
        raise InputError(f"migrate {site.phase.name} is not supported yet",
                         hint=f"supported: {', '.join(SUPPORTED)}")
    return before[-1], site.phase


def refuse_moved_away(site: Site, command: str) -> None:
    """InputError when `up`/`plan` of site.phase would restart old services on stale data.

    The journal says whether a migration away from the phase has started; the real state says whether
    any of the phase's containers still hold that data. When none exists (destroyed, by the tool or by
    hand), nothing stale can start again and the command goes on. When the API cannot tell, the journal
    alone decides: refusing is the safe side."""
    why = moved_away(site.inventory_path, site.phase.name, site.inventory.phases_dir)
    if why is None:
        return
    try:
        guests = {int(g.get("vmid", -1)) for g in connect(site.inventory).cluster_guests()}
    except ProvisionError:
        guests = None
    if guests is not None and not any(c.vmid in guests for c in site.phase.containers):
        return
    raise InputError(f"refusing `{command} {site.phase.name}`: {why}",
                     hint="`psa-provision migrate PHASE --plan` shows where it stands; migrate's snapshots "
                          "of the old containers are the way back; destroying the new phase starts over")


@dataclass
class Report:
    """What `migrate` prints at the end: per step its state and write-quiesce seconds."""

    rows: list[list[str]]
    total_quiesce_s: float
    seconds: float
    complete: bool
    legend: list[str] = field(default_factory=list)  # "each store step: snapshot -> ..." per kind


def plan_report(site: Site) -> Report:
    """The steps and their journal state; reads the phase files and the journal only."""
    old, new = phases_of(site)
    states = read_states(journal_for(site.inventory_path, new.name).entries())
    return _report(plan_steps(old, new), states, 0.0)


def _report(steps: list[Step], states: dict[str, StepState], seconds: float) -> Report:
    rows = []
    total = 0.0
    for step in steps:
        st = states.get(step.name, StepState())
        where = (f"{step.source.vmid} -> {step.target.vmid} {step.target.hostname} ({step.target.ip})"
                 if step.source and step.target else "-")
        quiesce = f"{st.quiesce_s:.1f} s" if st.quiesce_s is not None else "-"
        total += st.quiesce_s or 0.0
        rows.append([step.name, where, st.label, quiesce])
    complete = states.get("finish", StepState()).finished
    return Report(rows, round(total, 1), seconds, complete, legend(steps))


def legend(steps: list[Step]) -> list[str]:
    """One line per kind of moving step: its sub-steps in order."""
    kinds: dict[str, tuple[str, ...]] = {}
    for step in steps:
        if step.source is not None and step.target is not None:
            kind = "store" if step.name in STORES else (step.kind or step.name)
            kinds.setdefault(kind, step.substeps)
    return [f"each {kind} step: {' -> '.join(subs)}" for kind, subs in kinds.items()]


class Migration:
    """One run of `migrate <phase>`: connections, the journal, and the steps in order."""

    def __init__(self, site: Site, out: Output) -> None:
        self.site = site
        self.out = out
        self.old, self.new = phases_of(site)
        self.steps = plan_steps(self.old, self.new)
        self.journal = journal_for(site.inventory_path, self.new.name)
        self.px: ProxmoxClient = connect(site.inventory)
        self._conns: dict[int, Connection] = {}

    # -- helpers ---------------------------------------------------------------------------------
    def conn(self, spec: ContainerSpec) -> Connection:
        if spec.vmid not in self._conns:
            self._conns[spec.vmid] = ssh_connection(self.site.inventory, spec)
        return self._conns[spec.vmid]

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()

    def record(self, step: Step, state: str, **fields: Any) -> None:
        self.journal.record("migrate", step=step.name, state=state, **fields)

    def say(self, step: Step, text: str) -> None:
        self.out.line(f"[{step.name}] {text}")

    def _status(self, spec: ContainerSpec) -> str | None:
        """The container's status (running, stopped), None when it does not exist."""
        if self.px.find_vmid(spec.vmid) is None:
            return None
        return str(self.px.status(spec.node, spec.vmid).get("status"))

    @property
    def app_step(self) -> Step:
        return next(s for s in self.steps if s.name == "app")

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
            if step.target is None:
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
                return _report(self.steps, states, 0.0)
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
        return _report(self.steps, states, round(time.monotonic() - started, 1))

    def _run_step(self, step: Step, state: StepState) -> None:
        todo = [s for s in step.substeps if s not in state.done]
        if state.done:
            self.say(step, f"resuming: {', '.join(state.done)} done earlier")
        handover_steps = {"takeover": self._takeover, "service": self._service, "gateway": self._gateway,
                          "release": self._release}
        if step.kind in handover_steps:
            handover_steps[step.kind](step, todo)
        elif step.name == "prepare":
            self._prepare(step, todo)
        elif step.name == "finish":
            self._finish(step, todo)
        elif step.name == "app":
            self._app(step, todo)
        else:
            self._store(step, todo, state)

    def _sub(self, step: Step, sub: str) -> None:
        """Announce a sub-step (and the kill point test seam: `migrate <step>: <sub-step>`)."""
        kill_point(f"migrate {step.name}: {sub}")
        self.out.note(f"[{step.name}] {sub}")

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

    def _store_steps(self) -> list[Step]:
        return [s for s in self.steps if s.name in STORES]

    def _grants(self, *, hold_app: bool) -> None:
        """The grants file `up` reads while the migration runs (old app IPs, phase 1's PM2 held)."""
        clients = sorted({c.ip for c in self.old.with_component("app")})
        write_migration_grants(self.site.inventory_path, self.new.name,
                               {"clients": clients, "hold_app": hold_app})

    def _grant(self, step: Step, client: ContainerSpec) -> None:
        """Let `client` (the old app container) reach step's new store: firewall rule, pg_hba line."""
        assert step.target is not None
        target = step.target
        handover.grant(self.px, target, firewall.STORE_PORTS[step.name], client, self.new.name,
                       lambda text: self.out.note(f"[prepare] {text}"))
        if step.name == "postgresql":
            self._write_hba(target)

    def _revoke(self, step: Step) -> None:
        """Remove the temporary firewall rules (last first) and pg_hba lines of step's target."""
        assert step.target is not None
        target = step.target
        handover.revoke(self.px, target, lambda text: self.out.note(f"[finish] {text}"))
        if step.name == "postgresql":
            self._write_hba(target)

    def _write_hba(self, target: ContainerSpec) -> None:
        """pg_hba.conf as `up` renders it now (with the grants file's temporary clients), reloaded."""
        ctx = planner.build_context(self.site.inventory, self.new, target, self.site.secrets, bundle_dir=None)
        conn = self.conn(target)
        conn.put(PG_HBA, pg_component.hba_content(ctx), mode=0o640, owner="postgres",
                 group="postgres")
        conn.run("systemctl reload postgresql\n")

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


    # -- phase 1 -> 2: stateless services change container, the stores stay (handover) -------------
    def _note(self, step: Step) -> Callable[[str], None]:
        return lambda text: self.out.note(f"[{step.name}] {text}")

    def _takeover(self, step: Step, todo: list[str]) -> None:
        """The old app container stays a client of the stores (as `up` made it) and may call every
        moved service on its new container (a temporary rule on each) until `release`."""
        if "grants" in todo:
            self._sub(step, "grants")
            old_app = self.old.with_component("app")[0]
            handover.keep_old_clients(self.px, self.site.inventory_path, self.old, self.new, self._note(step))
            for moved in self.steps:
                if moved.kind == "service" and moved.target is not None:
                    handover.grant(self.px, moved.target, self.new.services[moved.name].port, old_app,
                                   self.new.name, self._note(step))
            for pg in self.new.with_component("postgresql"):
                self._write_hba(pg)
            self.record(step, "grants")
        self.record(step, "done")

    def _release(self, step: Step, todo: list[str]) -> None:
        """Grants file, temporary firewall rules and pg_hba line of the old app container removed."""
        if "revoke grants" in todo:
            self._sub(step, "revoke grants")
            write_migration_grants(self.site.inventory_path, self.new.name, None)
            for spec in self.new.containers:
                handover.revoke(self.px, spec, self._note(step))
            for pg in self.new.with_component("postgresql"):
                self._write_hba(pg)
            self.record(step, "revoke grants")
        self.record(step, "done")
        old_app = self.old.with_component("app")[0]
        self.say(step, f"migration to {self.new.name} complete; PM2 is stopped and disabled on "
                       f"{old_app.hostname} (its files stay)")

    def _service(self, step: Step, todo: list[str]) -> None:
        """Start on the new container, verify there, route the old gateway to it, retire the old copy."""
        assert step.source is not None and step.target is not None
        src, dst = self.conn(step.source), self.conn(step.target)
        if "start" in todo:
            self._sub(step, "start")
            self.say(step, f"PM2 app {step.name} started on {step.target.hostname}")
            dst.run(pm2_only("startOrReload", step.name), user=APP_USER)
            self._sabotage_service(step, dst)
            self.record(step, "start")
        if "verify" in todo:
            self._sub(step, "verify")
            problem = service_problem(dst, self.new, step.target, step.name)
            if problem:
                self._roll_back_service(step, problem)
            self.say(step, f"{step.name} healthy on {step.target.hostname}")
            self.record(step, "verify")
        if "route" in todo:
            self._sub(step, "route")
            url = f"http://{step.target.ip}:{self.new.services[step.name].port}"
            self._route(step, url)
            problem = service_problem(src, self.old, step.source, GATEWAY)
            if problem:
                self._roll_back_service(step, f"the gateway on {step.source.hostname} via {url}: {problem}")
            self.record(step, "route")
        if "retire" in todo:
            self._sub(step, "retire")
            self.say(step, f"PM2 app {step.name} deleted on {step.source.hostname}")
            src.run(pm2_only("delete", step.name), user=APP_USER)
            self.record(step, "retire")
        self.record(step, "done", quiesce_s=0.0)

    def _route(self, step: Step, url: str) -> None:
        """<SERVICE>_SERVICE_URL in the old gateway's .env set to `url`; its PM2 app reloaded (cluster
        mode: one instance at a time, no request refused) when the value changed."""
        assert step.source is not None
        key = f"{step.name.upper()}_SERVICE_URL"
        line = shlex.quote(f"{key}={url}")
        expr = shlex.quote(f"s|^{key}=.*|{key}={url}|")
        self.say(step, f"gateway on {step.source.hostname}: {key}={url}")
        conn = self.conn(step.source)
        changed = conn.run(f"grep -qx {line} {ENV_FILE} && echo same || {{ sed -i -e {expr} {ENV_FILE} && "
                           f"grep -qx {line} {ENV_FILE} && echo changed; }}\n").stdout.split()
        if changed[-1:] != ["same"]:
            conn.run(pm2_only("reload", GATEWAY), user=APP_USER)

    def _roll_back_service(self, step: Step, problem: str) -> None:
        """Route back to the old copy (started again if need be), stop the new one, stop with the reason."""
        assert step.source is not None and step.target is not None
        self.out.warn(f"[{step.name}] {problem}: rolling the step back")
        src = self.conn(step.source)
        if pm2_online(src, step.name) == 0:  # retired already (a later failure): start it again
            src.run(pm2_only("startOrRestart", step.name), user=APP_USER)
        self._route(step, f"http://127.0.0.1:{self.old.services[step.name].port}")
        self.conn(step.target).run(pm2_only("stop", step.name), user=APP_USER)
        again = service_problem(src, self.old, step.source, GATEWAY)
        self.record(step, "rolled-back", failed=[problem])
        state = f"the gateway on {step.source.hostname} answers again" if again is None else \
            f"the gateway on {step.source.hostname} is still unhealthy: {again}"
        raise MigrationFailed(f"{step.name}: {problem}; the step was rolled back: {step.name} runs on "
                              f"{step.source.hostname} only, {state}",
                              hint="find out why (pm2 logs on the new container), then run the same command "
                                   "again")

    def _sabotage_service(self, step: Step, dst: Connection) -> None:
        """Test seam (seams.sabotage_service): the started service may be stopped here (verify fails)."""
        sabotage_service(step.name, lambda: dst.run(pm2_only("stop", step.name), user=APP_USER),
                         self.out.warn)

    def _gateway(self, step: Step, todo: list[str]) -> None:
        """The new gateway started and healthy (its /health asks every moved service), then the old one
        stopped: clients switch to the new gateway's address."""
        assert step.source is not None and step.target is not None
        dst = self.conn(step.target)
        if "start" in todo:
            self._sub(step, "start")
            self.say(step, f"PM2 app {GATEWAY} started on {step.target.hostname}")
            dst.run(pm2_only("startOrReload", GATEWAY), user=APP_USER)
            self._sabotage_service(step, dst)
            self.record(step, "start")
        if "verify" in todo:
            self._sub(step, "verify")
            problem = service_problem(dst, self.new, step.target, GATEWAY)
            if problem:
                self.out.warn(f"[{step.name}] {problem}: rolling the step back")
                dst.run(pm2_only("stop", GATEWAY), user=APP_USER)
                self.record(step, "rolled-back", failed=[problem])
                raise MigrationFailed(f"{GATEWAY} on {step.target.hostname}: {problem}; the step was rolled "
                                      f"back: clients still use {step.source.hostname}",
                                      hint="find out why, then run the same command again")
            self.record(step, "verify")
        if "retire" in todo:
            self._sub(step, "retire")
            port = self.new.services[GATEWAY].port
            self.say(step, f"clients switch to http://{step.target.ip}:{port}: PM2 stopped and pm2-psa "
                           f"disabled on {step.source.hostname}")
            src = self.conn(step.source)
            src.run(PM2 + "pm2 kill >/dev/null 2>&1 || true\n", user=APP_USER)
            src.run("systemctl disable --now pm2-psa 2>&1\n")
            self.record(step, "retire")
        self.record(step, "done", quiesce_s=0.0)


def pm2_only(action: str, app: str) -> str:
    """`pm2 <action>` of one app of the ecosystem (startOrRestart, reload, stop, delete), then saved."""
    name = shlex.quote(app)
    if action in ("startOrRestart", "startOrReload", "reload"):
        run = f"pm2 {action} {ECOSYSTEM_FILE} --only {name} --update-env >/dev/null"
    else:
        run = f"pm2 {action} {name} >/dev/null 2>&1 || true"
    return PM2 + run + "\npm2 save --force >/dev/null\n"


def pm2_online(conn: Connection, app: str) -> int:
    """How many instances of the PM2 app are online on the container."""
    out = conn.run(PM2 + pm2.online(app) + "\n", user=APP_USER).stdout.split()
    return int(out[-1]) if out and out[-1].isdigit() else 0


def service_problem(conn: Connection, phase: Phase, spec: ContainerSpec, service: str,
                    timeout: float = SERVICE_TIMEOUT) -> str | None:
    """None once `service` on `spec` is online in PM2 and its /health answers 200; else what is wrong
    (when PM2 shows no instance online three polls in a row, or /health never said 200 in `timeout` s)."""
    url = f"http://{probe_address(phase, spec, service)}:{phase.services[service].port}/health"
    script = (PM2 + pm2.online(service) + "\n" +
              f"echo health $(curl -s -o /dev/null -m 5 -w '%{{http_code}}' {shlex.quote(url)} || true)\n")
    deadline = time.monotonic() + timeout
    offline = 0  # polls in a row without an online instance (one may be between two launches)
    while True:
        words = dict(line.split()[:2] for line in conn.run(script, user=APP_USER).stdout.splitlines()
                     if len(line.split()) >= 2)
        offline = offline + 1 if words.get("online", "0") == "0" else 0
        if offline >= OFFLINE_POLLS:
            return f"{service} is not online in PM2 on {spec.hostname}"
        if words.get("health") == "200":
            return None
        if time.monotonic() >= deadline:
            return f"{url} answered {words.get('health', 'nothing')} for {timeout:.0f} s"
        time.sleep(2.0)

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

