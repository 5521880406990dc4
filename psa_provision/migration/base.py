"""What every migration step uses: the run's connections, journal, sub-step announcements and grants."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from psa_provision import firewall
from psa_provision.journal import write_migration_grants
from psa_provision.migration import handover
from psa_provision.migration.record import journal_for
from psa_provision.migration.steps import STORES, Step, phases_of, plan_steps
from psa_provision.output import Output
from psa_provision.phases import ContainerSpec
from psa_provision.proxmox import ProxmoxClient, connect
from psa_provision.seams import kill_point
from psa_provision.services.app import ECOSYSTEM_FILE, pm2
from psa_provision.services.context import build_context
from psa_provision.services.postgresql import HBA as PG_HBA
from psa_provision.services.postgresql import component as pg_component
from psa_provision.site import Site, ssh_connection
from psa_provision.ssh import Connection

PM2 = pm2.ENV
PM2_STOP = PM2 + "pm2 stop all >/dev/null 2>&1 || true\n"
PM2_START = PM2 + f"pm2 startOrRestart {ECOSYSTEM_FILE} --update-env >/dev/null\npm2 save >/dev/null\n"


class MigrationBase:
    """One run of `migrate <phase>`: connections, the journal, and the helpers every step uses."""

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
        """The container's status (running, stopped), None when it does not exist. Asked where it is
        now: the HA manager may have moved a phase-3 member off its phase file's node."""
        node = self.px.find_vmid(spec.vmid)
        if node is None:
            return None
        return str(self.px.status(node, spec.vmid).get("status"))

    @property
    def app_step(self) -> Step:
        return next(s for s in self.steps if s.name == "app")

    def _sub(self, step: Step, sub: str) -> None:
        """Announce a sub-step (and the kill point test seam: `migrate <step>: <sub-step>`)."""
        kill_point(f"migrate {step.name}: {sub}")
        self.out.note(f"[{step.name}] {sub}")

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
        ctx = build_context(self.site.inventory, self.new, target, self.site.secrets, bundle_dir=None)
        conn = self.conn(target)
        conn.put(PG_HBA, pg_component.hba_content(ctx), mode=0o640, owner="postgres",
                 group="postgres")
        conn.run("systemctl reload postgresql\n")

    # -- phase 1 -> 2: stateless services change container, the stores stay (handover) -------------
    def _note(self, step: Step) -> Callable[[str], None]:
        return lambda text: self.out.note(f"[{step.name}] {text}")
