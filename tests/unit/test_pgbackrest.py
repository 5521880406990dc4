"""pgBackRest's configuration: both sides rendered from the phase, archiving only with a repository host.

The packaged phases leave the backup container out (opt-in, README "Backup and restore"): these tests
plan copies of them with the lines of the packaged example added (sandbox.with_backup_container).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from psa_provision import inventory, phases, sandbox
from psa_provision.changes import PutFile
from psa_provision.commands import backup as backup_cmd
from psa_provision.errors import InputError
from psa_provision.facts import GuestFacts
from psa_provision.packaged import BACKUP_CONTAINER_EXAMPLE, PHASES_DIR, SANDBOX_INVENTORY
from psa_provision.secrets import Secrets, generate
from psa_provision.sensitive import Sensitive
from psa_provision.services import pgbackrest
from psa_provision.services.context import HostContext
from psa_provision.services.pgbackrest import component
from psa_provision.services.pgbackrest.keys import BackupKeys, KeyPair
from psa_provision.services.postgresql import component as postgresql
from psa_provision.site import Site

KEYS = BackupKeys(KeyPair(Sensitive("DB-PRIVATE\n", ["DB-PRIVATE"]), "ssh-ed25519 DBPUB db"),
                  KeyPair(Sensitive("REPO-PRIVATE\n", ["REPO-PRIVATE"]), "ssh-ed25519 REPOPUB repo"))


def opted_in(dest: Path) -> Path:
    """dest: the packaged phase files, each with the backup container added."""
    dest.mkdir(parents=True, exist_ok=True)
    for src in PHASES_DIR.glob("phase*.yml"):
        text = src.read_text()
        if src.stem in ("phase0", "phase1", "phase2", "phase3"):
            text = sandbox.with_backup_container(text)
        (dest / src.name).write_text(text)
    return dest


@pytest.fixture(scope="module")
def with_backup(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return opted_in(tmp_path_factory.mktemp("phases"))


def ctx(phases_dir: Path, phase_name: str, vmid: int, keys: BackupKeys | None = KEYS) -> HostContext:
    inv = inventory.load_inventory(SANDBOX_INVENTORY)
    phase = phases.load_phase(phase_name, phases_dir)
    return HostContext(inv, phase, phase.container(vmid), Secrets(generate()), backup_keys=keys)


def test_the_packaged_phases_have_no_backup_container_nor_archiving() -> None:
    for phase in phases.load_all(PHASES_DIR):
        assert not phase.with_component("backup"), phase.name
        assert not phase.with_component(pgbackrest.COMPONENT), phase.name
    c = ctx(PHASES_DIR, "phase0", 200)
    assert component.archive_settings(c) is None and "archive_mode" not in postgresql.conf_content(c)


def test_the_example_lines_make_phases_that_pass_the_check(with_backup: Path) -> None:
    assert phases.check_all(with_backup) == []
    p0 = phases.load_phase("phase0", with_backup)
    assert [c.vmid for c in p0.containers] == [200, 250] and set(p0.nodes) == {"pve1", "pve2"}
    assert p0.container(250).node == "pve2" and pgbackrest.COMPONENT in p0.container(200).components
    assert "vmid: 250" in BACKUP_CONTAINER_EXAMPLE.read_text()


def test_backup_in_a_phase_without_backup_container_names_the_file_and_the_lines() -> None:
    inv = inventory.load_inventory(SANDBOX_INVENTORY)
    site = Site(inv, SANDBOX_INVENTORY, phases.load_phase("phase0", PHASES_DIR), Secrets({}))
    with pytest.raises(InputError) as err:
        backup_cmd.repository(site)
    assert str(inv.phases_dir / "phase0.yml") in err.value.message
    assert "no backup container" in err.value.message
    assert str(BACKUP_CONTAINER_EXAMPLE) in (err.value.hint or "")


def conf_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_database_side_names_the_repository_host_and_archives_every_minute(with_backup: Path) -> None:
    c = ctx(with_backup, "phase0", 200)
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


def test_repository_host_lists_every_database_and_keeps_two_weekly_fulls(with_backup: Path) -> None:
    c = ctx(with_backup, "phase1", 250)
    changes = component.repository(c, GuestFacts(), "backup")
    files = {ch.path: ch.content.reveal() for ch in changes if isinstance(ch, PutFile)}
    conf = conf_lines(files[pgbackrest.CONF])
    assert "pg1-host=10.0.30.10" in conf and "repo1-retention-full=2" in conf
    assert "pg1-host-user=postgres" in conf and "repo1-path=/var/lib/pgbackrest" in conf
    assert files["/etc/systemd/system/psa-pgbackrest-full.timer"].count("OnCalendar=Sun ") == 1
    assert "--type=diff backup" in files["/etc/systemd/system/psa-pgbackrest-diff.service"]
    # the repository accepts the database key from the phase's networks only
    assert files[pgbackrest.REPO_AUTHORIZED].startswith('from="10.0.20.0/24,10.0.30.0/24",')


def test_private_keys_never_show_in_a_diff_or_summary(with_backup: Path) -> None:
    for phase_name, vmid, planner in (("phase0", 200, component.plan),
                                      ("phase0", 250, lambda c, f: component.repository(c, f, "backup"))):
        for ch in planner(ctx(with_backup, phase_name, vmid), GuestFacts()):
            shown = f"{ch.summary} {getattr(ch, 'diff', '')} {ch!r}"
            assert "PRIVATE" not in shown, shown


def test_without_a_repository_host_nothing_is_archived(with_backup: Path) -> None:
    c = ctx(with_backup, "phase0", 200)
    alone = dataclasses.replace(c, phase=c.phase.model_copy(
        update={"containers": [s for s in c.phase.containers if s.vmid != 250]}))
    assert component.archive_settings(alone) is None
    assert "archive_mode" not in postgresql.conf_content(alone)
    assert component.plan(alone, GuestFacts()) == []


def test_a_phase_archiving_without_backup_container_is_refused(with_backup: Path, tmp_path: Path) -> None:
    d = tmp_path
    text = (with_backup / "phase0.yml").read_text()
    start = text.index("  # The backup repository host")
    end = text.index("# PM2 cluster mode")
    (d / "phase0.yml").write_text(text[:start] + text[end:])
    problems = [str(p) for p in phases.check_all(d)]
    assert any("archives PostgreSQL (pgbackrest) but no container of this phase has the backup component" in p
               for p in problems), problems


def test_with_the_backup_container_the_database_and_repository_accept_each_others_ssh(
        with_backup: Path) -> None:
    from psa_provision import firewall

    p1 = phases.load_phase("phase1", with_backup)
    admin = [(22, "10.0.20.1"), (22, "10.0.30.1")]
    rows = {v: [(r.dport, r.source) for r in firewall.rules(p1, p1.container(v))] for v in (100, 250)}
    assert rows[100] == [*admin, (22, "10.0.30.60"), (5432, "10.0.20.230")]
    assert rows[250] == [*admin, (22, "10.0.30.10")]
    # phase 0 plus its backup container keeps phase 0's open bridge
    assert not firewall.enabled(phases.load_phase("phase0", with_backup))


# Phase 3: PostgreSQL under Patroni on 100-102 (psa-postgres-1..3, 10.0.30.10-12), the backup container
# 250 on pve2 (10.0.30.60).
MEMBERS = {100: ("psa-postgres-1", "10.0.30.10"), 101: ("psa-postgres-2", "10.0.30.11"),
           102: ("psa-postgres-3", "10.0.30.12")}


def patroni_parameters(phases_dir: Path, vmid: int, keys: BackupKeys | None = KEYS) -> dict[str, object]:
    import yaml

    from psa_provision.services.patroni import component as patroni

    doc = yaml.safe_load(patroni.config_content(ctx(phases_dir, "phase3", vmid, keys)))
    params: dict[str, object] = doc["postgresql"]["parameters"]
    return params


def test_phase3_with_the_backup_container_passes_the_check(with_backup: Path) -> None:
    # the anti-affinity and single-point-of-failure rules still hold with the repository host on pve2
    assert [str(p) for p in phases.check_all(with_backup)] == []
    p3 = phases.load_phase("phase3", with_backup)
    assert set(p3.nodes) == {"pve1", "pve2", "pve3"} and p3.container(250).node == "pve2"
    assert [c.vmid for c in p3.with_component(pgbackrest.COMPONENT)] == [100, 101, 102]
    assert p3.container(250).cluster is None  # no member of any cluster: no anti-affinity rule names it


def test_each_patroni_member_archives_under_its_own_hostname(with_backup: Path) -> None:
    push = "pgbackrest --stanza=psa archive-push %p"
    for vmid, (hostname, _) in MEMBERS.items():
        params = patroni_parameters(with_backup, vmid)
        # archive_mode "on" (a string: a bare on is YAML's true): only a primary archives, so whichever
        # member leads archives, the others start to when they are promoted
        assert params["archive_mode"] == "on" and params["archive_timeout"] == "60"
        assert params["archive_command"] == f'test "$(hostname)" = {hostname} && {push}'
    # the cluster-wide (DCS) settings stay as they were: archiving is each member's own setting
    import yaml

    from psa_provision.services.patroni import component as patroni

    doc = yaml.safe_load(patroni.config_content(ctx(with_backup, "phase3", 101)))
    assert "archive_mode" not in doc["bootstrap"]["dcs"]["postgresql"]["parameters"]
    assert doc["bootstrap"]["dcs"]["postgresql"]["parameters"]["wal_level"] == "replica"


def test_patroni_members_do_not_archive_without_the_backup_container(with_backup: Path) -> None:
    packaged = patroni_parameters(PHASES_DIR, 100)
    assert not {"archive_mode", "archive_command", "archive_timeout"} & set(packaged)
    assert packaged["random_page_cost"] == "1.1"  # the others as before
    assert "archive_mode" not in patroni_parameters(with_backup, 100, keys=None)


def test_phase3_repository_host_names_the_three_members(with_backup: Path) -> None:
    # pgBackRest 2.45 backs up from whichever of pg1..pg3 is the primary (db/helper.c dbGet: an
    # unreachable one is a warning, no primary an error), so backups follow the leader
    c = ctx(with_backup, "phase3", 250)
    changes = component.repository(c, GuestFacts(), "backup")
    files = {ch.path: ch.content.reveal() for ch in changes if isinstance(ch, PutFile)}
    conf = conf_lines(files[pgbackrest.CONF])
    section = conf[conf.index("[psa]") + 1:]
    want = [line for i, (_, ip) in enumerate(MEMBERS.values(), 1)
            for line in (f"pg{i}-host={ip}", f"pg{i}-host-user=postgres", f"pg{i}-path={pgbackrest.PG_DATA}",
                         f"pg{i}-port=5432")]
    assert section == want
    assert "backup-standby=y" not in conf  # backups from the primary
    ssh = files[pgbackrest.REPO_SSH_CONFIG]
    assert [line.split()[1] for line in ssh.splitlines() if line.startswith("Host ")] == [
        ip for _, ip in MEMBERS.values()]


def test_each_phase3_member_pushes_to_the_repository_host_and_accepts_it(with_backup: Path) -> None:
    for vmid in MEMBERS:
        changes = component.plan(ctx(with_backup, "phase3", vmid), GuestFacts())
        files = {ch.path: ch.content.reveal() for ch in changes if isinstance(ch, PutFile)}
        assert "repo1-host=10.0.30.60" in conf_lines(files[pgbackrest.CONF])
        assert files[pgbackrest.DB_AUTHORIZED].startswith('from="10.0.30.60/32",')


def test_phase3_members_and_the_repository_accept_each_others_ssh(with_backup: Path) -> None:
    from psa_provision import firewall

    p3 = phases.load_phase("phase3", with_backup)
    ssh = {v: {r.source for r in firewall.rules(p3, p3.container(v)) if r.dport == 22 and "pgbackrest" in
               r.comment} for v in (*MEMBERS, 250, 110)}
    for vmid in MEMBERS:
        assert ssh[vmid] == {"10.0.30.60"}, vmid
    assert ssh[250] == {ip for _, ip in MEMBERS.values()}  # archive-push from whichever member leads
    assert ssh[110] == set()  # a Redis member has nothing to do with pgBackRest
    # the repository host admits nothing else of theirs: only SSH
    assert {r.dport for r in firewall.rules(p3, p3.container(250))} == {22}
