"""Backups in phase 0 (issue 14): the backup container 250 holds pgBackRest's repository and the sets.

Tickets written through the gateway, `backup phase0`, then: pgBackRest lists the backup and WAL keeps
being archived (a segment switched after the backup arrives in the repository), the set's manifest
matches its files byte for byte, and `backups list` shows the set complete. Restore: tickets written
before a time T are all in a restore to T into new containers and none written after, and the app there
answers; a vzdump of 200 restored into a new vmid boots healthy (`beyond_ci`: the phase-0 drill restores
200's vzdump into a new vmid as well); `restore --drill` passes in phase 0,
then in phase 1, then in phase 3 (Patroni), where archiving goes on from the new leader after a
failover. New containers: 700 (restore --at), 720 (--into), 800 (the drill); each is removed by its
test.

The packaged phases leave the backup container out (opt-in); this module's own `phase0` fixture
provisions phase 0 with it (the lines of data/phases/examples/backup-container.yml added), so it runs
in a session of its own (pyproject's `-m` leaves it out of the main one; scripts/test runs it after,
`pytest -m backup tests/e2e/test_backup_restore.py`): it destroys and recreates container 200 under
a project of its own.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest

from psa_provision import sandbox
from psa_provision.inventory import load_inventory
from psa_provision.packaged import PHASES_DIR
from psa_provision.phases import ContainerSpec, load_phase
from psa_provision.services import patroni, pgbackrest
from psa_provision.services.backup import SETS_DIR
from psa_provision.services.backup.manifest import Manifest, parse_sums, problems
from psa_provision.services.haproxy.config import front_address
from psa_provision.services.patroni.health import Member, leader, parse_list
from psa_provision.ssh import Connection
from psa_provision.testing.loadgen import request

from .conftest import (
    VMID,
    Site,
    admin_api,
    clear_vmids,
    make_passwords_hostile,
    q,
    run_cli,
    sandbox_credentials,
    wait_healthy,
    write_inventory,
)

pytestmark = [pytest.mark.sandbox, pytest.mark.backup]

RESTORED = 700  # restore's default: 200 + 500
INTO = 720
DRILL = 800  # the drill's: 200 + 600

PGBACKREST = f"runuser -u {pgbackrest.REPO_USER} -- pgbackrest --stanza={pgbackrest.STANZA}"


@pytest.fixture(scope="module")
def phase0(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """This module's phase 0 (overrides conftest's): the packaged phase files with the backup container
    added (sandbox.with_backup_container), `init`, `destroy phase0 --yes` (200 and 250), cold `up`."""
    shared = {"phase0", "guest", "reset_phase0", "converged_snapshot"}
    others = [i.nodeid for i in request.session.items if i.get_closest_marker("backup") is None
              and shared & set(getattr(i, "fixturenames", ()))]
    if others:
        pytest.fail(f"the backup tests recreate container 200 under a project of their own, which the "
                    f"other phase-0 tests of this run ({others[0]}, ...) also use: run them alone, "
                    "`pytest -m backup`")
    if VMID != sandbox.PHASE0_VMID:
        pytest.fail(f"PSA_E2E_VMID={VMID}: private phase-0 copies leave the backup container 250 out (copies "
                    "side by side would share it); run the backup tests on container 200")
    workdir = tmp_path_factory.mktemp("e2e-backup")
    phases_dir = workdir / "phases"
    phases_dir.mkdir()
    for src in PHASES_DIR.glob("phase*.yml"):
        text = src.read_text()
        opted_in = sandbox.with_backup_container(text) if src.stem in ("phase0", "phase1", "phase3") else text
        (phases_dir / src.name).write_text(opted_in)
    inventory = write_inventory(workdir, sandbox_credentials())
    inventory.write_text(re.sub(r"(?m)^phases_dir: .*$", f"phases_dir: {phases_dir}", inventory.read_text()))
    for args in (("init",), ("destroy", "phase0", "--yes")):
        run = run_cli(inventory, *args, timeout=600)
        assert run.code == 0, f"{' '.join(args)} failed:\n{run.output}"
    make_passwords_hostile(workdir / "sandbox.secrets.yml")
    first = run_cli(inventory, "up", "phase0", "--yes")
    sys.stderr.write(f"\n[e2e] cold `up phase0` with the backup container: exit {first.code} in "
                     f"{first.seconds:.0f} s\n")
    assert first.code == 0, f"cold up failed:\n{first.output[-6000:]}"
    inv = load_inventory(inventory)
    phase = load_phase("phase0", inv.phases_dir)
    assert [c.vmid for c in phase.containers] == [sandbox.PHASE0_VMID, sandbox.BACKUP_VMID]
    yield Site(inventory, inv, phase, phase.container(VMID), first, cold=True)


def repo_conn(site: Site) -> Connection:
    spec = next((c for c in site.phase.containers if "backup" in c.components), None)
    if spec is None:
        pytest.fail("phase 0 has no backup container: the module's phase0 fixture adds it")
    inv = site.inventory
    return Connection(spec.ip, inv.ssh.user, inv.ssh.key_file, inv.ssh.jump_host)


def write_tickets(site: Site, n: int, base: str | None = None) -> list[int]:
    base = base or f"http://{site.container.ip}:3000"
    status, body = request("POST", f"{base}/api/auth/login", {"email": site.secret("app.admin_email"),
                                                               "password": site.secret("app.admin_password")})
    assert status == 200, body
    ids = []
    token = made_token(body)
    for i in range(n):
        status, made = request("POST", f"{base}/api/tickets", {"title": f"backup {i}", "body": "e2e"}, token)
        assert status == 201, made
        ids.append(int(made["id"]))
    return ids


def made_token(body: object) -> str:
    assert isinstance(body, dict)
    return str(body["token"])


def test_backup_phase0_lands_in_the_repository_with_a_matching_manifest(phase0: Site) -> None:
    write_tickets(phase0, 5)
    run = phase0.cli("backup", "phase0", timeout=1800)
    assert run.code == 0, run.output[-4000:]
    set_id = next(line.split()[1] for line in run.stdout.splitlines() if line.startswith("backup ")
                  and line.rstrip().endswith(" s") and "complete" in line)
    repo = repo_conn(phase0)
    try:
        info = json.loads(repo.run(f"{PGBACKREST} info --output=json").stdout)
        assert info[0]["status"]["message"] == "ok" and info[0]["backup"], info
        # archiving continues after the backup: a segment switched now reaches the repository
        db = phase0.ssh()
        psql = "cd / && runuser -u postgres -- psql -XAtq -c "
        segment = db.run(psql + "'SELECT pg_walfile_name(pg_switch_wal())'").stdout.strip()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            archived = db.run(psql + "'SELECT last_archived_wal FROM pg_stat_archiver'").stdout.strip()  # noqa: S608
            if archived >= segment:
                break
            time.sleep(2)
        assert archived >= segment, f"WAL {segment} not archived in 120 s (last archived: {archived})"
        set_dir = f"{SETS_DIR}/{set_id}"
        manifest = Manifest.from_json(repo.run(f"cat {q(set_dir + '/manifest.json')}").stdout, set_dir)
        assert {a.store for a in manifest.artifacts} == {"redis", "rabbitmq", "elasticsearch", "app"}
        assert manifest.postgresql["label"] in {b["label"] for b in info[0]["backup"]}
        sums = repo.run(f"cd {q(set_dir)} && for f in */*; do printf '%s %s %s\\n' \"$(stat -c %s \"$f\")\" "
                        "\"$(sha256sum < \"$f\" | cut -d' ' -f1)\" \"$f\"; done").stdout
        assert problems(manifest, parse_sums(sums)) == []
        rabbit = next(a for a in manifest.artifacts if a.store == "rabbitmq")
        assert rabbit.detail.get("items") is not None  # each queue's depth recorded with the definitions
        [es] = [a for a in manifest.artifacts if a.store == "elasticsearch"]  # one node: one part
        assert es.path == "elasticsearch/repository.tar" and es.detail["indices"], es  # the app's indices
    finally:
        repo.close()
    listed = phase0.cli("backups", "list", "phase0", timeout=300)
    assert listed.code == 0 and set_id in listed.stdout and "complete" in listed.stdout, listed.output


def remove_container(vmid: int) -> None:
    px = admin_api()
    node = px.find_vmid(vmid)
    if node is None:
        return
    if px.status(node, vmid).get("status") == "running":
        px.stop(node, vmid)
    px.delete(node, vmid)


def archived_now(site: Site) -> None:
    """Switch WAL on production and wait until that segment is in the repository."""
    db = site.ssh()
    try:
        db.run(f"cd / && runuser -u postgres -- pgbackrest --stanza={pgbackrest.STANZA} check", timeout=600)
    finally:
        db.close()


def restored_ticket_ids(ip: str, site: Site) -> set[int]:
    inv = site.inventory
    conn = Connection(ip, inv.ssh.user, inv.ssh.key_file, inv.ssh.jump_host)
    try:
        out = conn.run("cd /tmp && runuser -u postgres -- psql -XAtq -d psa_platform "
                       "-c 'SELECT id FROM tickets'").stdout
    finally:
        conn.close()
    return {int(line) for line in out.split()}


def test_restore_to_a_time_brings_back_every_ticket_before_it_and_none_after(phase0: Site) -> None:
    """Issue 14's test: write, backup, write, note T, write, restore to T into new containers."""
    first = write_tickets(phase0, 3)
    run = phase0.cli("backup", "phase0", "--containers", timeout=3600)
    assert run.code == 0, run.output[-4000:]
    before = write_tickets(phase0, 3)
    time.sleep(2)
    at = datetime.now(UTC)
    time.sleep(2)
    after = write_tickets(phase0, 3)
    archived_now(phase0)
    try:
        run = phase0.cli("restore", "phase0", "--at", at.isoformat(), "-o", "json", timeout=3600)
        assert run.code == 0, run.output[-4000:]
        made = json.loads(run.stdout)["containers"]
        assert [int(c["vmid"]) for c in made] == [RESTORED], made
        ip = made[0]["address"]
        assert ip != phase0.container.ip
        ids = restored_ticket_ids(ip, phase0)
        assert set(first + before) <= ids, sorted(set(first + before) - ids)
        assert not set(after) & ids, sorted(set(after) & ids)
        wait_healthy(ip, 300)
        again = phase0.cli("restore", "phase0", "--at", at.isoformat(), timeout=600)
        assert again.code == 1 and f"{RESTORED} (on" in again.output, again.output  # occupied: refused
        assert "--force" in again.output, again.output
    finally:
        remove_container(RESTORED)


@pytest.mark.beyond_ci  # CI's time budget: the drill below restores 200's vzdump into a new vmid too
def test_a_vzdump_of_200_restores_into_a_new_vmid_and_boots_healthy(phase0: Site) -> None:
    px = admin_api()
    storage = phase0.inventory.storage.backups
    volumes = px.backup_volumes(phase0.container.node, storage, phase0.container.vmid)
    if not volumes:
        run = phase0.cli("backup", "phase0", "--containers", timeout=3600)
        assert run.code == 0, run.output[-4000:]
        volumes = px.backup_volumes(phase0.container.node, storage, phase0.container.vmid)
    volid = str(volumes[-1]["volid"])
    listed = phase0.cli("backups", "list", "phase0", timeout=300)
    assert listed.code == 0 and "vzdump" in listed.stdout and "container 200" in listed.stdout, listed.output
    try:
        run = phase0.cli("restore", "phase0", "--backup", volid, "--into", str(INTO), "-o", "json",
                         timeout=3600)
        assert run.code == 0, run.output[-4000:]
        made = json.loads(run.stdout)["containers"]
        assert int(made[0]["vmid"]) == INTO and made[0]["started from"] == volid, made
        wait_healthy(made[0]["address"], 300)
        inv = phase0.inventory
        conn = Connection(made[0]["address"], inv.ssh.user, inv.ssh.key_file, inv.ssh.jump_host)
        try:
            units = "postgresql@15-main redis-server rabbitmq-server elasticsearch pm2-psa"
            assert conn.run(f"systemctl is-active {units}", check=False).stdout.split() == ["active"] * 5
            assert conn.run("hostname").stdout.strip() == f"{phase0.container.hostname}-restored"
        finally:
            conn.close()
    finally:
        remove_container(INTO)


def test_restore_drill_in_phase0_passes_and_removes_its_containers(phase0: Site) -> None:
    write_tickets(phase0, 5)
    run = phase0.cli("backup", "phase0", "--containers", timeout=3600)
    assert run.code == 0, run.output[-4000:]
    listed = phase0.cli("backups", "list", "phase0", timeout=300)
    assert listed.code == 0 and "vzdump" in listed.stdout and "container 200" in listed.stdout, listed.output
    write_tickets(phase0, 5)  # after the backup: replayed from WAL up to the restore point
    try:
        run = phase0.cli("restore", "phase0", "--drill", "-o", "json", timeout=3600)
        assert run.code == 0, run.output[-4000:]
        report = json.loads(run.stdout)
        assert report["passed"] and report["differences"] == 0 and report["rpo_s"] == 0, report
        assert any(t["table"].endswith("tickets") for t in report["tables"]), report["tables"]
        assert report["rto_s"] > 0 and report["containers"] == [DRILL]
        assert admin_api().find_vmid(DRILL) is None  # removed
    finally:
        remove_container(DRILL)


@pytest.mark.beyond_ci  # a cold `up phase1` with its backup container: beyond CI's time budget
def test_backup_and_the_drill_in_phase1(phase0: Site) -> None:
    """Last: phase 0 (200 and 250) destroyed, phase 1 with the backup container up cold, tickets through
    its gateway, a backup with vzdumps, then the drill: the copies (their firewall rules rewritten for
    the copies' addresses) answer and their tables match production's at the restore point."""
    assert phase0.cli("destroy", "phase0", "--yes", timeout=900).code == 0
    try:
        up = phase0.cli("up", "phase1", "--yes")
        sys.stderr.write(f"\n[e2e] cold `up phase1` with the backup container: exit {up.code} in "
                         f"{up.seconds:.0f} s\n")
        assert up.code == 0, up.output[-6000:]
        phase1 = load_phase("phase1", phase0.inventory.phases_dir)
        gateway = next(c for c in phase1.containers if "api-gateway" in phase1.services_on(c.vmid))
        write_tickets(phase0, 5, base=f"http://{gateway.ip}:3000")
        run = phase0.cli("backup", "phase1", "--containers", timeout=3600)
        assert run.code == 0, run.output[-4000:]
        run = phase0.cli("restore", "phase1", "--drill", "-o", "json", timeout=3600)
        assert run.code == 0, run.output[-4000:]
        report = json.loads(run.stdout)
        assert report["passed"] and report["differences"] == 0, report
        assert any(t["table"].endswith("tickets") for t in report["tables"]), report["tables"]
        px = admin_api()
        assert all(px.find_vmid(v) is None for v in report["containers"]), report["containers"]
    finally:
        phase0.cli("destroy", "phase1", "--yes", timeout=900)


PSQL = "cd / && runuser -u postgres -- psql -XAtq -c "


def on(site: Site, spec: ContainerSpec) -> Connection:
    inv = site.inventory
    return Connection(spec.ip, inv.ssh.user, inv.ssh.key_file, inv.ssh.jump_host)


def cluster(site: Site, members: list[ContainerSpec]) -> list[Member]:
    """`patronictl list` as the first member that answers has it."""
    for spec in members:
        conn = on(site, spec)
        try:
            got = conn.run(f"patronictl -c {patroni.CONFIG} list -f json", check=False)
        finally:
            conn.close()
        if got.ok:
            return parse_list(got.stdout)
    pytest.fail("no Patroni member answered patronictl list")


def wait_for(site: Site, members: list[ContainerSpec], what: str, ok: Callable[[list[Member]], bool],
             deadline_s: float = 180.0) -> list[Member]:
    """Poll `patronictl list` until ok(listing) holds, or fail naming `what`."""
    deadline = time.monotonic() + deadline_s
    listing: list[Member] = []
    while time.monotonic() < deadline:
        listing = cluster(site, members)
        if ok(listing):
            return listing
        time.sleep(3)
    pytest.fail(f"{what} not within {deadline_s:.0f} s: {listing}")


def led_by(members: list[ContainerSpec], listing: list[Member]) -> ContainerSpec:
    head = leader(listing)
    found = next((s for s in members if head is not None and s.hostname == head.name), None)
    assert found is not None, listing
    return found


@pytest.mark.beyond_ci  # a cold `up phase3`: beyond CI's time budget
@pytest.mark.timeout(7200)  # cold `up phase3` (15-25 min on the 2-core sandbox), backups, a failover, a drill
def test_backup_a_failover_and_the_drill_in_phase3(phase0: Site) -> None:
    """Last: phase 3 (Patroni on 100-102) with the backup container, cold: first every container holding
    one of its vmids goes, 250 too (a new cluster has a new system identifier, which the repository of
    phase 0's cluster would refuse). Each member archives under its own hostname; tickets through the
    VIP; `backup phase3 --containers`. Then a failover (the leader's Patroni stopped: it shuts its server
    down and hands the leader key over): a WAL segment switched on the new leader reaches the
    repository (`pgbackrest check` there), and a backup taken then comes from the new leader. The old
    leader rejoins. Then `restore phase3 --drill`: the copies in phase 1's layout pass and are removed."""
    inv = phase0.inventory
    phase3 = load_phase("phase3", inv.phases_dir)
    members = [c for c in phase3.containers if c.cluster == "postgresql"]
    assert [c.vmid for c in phase3.with_component(pgbackrest.COMPONENT)] == [m.vmid for m in members]
    if any(c in phase0.secret("redis.password") for c in " '\""):  # the session's hostile passwords:
        rotated = phase0.cli("rotate-secrets", "redis", "--phase", "phase0", "--yes", timeout=900)
        assert rotated.code == 0, rotated.output[-4000:]  # Sentinel could not re-read its own file
    for name in ("phase0", "phase1"):  # what the earlier tests left (they destroy their own)
        phase0.cli("destroy", name, "--yes", timeout=900)
    clear_vmids(phase3)
    try:
        up = phase0.cli("up", "phase3", "--yes", timeout=3600)
        sys.stderr.write(f"\n[e2e] cold `up phase3` with the backup container: exit {up.code} in "
                         f"{up.seconds:.0f} s\n")
        assert up.code == 0, up.output[-8000:]
        for spec in members:  # every member would archive if it led, each under its own hostname
            conn = on(phase0, spec)
            try:
                mode = conn.run(PSQL + "'SHOW archive_mode'").stdout.strip()
                command = conn.run(PSQL + "'SHOW archive_command'").stdout.strip()
            finally:
                conn.close()
            assert mode == "on", f"{spec.hostname}: archive_mode {mode}"
            assert f'test "$(hostname)" = {spec.hostname} && ' in command, command
        base = f"http://{front_address(phase3)}:3000"
        write_tickets(phase0, 5, base=base)
        run = phase0.cli("backup", "phase3", "--containers", timeout=3600)
        assert run.code == 0, run.output[-4000:]

        old = led_by(members, wait_for(phase0, members, "a leader", lambda m: leader(m) is not None))
        conn = on(phase0, old)
        try:
            conn.run(f"systemctl stop {patroni.UNIT}")
        finally:
            conn.close()
        new = led_by(members, wait_for(phase0, members, "a new leader",
                                       lambda m: (h := leader(m)) is not None and h.name != old.hostname))
        sys.stderr.write(f"\n[e2e] failover: {old.hostname} -> {new.hostname}\n")
        wait_healthy(front_address(phase3))  # the apps reconnect to the new leader (the drill's window)
        write_tickets(phase0, 5, base=base)
        conn = on(phase0, new)
        try:  # archiving goes on from the new leader: check switches a segment and waits for it there
            conn.run(f"cd / && runuser -u postgres -- pgbackrest --stanza={pgbackrest.STANZA} check",
                     timeout=600)
            archived = conn.run(PSQL + "'SELECT archived_count FROM pg_stat_archiver'").stdout.strip()  # noqa: S608
        finally:
            conn.close()
        assert int(archived) > 0, f"{new.hostname} archived nothing"
        run = phase0.cli("backup", "phase3", timeout=3600)
        assert run.code == 0, run.output[-4000:]
        repo = repo_conn(phase0)
        try:
            info = json.loads(repo.run(f"{PGBACKREST} info --output=json").stdout)
        finally:
            repo.close()
        assert info[0]["status"]["message"] == "ok" and len(info[0]["backup"]) >= 2, info
        newest = repo.run(f"ls -1 {q(SETS_DIR)} | tail -1").stdout.strip()
        set_dir = f"{SETS_DIR}/{newest}"
        manifest = Manifest.from_json(repo.run(f"cat {q(set_dir + '/manifest.json')}").stdout, set_dir)
        parts = [a for a in manifest.artifacts if a.store == "elasticsearch"]
        es_members = [c.hostname for c in phase3.with_component("elasticsearch")]
        # each member's own path.repo holds its primaries' shards: every member's part is in the set
        wanted = sorted(f"elasticsearch/repository-{h}.tar" for h in es_members)
        assert sorted(a.path for a in parts) == wanted
        assert parts[0].detail["members"] == len(es_members) and parts[0].detail["indices"], parts[0].detail
        conn = on(phase0, old)
        try:
            conn.run(f"systemctl start {patroni.UNIT}")
        finally:
            conn.close()
        wait_for(phase0, members, "the old leader back as a replica",
                 lambda m: len([x for x in m if x.state in ("running", "streaming")]) == len(members),
                 deadline_s=300)

        run = phase0.cli("restore", "phase3", "--drill", "-o", "json", timeout=3600)
        assert run.code == 0, run.output[-4000:]
        assert f"from {len(es_members)} parts" in run.output, run.output[-4000:]  # its snapshot restored
        report = json.loads(run.stdout)
        assert report["passed"] and report["differences"] == 0 and report["rpo_s"] == 0, report
        assert any(t["table"].endswith("tickets") for t in report["tables"]), report["tables"]
        assert report["containers"] == [700, 710, 810, 820, 720], report["containers"]  # 100 110 210 220 120
        px = admin_api()
        assert all(px.find_vmid(v) is None for v in report["containers"]), report["containers"]
    finally:
        phase0.cli("destroy", "phase3", "--yes", timeout=1800)
