"""Restore and the drill in phase 3: a Patroni cluster's backup restored into phase 1's layout of standalone
copies (one PostgreSQL, one Redis, one RabbitMQ, one Elasticsearch, one app copy running every service),
each copy's files as `up` renders them for that layout, none naming a production address; the member's
copy made a standalone PostgreSQL that never starts Patroni; the drill's restore point on the leader."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from psa_provision import firewall, inventory, phases, sandbox
from psa_provision.commands import backup as backup_cmd
from psa_provision.commands import restore as restore_cmd
from psa_provision.commands import restore_drill as drill_cmd
from psa_provision.errors import GuestError, InputError
from psa_provision.packaged import PHASES_DIR, SANDBOX_INVENTORY
from psa_provision.phases import Phase, load_all, load_phase
from psa_provision.secrets import Secrets, generate
from psa_provision.services import app, elasticsearch, patroni, postgresql, rabbitmq, redis
from psa_provision.services.backup import restore as rs
from psa_provision.services.backup import standalone
from psa_provision.site import Site

SECRETS = generate()
# phase 3's originals of the copies (the first member of each store, the gateway's container)
# (in phase-file order)
ORIGINALS = {100: "postgresql", 110: "redis", 210: "rabbitmq", 220: "elasticsearch", 120: "app"}


@pytest.fixture(scope="module")
def phases_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packaged phases, each with the opt-in backup container."""
    dest = tmp_path_factory.mktemp("phases")
    for src in PHASES_DIR.glob("phase*.yml"):
        (dest / src.name).write_text(sandbox.with_backup_container(src.read_text()))
    return dest


@pytest.fixture(scope="module")
def phase3(phases_dir: Path) -> Phase:
    return load_phase("phase3", phases_dir)


def site(phases_dir: Path, phase: Phase) -> Site:
    inv = inventory.load_inventory(SANDBOX_INVENTORY).model_copy(update={"phases_dir": phases_dir})
    return Site(inv, SANDBOX_INVENTORY, phase, Secrets(SECRETS))


def every_address(phases_dir: Path) -> list[str]:
    return [c.ip_cidr for p in load_all(phases_dir) for c in p.containers]


def drill_targets(phases_dir: Path, phase3: Phase) -> list[rs.Target]:
    return rs.derive(phase3, kind="drill", taken_addresses=every_address(phases_dir))


def test_a_phase3_restore_brings_back_one_copy_per_store_and_one_app_copy(phases_dir: Path,
                                                                          phase3: Phase) -> None:
    assert standalone.applies(phase3) and not standalone.applies(load_phase("phase1", phases_dir))
    assert [c.vmid for c in rs.restored(phase3)] == list(ORIGINALS)
    targets = drill_targets(phases_dir, phase3)
    assert [t.spec.vmid for t in targets] == [700, 710, 810, 820, 720]  # + DRILL_OFFSET, none of phase 3's
    assert [t.spec.vmid for t in rs.derive(phase3, taken_addresses=every_address(phases_dir))] == [
        600, 610, 710, 720, 620]
    used = {a.split("/")[0] for a in every_address(phases_dir)} | {"10.0.20.250"}
    new = [t.spec.ip for t in targets]
    assert len(set(new)) == len(new) and not set(new) & used
    for t in targets:
        assert t.spec.cluster is None and t.spec.vip is None and t.spec.hostname.endswith("-drill")
        assert t.spec.components == t.original.components
    gateway_copy = next(t.spec for t in targets if t.original.vmid == 120)
    assert gateway_copy.services == list(phase3.services)  # all eight, on the one app copy
    # phase 1 keeps its own layout: every container but the backup one, as they are
    assert [c.vmid for c in rs.restored(load_phase("phase1", phases_dir))] == [100, 110, 210, 220, 230]


def test_a_copy_never_takes_the_virtual_ip(phase3: Phase) -> None:
    # the gateway's copy would go 100 above 10.0.20.120; with .220-.249 taken the next free is past the VIP
    taken = [f"10.0.20.{i}" for i in range(220, 250)]
    gateway_copy = next(t.spec for t in rs.derive(phase3, taken_addresses=taken) if t.original.vmid == 120)
    assert gateway_copy.ip == "10.0.20.251"


def test_the_copies_form_a_phase1_layout_with_every_service_on_the_app_copy(phases_dir: Path,
                                                                            phase3: Phase) -> None:
    targets = drill_targets(phases_dir, phase3)
    copy = rs.restored_phase(phase3, targets)
    by = {t.original.vmid: t.spec for t in targets}
    assert [c.vmid for c in copy.containers] == [*(t.spec.vmid for t in targets), 250]
    assert not copy.high_availability and not [c for c in copy.containers if c.cluster]
    assert {(s.container, tuple(s.also_on)) for s in copy.services.values()} == {(by[120].vmid, ())}
    assert {n: s.instances for n, s in copy.services.items()} == {
        n: s.instances for n, s in phase3.services.items()}


def test_the_copies_firewalls_admit_each_other_and_no_production_address(phases_dir: Path,
                                                                          phase3: Phase) -> None:
    targets = drill_targets(phases_dir, phase3)
    copy = rs.restored_phase(phase3, targets)
    by = {t.original.vmid: t.spec for t in targets}
    for vmid, component in ORIGINALS.items():
        if component == "app":
            continue
        accepted = {(r.dport, r.source) for r in firewall.rules(copy, by[vmid])}
        assert (firewall.STORE_PORTS[component], by[120].ip) in accepted, component
    production = {c.ip for c in phase3.containers if "backup" not in c.components}
    for t in targets:
        assert not {r.source for r in firewall.rules(copy, t.spec)} & production, t.spec.hostname
    # no Patroni, etcd or load balancer ports between the copies
    assert not {r.dport for t in targets for r in firewall.rules(copy, t.spec)} & {8008, 2379, 5000, 5001}
    # pgBackRest on the database copy fetches from the repository host while it restores
    openings = restore_cmd.repository_openings(phase3, targets)
    assert [(r.dport, r.source) for r in openings] == [(22, by[100].ip)]


def files_of(phases_dir: Path, phase3: Phase) -> dict[int, dict[str, str]]:
    targets = drill_targets(phases_dir, phase3)
    copy = rs.restored_phase(phase3, targets)
    s = site(phases_dir, phase3)
    return {t.original.vmid: {f.path: f.content.reveal() for f in restore_cmd.copy_files(s, copy, t.spec)}
            for t in targets}


def test_each_copys_files_are_a_standalone_stores_and_name_no_production_address(phases_dir: Path,
                                                                                 phase3: Phase) -> None:
    files = files_of(phases_dir, phase3)
    by = {t.original.vmid: t.spec for t in drill_targets(phases_dir, phase3)}
    assert set(files[100]) == {postgresql.CONF, postgresql.HBA}
    assert set(files[110]) == {redis.CONF}
    assert set(files[210]) == {rabbitmq.CONF, rabbitmq.ENV_CONF, rabbitmq.INETRC, rabbitmq.EPMD_DROPIN}
    assert set(files[220]) == {elasticsearch.CONF}
    assert set(files[120]) == {app.ENV_FILE, app.ECOSYSTEM_FILE}
    production = {c.ip for c in phase3.containers if "backup" not in c.components} | {"10.0.20.250"}
    for vmid, texts in files.items():
        for path, text in texts.items():
            named = {ip for ip in production if re.search(rf"(?<![\d.]){re.escape(ip)}(?!\d)", text)}
            assert not named, f"{vmid} {path} names production's {named}"
    pg = files[100][postgresql.CONF]
    assert f"listen_addresses = '{by[100].ip},localhost'" in pg
    assert "archive_mode" not in pg  # the copy never archives into production's stanza
    hba = [line.split() for line in files[100][postgresql.HBA].splitlines()]
    assert ["host", "psa_platform", "psa_app", f"{by[120].ip}/32", "scram-sha-256"] in hba
    assert not re.search(r"(?m)^\s*(replicaof|sentinel)", files[110][redis.CONF])
    assert "cluster_formation" not in files[210][rabbitmq.CONF]
    assert f"rabbit@{by[210].hostname}" not in files[210][rabbitmq.CONF]  # a node of its own, not a peer
    assert yaml.safe_load(files[220][elasticsearch.CONF])["discovery.type"] == "single-node"
    env = dict(line.split("=", 1) for line in files[120][app.ENV_FILE].splitlines()
               if "=" in line and not line.startswith("#"))
    assert (env["POSTGRES_HOST"], env["POSTGRES_PORT"]) == (by[100].ip, "5432")  # no load balancer
    assert (env["REDIS_HOST"], env["RABBITMQ_HOST"], env["ELASTICSEARCH_HOST"]) == (
        by[110].ip, by[210].ip, by[220].ip)
    assert not {"REDIS_SENTINELS", "RABBITMQ_NODES", "RABBITMQ_QUEUE_TYPE", "ELASTICSEARCH_NODES"} & set(env)
    urls = {v for k, v in env.items() if k.endswith("_SERVICE_URL")}
    assert len(urls) == 7 and all(u.startswith("http://127.0.0.1:") for u in urls)
    for name in phase3.services:
        assert f"app('{name}'," in files[120][app.ECOSYSTEM_FILE]


def test_a_members_copy_is_made_standalone_before_its_files_and_restarted_after(phases_dir: Path,
                                                                               phase3: Phase) -> None:
    by = {t.original.vmid: t for t in drill_targets(phases_dir, phase3)}
    pg_before, pg_after = rs.standalone_scripts(by[100])
    assert pg_before.index(f"systemctl stop {app.UNIT}") < pg_before.index(f"systemctl mask {patroni.UNIT}")
    assert pg_before.index(f"systemctl mask {patroni.UNIT}") < pg_before.index(f"unmask {patroni.STOCK_UNIT}")
    assert pg_after.index("daemon-reload") < pg_after.index(f"systemctl restart {postgresql.UNIT}\n")
    assert "patronictl" not in pg_before + pg_after  # never a word to production's etcd
    redis_before, redis_after = rs.standalone_scripts(by[110])
    assert f"systemctl disable --now {redis.SENTINEL_UNIT}" in redis_before
    assert f"systemctl restart {redis.UNIT}\n" in redis_after
    es_before, es_after = rs.standalone_scripts(by[220])
    assert f"find {elasticsearch.DATA_DIR} -mindepth 1 -delete" in es_before
    assert f"systemctl restart {elasticsearch.UNIT}\n" in es_after
    rabbit_before, rabbit_after = rs.standalone_scripts(by[210])
    assert "NODENAME" not in rabbit_before + rabbit_after  # a new node, named after the copy
    assert rabbit_after.index("systemctl start epmd.socket") < rabbit_after.index(
        f"systemctl restart {rabbitmq.UNIT}\n")
    app_before, app_after = rs.standalone_scripts(by[120])
    assert f"systemctl stop {app.UNIT}" in app_before and app.UNIT not in app_after  # starts last


def fake_member(tmp_path: Path, *, base: bool) -> tuple[str, Path]:
    """patroni.standalone_copy() pointed at a member's files under tmp_path, systemctl logged."""
    conf, data = tmp_path / "etc", tmp_path / "data"
    conf.mkdir(exist_ok=True)
    data.mkdir(exist_ok=True)
    (conf / "postgresql.conf").write_text("# It will be overwritten by Patroni!\n"
                                          "include 'postgresql.base.conf'\nsynchronous_standby_names = "
                                          "'\"psa-postgres-2\"'\n")
    if base:
        (conf / "postgresql.base.conf").write_text("data_directory = '/var/lib/postgresql/15/main'\n"
                                                   "include_dir = 'conf.d'\n")
    (conf / "start.conf").write_text("manual\n")
    (data / "standby.signal").write_text("")
    script = (patroni.standalone_copy().replace(patroni.CONFIG_DIR, str(conf))
              .replace(patroni.DATA_DIR, str(data)))
    log = tmp_path / "systemctl.log"
    return f"systemctl() {{ echo \"$*\" >> {log}; }}\nset -euo pipefail\n{script}", log


def test_the_members_copy_runs_debians_config_without_patroni(tmp_path: Path) -> None:
    script, log = fake_member(tmp_path, base=True)
    subprocess.run(["bash", "-c", script], check=True)
    conf = (tmp_path / "etc" / "postgresql.conf").read_text()
    assert "include_dir = 'conf.d'" in conf and "synchronous_standby_names" not in conf
    assert not (tmp_path / "etc" / "postgresql.base.conf").exists()
    assert (tmp_path / "etc" / "start.conf").read_text() == "auto\n"
    assert not (tmp_path / "data" / "standby.signal").exists()
    assert log.read_text().splitlines() == [f"disable --now {patroni.UNIT}", f"mask {patroni.UNIT}",
                                            f"unmask {patroni.STOCK_UNIT}"]
    # no postgresql.base.conf: the copy is refused, not started on Patroni's file
    other = tmp_path / "other"
    other.mkdir()
    script, _ = fake_member(other, base=False)
    run = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
    assert run.returncode == 1 and "postgresql.base.conf is missing" in run.stderr
    assert (other / "etc" / "start.conf").read_text() == "manual\n"


def test_copies_go_where_their_originals_run_now(phases_dir: Path, phase3: Phase) -> None:
    targets = drill_targets(phases_dir, phase3)
    moved = rs.where_now(targets, [{"vmid": 100, "node": "pve3"}, {"vmid": 110, "node": "pve1"}])
    assert [t.spec.node for t in moved] == ["pve3", "pve1", "pve1", "pve1", "pve1"]
    assert [t.spec.node for t in targets] == ["pve1", "pve1", "pve1", "pve1", "pve1"]
    assert rs.database_copy(moved) == moved[0].spec


def test_backup_containers_dumps_the_containers_a_restore_starts_from(phases_dir: Path,
                                                                     phase3: Phase) -> None:
    assert [c.vmid for c in backup_cmd.dumped(phase3)] == list(ORIGINALS)
    phase1 = load_phase("phase1", phases_dir)
    assert backup_cmd.dumped(phase1) == phase1.containers  # as before: every container


def test_phase3_restores_from_a_set_not_a_lone_vzdump(phases_dir: Path, phase3: Phase) -> None:
    volid = "local:backup/vzdump-lxc-100-2026_12_03-10_15_00.tar.zst"
    with pytest.raises(InputError, match="--backup takes a set id here"):
        restore_cmd.restore(site(phases_dir, phase3), object(), at=None, backup=volid,  # type: ignore[arg-type]
                            into=None, force=False, note=lambda _: None)


def test_phase3_needs_a_set_with_rabbitmqs_definitions(phases_dir: Path, phase3: Phase) -> None:
    assert standalone.missing_from_set(phase3, None) == ["rabbitmq"]
    assert standalone.missing_from_set(phase3, {"postgresql", "redis"}) == ["rabbitmq"]
    assert standalone.missing_from_set(phase3, {"redis", "rabbitmq", "elasticsearch", "app"}) == []


def test_the_sets_quorum_queues_come_back_classic_as_the_app_copy_declares_them() -> None:
    from psa_provision.services.backup import put_back

    exported = {"users": [{"name": "psa_app", "password_hash": "h"}],
                "queues": [{"name": "billing.ticket-events", "vhost": "/", "durable": True,
                            "arguments": {"x-queue-type": "quorum", "x-delivery-limit": 20,
                                          "x-message-ttl": 60000}},
                           {"name": "reports.events", "vhost": "/", "durable": True, "arguments": {}}]}
    got = json.loads(put_back.classic_queues(json.dumps(exported)))
    assert [q["arguments"] for q in got["queues"]] == [{"x-message-ttl": 60000}, {}]
    assert got["users"] == exported["users"] and got["queues"][0]["durable"]
    script = put_back.rabbitmq_stdin()
    assert script.rstrip().endswith("rabbitmqctl -q import_definitions")  # JSON on stdin
    # the app copy's .env declares them classic: no RABBITMQ_QUEUE_TYPE=quorum there
    assert "x-queue-type" not in json.dumps(got)


def patronictl_list(leader: str | None) -> str:
    rows = [{"Cluster": "15-main", "Member": f"psa-postgres-{i}", "Host": f"10.0.30.1{i - 1}",
             "Role": "Leader" if f"psa-postgres-{i}" == leader else "Replica", "State": "running",
             "TL": 3} for i in (1, 2, 3)]
    return json.dumps(rows)


def test_the_drill_marks_its_restore_point_on_the_leader(phase3: Phase) -> None:
    members = [c for c in phase3.containers if c.cluster == "postgresql"]
    found = drill_cmd.leader_spec(members, patronictl_list("psa-postgres-2"), lambda _: None)
    assert found.vmid == 101  # after a failover: not the phase file's first member
    with pytest.raises(GuestError, match="no member of the PostgreSQL cluster leads now"):
        drill_cmd.leader_spec(members, patronictl_list(None), lambda _: None)
    with pytest.raises(GuestError, match="no member list"):
        drill_cmd.leader_spec(members, "not json", lambda _: None)


def test_a_backup_during_the_migration_into_phase3_is_refused(phases_dir: Path, tmp_path: Path) -> None:
    from psa_provision.migration.record import journal_for

    inv_path = tmp_path / "site.yml"
    inv_path.write_text(SANDBOX_INVENTORY.read_text().replace("phases_dir: ../phases",
                                                              f"phases_dir: {phases_dir}"))
    def site_of(name: str) -> Site:
        return Site(inventory.load_inventory(inv_path), inv_path, load_phase(name, phases_dir), Secrets({}))

    assert backup_cmd.migration_in_progress(site_of("phase3")) is None
    journal_for(inv_path, "phase3").record("migrate", step="prepare", state="done")
    for name in ("phase3", "phase2"):  # into phase 3, or out of phase 2 into it
        with pytest.raises(InputError, match=f"refusing `backup {name}`: the migration into phase3"):
            backup_cmd.backup(site_of(name), backup_cmd.STORES, lambda _: None)
    journal_for(inv_path, "phase3").record("migrate", step="finish", state="done")
    assert backup_cmd.migration_in_progress(site_of("phase3")) is None


def test_the_packaged_phase3_checks_clean_with_the_backup_container(phases_dir: Path) -> None:
    assert [str(p) for p in phases.check_all(phases_dir)] == []
