"""`psa-provision restore PHASE --drill`: prove the latest backup by restoring it beside production.

On production's database: every app table share-locked (writers wait, readers do not), a named restore
point made, the tables' row counts and checksums read as they are at that point (the PostgreSQL mover's
VERIFY_SQL), the lock released and the WAL switched; `pgbackrest check` waits until that WAL is in the
repository. Then the restore (commands/restore.py) into drill containers (vmid + 600) to that restore
point, the app started there; the restored tables are compared with the ones read at the point. RPO:
the newest acknowledged ticket present against the newest production had at the point; RTO: wall
time from the start until the restored app answers /health. The drill containers are removed at the end
(also when the drill fails), unless --keep. Under Patroni (phase 3) the restore point is made on the
leader (the only member that takes writes and archives), and the restore goes into phase 1's layout
of standalone copies (services/backup/standalone.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from psa_provision.errors import GuestError, InputError, ProvisionError
from psa_provision.phases import ContainerSpec
from psa_provision.proxmox import connect
from psa_provision.services import pgbackrest as pgb
from psa_provision.services.backup import restore as rs
from psa_provision.services.mover import compare, tab_lines
from psa_provision.services.patroni import CONFIG as PATRONI_CONFIG
from psa_provision.services.patroni import members as patroni_members
from psa_provision.services.patroni.health import leader as patroni_leader
from psa_provision.services.patroni.health import parse_list
from psa_provision.services.postgresql.mover import VERIFY_SQL
from psa_provision.site import Site, load_site, ssh_connection

from . import restore as restore_cmd
from .backup import repository

COLUMNS = ["check", "at the restore point", "restored", "result"]


@dataclass
class DrillReport:
    phase: str
    restore_point: str
    fault_at: str
    newest_at_fault: str | None
    newest_restored: str | None
    rpo_s: float | None
    rto_s: float
    tables: list[dict[str, str]] = field(default_factory=list)
    containers: list[int] = field(default_factory=list)

    @property
    def differences(self) -> int:
        return sum(1 for t in self.tables if t["point"] != t["restored"])

    @property
    def passed(self) -> bool:
        return self.differences == 0 and self.rpo_s is not None and bool(self.tables)

    def rows(self) -> list[list[str]]:
        out = [[f"table {t['table']}", t["point"], t["restored"], "ok" if t["point"] == t["restored"] else
                "DIFFERS"] for t in self.tables]
        out.append(["RPO (newest ticket present vs at the fault)", self.newest_at_fault or "none",
                    self.newest_restored or "none", "lost nothing" if self.rpo_s == 0 else
                    ("all lost" if self.rpo_s is None else f"{self.rpo_s:.1f} s lost")])
        out.append(["RTO (start until the restored app answers /health)", "-", f"{self.rto_s:.1f} s", "-"])
        out.append(["drill", "-", "-", "PASS" if self.passed else "FAIL"])
        return out

    def to_json(self) -> str:
        data = asdict(self)
        data.update(differences=self.differences, passed=self.passed)
        return json.dumps(data, indent=2, sort_keys=True)


def run(inventory_path: Path, phase: str, note: Callable[[str], None], *, keep: bool = False) -> DrillReport:
    site = load_site(inventory_path, phase)
    return drill(site, note, keep=keep)


def drill(site: Site, note: Callable[[str], None], *, keep: bool = False) -> DrillReport:
    t0 = time.monotonic()
    repository(site)  # refused first in a phase without a backup container
    db = database(site, note)
    now = datetime.now(UTC)
    point = rs.drill_point(now)
    conn = ssh_connection(site.inventory, db)
    try:
        note(f"postgresql on {db.hostname}: tables share-locked, restore point {point}, tables read")
        out = conn.run(f"{rs.psql()}\n", stdin=rs.restore_point_sql(point, VERIFY_SQL)).stdout
        note(f"postgresql on {db.hostname}: pgbackrest check (the restore point's WAL in the repository)")
        conn.run(f"cd / && runuser -u postgres -- pgbackrest --stanza={pgb.STANZA} check >&2\n", timeout=900)
    finally:
        conn.close()
    facts = {k: v for k, _, v in map(_three, out.splitlines()) if k}
    at_point = tab_lines(out, "table")
    px = connect(site.inventory)
    targets = restore_cmd.plan(site, px, kind="drill", into=None, force=False)
    try:
        restore_cmd.restore(site, px, at=None, backup=None, into=None, force=False, note=note, kind="drill",
                            point=point)
        rto = round(time.monotonic() - t0, 1)
        restored = rs.database_copy(targets)
        if restored is None:
            raise InputError(f"phase {site.phase.name}: the drill made no PostgreSQL copy to compare")
        rconn = ssh_connection(site.inventory, restored)
        try:
            after = rconn.run(f"{rs.psql()}\n", stdin=VERIFY_SQL + rs.NEWEST_SQL).stdout
        finally:
            rconn.close()
    except ProvisionError:  # a failed drill leaves nothing behind (unless --keep)
        if not keep:
            restore_cmd.remove(site, px, targets, note)
        raise
    newest_restored = rs.parse_time(tab_lines(after, "newest").get("tickets", "none"))
    newest_at_fault = rs.parse_time(facts.get("newest", "none"))
    checks = compare("", at_point, tab_lines(after, "table"))
    report = DrillReport(
        site.phase.name, point, facts.get("point", ""), _iso(newest_at_fault), _iso(newest_restored),
        rs.rpo_seconds(newest_at_fault, newest_restored), rto,
        [{"table": c.what.strip(), "point": c.source, "restored": c.target} for c in checks],
        [t.spec.vmid for t in targets])
    if not keep:
        restore_cmd.remove(site, px, targets, note)
    return report


def database(site: Site, note: Callable[[str], None]) -> ContainerSpec:
    """Where the restore point is made: the PostgreSQL container that archives; under Patroni the
    leader, as `patronictl list` names it on the first member that answers."""
    archiving = [c for c in site.phase.containers if "postgresql" in c.components
                 and pgb.COMPONENT in c.components]
    if not archiving:
        raise InputError(f"phase {site.phase.name} has no PostgreSQL container with pgBackRest to drill")
    members = [c for c in patroni_members(site.phase) if c in archiving]
    if not members:
        return archiving[0]
    answers = []
    for member in members:
        conn = ssh_connection(site.inventory, member)
        try:
            got = conn.run(f"patronictl -c {PATRONI_CONFIG} list -f json", check=False)
        except ProvisionError as exc:  # unreachable: the next member may answer
            answers.append(f"{member.hostname}: {exc.message}")
            continue
        finally:
            conn.close()
        if not got.ok:
            answers.append(f"{member.hostname}: patronictl list exited {got.exit_code}")
            continue
        return leader_spec(members, got.stdout, note)
    raise GuestError(f"no member of phase {site.phase.name}'s PostgreSQL cluster answered patronictl list: "
                     f"{'; '.join(answers)}", hint="psa-provision health " + site.phase.name)


def leader_spec(members: list[ContainerSpec], listing: str, note: Callable[[str], None]) -> ContainerSpec:
    """The member `patronictl list -f json` names leader; GuestError when none leads (a failover under
    way: the restore point needs a primary)."""
    try:
        head = patroni_leader(parse_list(listing))
    except ValueError as exc:
        raise GuestError(f"patronictl list answered no member list: {exc}") from None
    found = next((m for m in members if head is not None and m.hostname == head.name), None)
    if found is None:
        raise GuestError("no member of the PostgreSQL cluster leads now (a failover under way?): the "
                         "restore point needs the leader", hint="wait until `patronictl list` shows a "
                         "Leader, then drill again")
    note(f"postgresql: {found.hostname} leads the Patroni cluster")
    return found


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when else None


def _three(line: str) -> tuple[str, str, str]:
    """KIND<TAB>NAME<TAB>VALUE -> (KIND, NAME, VALUE); ('', '', '') for other lines. For `point` the
    value is the time (NAME is the LSN); for `newest` the ticket time."""
    parts = line.split("\t")
    if len(parts) != 3 or parts[0] not in ("point", "newest"):
        return "", "", ""
    return parts[0], parts[1], parts[2]
