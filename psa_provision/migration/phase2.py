"""Phase 1 -> 2: stateless services change container while the stores stay (takeover, per service, release).

Per service: start on the new container, verify there, route the old gateway to it, retire the old
copy; the gateway's own step is where clients switch.
"""

from __future__ import annotations

import shlex
import time

from psa_provision.journal import write_migration_grants
from psa_provision.migration import handover
from psa_provision.migration.base import PM2, MigrationBase
from psa_provision.migration.steps import GATEWAY, OFFLINE_POLLS, SERVICE_TIMEOUT, MigrationFailed, Step
from psa_provision.phases import ContainerSpec, Phase
from psa_provision.seams import sabotage_service
from psa_provision.services.app import APP_USER, ECOSYSTEM_FILE, ENV_FILE, pm2
from psa_provision.services.app.component import probe_address
from psa_provision.ssh import Connection


class ServiceSteps(MigrationBase):
    """The steps of a service handover (phase 1 -> 2): takeover, one per service, release."""

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
