"""pgBackRest's configuration: both sides rendered from the phase, archiving only with a repository host."""

from __future__ import annotations

import dataclasses

from psa_provision import inventory, phases
from psa_provision.changes import PutFile
from psa_provision.facts import GuestFacts
from psa_provision.packaged import PHASES_DIR, SANDBOX_INVENTORY
from psa_provision.secrets import Secrets, generate
from psa_provision.sensitive import Sensitive
from psa_provision.services import pgbackrest
from psa_provision.services.context import HostContext
from psa_provision.services.pgbackrest import component
from psa_provision.services.pgbackrest.keys import BackupKeys, KeyPair
from psa_provision.services.postgresql import component as postgresql

KEYS = BackupKeys(KeyPair(Sensitive("DB-PRIVATE\n", ["DB-PRIVATE"]), "ssh-ed25519 DBPUB db"),
                  KeyPair(Sensitive("REPO-PRIVATE\n", ["REPO-PRIVATE"]), "ssh-ed25519 REPOPUB repo"))


def ctx(phase_name: str, vmid: int, keys: BackupKeys | None = KEYS) -> HostContext:
    inv = inventory.load_inventory(SANDBOX_INVENTORY)
    phase = phases.load_phase(phase_name, PHASES_DIR)
    return HostContext(inv, phase, phase.container(vmid), Secrets(generate()), backup_keys=keys)


def conf_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_database_side_names_the_repository_host_and_archives_every_minute() -> None:
    c = ctx("phase0", 200)
    changes = component.plan(c, GuestFacts())
    files = {ch.path: ch.content.reveal() for ch in changes if isinstance(ch, PutFile)}
    assert "repo1-host=10.0.30.60" in conf_lines(files[pgbackrest.CONF])
    assert "[psa]" in files[pgbackrest.CONF] and f"pg1-path={pgbackrest.PG_DATA}" in files[pgbackrest.CONF]
    assert files[pgbackrest.DB_AUTHORIZED].startswith('from="10.0.30.60/32",')
    assert files[pgbackrest.DB_AUTHORIZED].rstrip().endswith("ssh-ed25519 REPOPUB repo")
    conf = conf_lines(postgresql.conf_content(c))
    assert "archive_mode = on" in conf and "archive_timeout = 60" in conf
    push = "pgbackrest --stanza=psa archive-push %p"
    # a restored copy (another hostname) never pushes into production's stanza
    assert f"archive_command = 'test \"$(hostname)\" = psa-all-in-one && {push}'" in conf


def test_repository_host_lists_every_database_and_keeps_two_weekly_fulls() -> None:
    c = ctx("phase1", 250)
    changes = component.repository(c, GuestFacts(), "backup")
    files = {ch.path: ch.content.reveal() for ch in changes if isinstance(ch, PutFile)}
    conf = conf_lines(files[pgbackrest.CONF])
    assert "pg1-host=10.0.30.10" in conf and "repo1-retention-full=2" in conf
    assert "pg1-host-user=postgres" in conf and "repo1-path=/var/lib/pgbackrest" in conf
    assert files["/etc/systemd/system/psa-pgbackrest-full.timer"].count("OnCalendar=Sun ") == 1
    assert "--type=diff backup" in files["/etc/systemd/system/psa-pgbackrest-diff.service"]
    # the repository accepts the database key from the phase's networks only
    assert files[pgbackrest.REPO_AUTHORIZED].startswith('from="10.0.20.0/24,10.0.30.0/24",')


def test_private_keys_never_show_in_a_diff_or_summary() -> None:
    for phase_name, vmid, planner in (("phase0", 200, component.plan),
                                      ("phase0", 250, lambda c, f: component.repository(c, f, "backup"))):
        for ch in planner(ctx(phase_name, vmid), GuestFacts()):
            shown = f"{ch.summary} {getattr(ch, 'diff', '')} {ch!r}"
            assert "PRIVATE" not in shown, shown


def test_without_a_repository_host_nothing_is_archived() -> None:
    c = ctx("phase0", 200)
    alone = dataclasses.replace(c, phase=c.phase.model_copy(
        update={"containers": [s for s in c.phase.containers if s.vmid != 250]}))
    assert component.archive_settings(alone) is None
    assert "archive_mode" not in postgresql.conf_content(alone)
    assert component.plan(alone, GuestFacts()) == []


def test_a_phase_archiving_without_backup_container_is_refused(tmp_path: object) -> None:
    from pathlib import Path

    d = Path(str(tmp_path))
    text = (PHASES_DIR / "phase0.yml").read_text()
    start = text.index("  # The backup repository host")
    end = text.index("# PM2 cluster mode")
    (d / "phase0.yml").write_text(text[:start] + text[end:])
    problems = [str(p) for p in phases.check_all(d)]
    assert any("archives PostgreSQL (pgbackrest) but no container of this phase has the backup component" in p
               for p in problems), problems
