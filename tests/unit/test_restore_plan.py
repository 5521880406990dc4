"""restore's pure parts: the new containers beside production, the vzdump each starts from, the address
rewrite (Python and the sed the guest runs agree; on phase 1 it yields what `up` renders for the copy),
the copies' firewalls, the copy's services restarted and its app started from its .env, pgBackRest's
restore command, the drill's SQL and RPO, the typed Proxmox writes and the role's privileges for backup
and restore."""

from __future__ import annotations

import re
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from psa_provision import firewall, inventory, planner, privileges
from psa_provision.changes import PutFile
from psa_provision.commands import restore as restore_cmd
from psa_provision.commands import restore_drill as drill_cmd
from psa_provision.errors import InputError
from psa_provision.facts import GuestFacts
from psa_provision.packaged import APP_BUNDLE, PHASES_DIR, SANDBOX_INVENTORY
from psa_provision.phases import ContainerSpec, Phase, load_all, load_phase
from psa_provision.proxmox import Write, write_effect
from psa_provision.secrets import Secrets, generate
from psa_provision.sensitive import Sensitive
from psa_provision.services import app, catalog, elasticsearch, postgresql, rabbitmq, redis
from psa_provision.services.app import pm2
from psa_provision.services.backup import put_back
from psa_provision.services.backup import restore as rs
from psa_provision.services.context import Bundle, HostContext
from psa_provision.services.pgbackrest.keys import BackupKeys, KeyPair
from psa_provision.services.postgresql.mover import VERIFY_SQL

T0 = datetime(2026, 12, 3, 10, 15, tzinfo=UTC)
SECRETS = generate()


def every_address() -> list[str]:
    return [c.ip_cidr for p in load_all(PHASES_DIR) for c in p.containers]


def test_a_restore_of_phase0_makes_new_containers_beside_production() -> None:
    targets = rs.derive(load_phase("phase0", PHASES_DIR), taken_addresses=every_address())
    assert [(t.original.vmid, t.spec.vmid) for t in targets] == [(200, 700)]  # the backup container stays
    new = targets[0].spec
    assert new.hostname == "psa-all-in-one-restored" and new.ip == "10.0.20.200" and not new.onboot
    assert new.node == "pve1" and new.components == targets[0].original.components
    drill = rs.derive(load_phase("phase0", PHASES_DIR), kind="drill", taken_addresses=every_address())
    assert drill[0].spec.vmid == 800 and drill[0].spec.hostname.endswith("-drill")


def test_addresses_skip_what_any_phase_uses_and_into_keeps_the_distances() -> None:
    phase1 = load_phase("phase1", PHASES_DIR)
    taken = every_address()
    targets = rs.derive(phase1, into=900, taken_addresses=taken)
    first = rs.restored(phase1)[0].vmid
    assert [t.spec.vmid - 900 for t in targets] == [t.original.vmid - first for t in targets]
    used = {a.split("/")[0] for a in taken}
    new = [t.spec.ip for t in targets]
    assert len(set(new)) == len(new) and not set(new) & used
    assert all(t.spec.ip.rsplit(".", 1)[0] == t.original.ip.rsplit(".", 1)[0] for t in targets)


def test_a_full_network_is_a_clear_error() -> None:
    phase0 = load_phase("phase0", PHASES_DIR)
    taken = [f"10.0.20.{i}" for i in range(1, 255)]
    with pytest.raises(InputError,
                       match=r"no free address in 10\.0\.20\.0/24 for the restored psa-all-in-one"):
        rs.derive(phase0, taken_addresses=taken)


def test_addresses_of_running_guests_are_read_from_net0() -> None:
    config = {"net0": "name=eth0,bridge=vmbr20,hwaddr=BC:24:11:00:00:01,ip=10.0.20.200/24,gw=10.0.20.1",
              "net1": "name=eth1,bridge=vmbr30,ip=dhcp", "hostname": "x"}
    assert rs.net_addresses(config) == ["10.0.20.200/24"]
    targets = rs.derive(load_phase("phase0", PHASES_DIR), taken_addresses=rs.net_addresses(config))
    assert targets[0].spec.ip == "10.0.20.201"


def test_an_occupied_vmid_is_named() -> None:
    targets = rs.derive(load_phase("phase0", PHASES_DIR))
    guests = [{"vmid": 700, "node": "pve2"}, {"vmid": 200, "node": "pve1"}]
    assert rs.occupied(targets, guests) == [(700, "pve2")]
    assert rs.occupied(targets, [{"vmid": 200, "node": "pve1"}]) == []


def test_the_address_rewrite_touches_whole_addresses_only_and_the_guest_sed_agrees() -> None:
    mapping = {"10.0.30.10": "10.0.30.110", "10.0.20.100": "10.0.20.200"}
    text = ("POSTGRES_HOST=10.0.30.10\nOTHER=10.0.30.100\nREDIS=10.0.30.10:6379\n"
            "host all all 10.0.20.100/32 scram\nbind 10.0.30.10 127.0.0.1\n")
    want = ("POSTGRES_HOST=10.0.30.110\nOTHER=10.0.30.100\nREDIS=10.0.30.110:6379\n"
            "host all all 10.0.20.200/32 scram\nbind 10.0.30.110 127.0.0.1\n")
    assert rs.rewrite_addresses(text, mapping) == want
    args = [a for old, new in sorted(mapping.items()) for a in ("-e", rs.sed_expression(old, new))]
    sed = subprocess.run(["sed", "-E", *args], input=text, capture_output=True, text=True, check=True)
    assert sed.stdout == want
    assert "sed -E -i" in rs.rewrite_script(["/opt/psa-platform/.env"], mapping)


def volumes() -> list[dict[str, object]]:
    return [{"volid": f"local:backup/vzdump-lxc-200-{i}.tar.zst", "vmid": 200,
             "ctime": int((T0 + timedelta(hours=i)).timestamp())} for i in range(3)] + [
        {"volid": "local:backup/vzdump-lxc-250-x.tar.zst", "vmid": 250, "ctime": int(T0.timestamp())}]


def test_the_vzdump_a_container_starts_from() -> None:
    assert rs.choose_volume(volumes(), 200, None)["volid"] == "local:backup/vzdump-lxc-200-2.tar.zst"
    at = T0 + timedelta(hours=1, minutes=30)
    assert rs.choose_volume(volumes(), 200, at)["volid"] == "local:backup/vzdump-lxc-200-1.tar.zst"
    assert rs.choose_volume(volumes(), 200, T0 - timedelta(days=1))["volid"].endswith("200-2.tar.zst")
    with pytest.raises(InputError, match="no vzdump backup of container 700"):
        rs.choose_volume(volumes(), 700, None)


def test_backup_ids_are_a_set_or_a_vzdump_volume() -> None:
    assert restore_cmd.parse_backup("20261203T101500Z") == ("20261203T101500Z", None)
    volid = "local:backup/vzdump-lxc-200-2026_12_03-10_15_00.tar.zst"
    assert restore_cmd.parse_backup(volid) == (None, volid)
    for bad in ("yesterday", "local:vztmpl/debian.tar.zst"):
        with pytest.raises(InputError):
            restore_cmd.parse_backup(bad)


def test_pgbackrest_restores_to_the_second_or_the_point_and_never_archives_into_production() -> None:
    by_time = rs.pgbackrest_restore(at=datetime(2026, 12, 3, 11, 15, 7, tzinfo=UTC))
    assert "--type=time --target='2026-12-03 10:15:07+00'" not in by_time  # UTC, not local time
    assert "--type=time --target='2026-12-03 11:15:07+00'" in by_time
    by_name = rs.pgbackrest_restore(point="psa-drill-20261203T101500Z")
    assert "--type=name --target=psa-drill-20261203T101500Z" in by_name
    for script in (by_time, by_name):
        assert "--archive-mode=off" in script and "--delta" in script and "--target-action=promote" in script
        assert script.index("systemctl stop") < script.index(" restore\n") < script.index("systemctl start")


def test_the_drill_sql_locks_then_marks_then_reads_then_switches() -> None:
    sql = rs.restore_point_sql("psa-drill-x'1", VERIFY_SQL)
    order = [sql.index(s) for s in ("BEGIN", "IN SHARE MODE", "pg_create_restore_point('psa-drill-x''1')",
                                    "FROM tickets", "string_agg(h", "COMMIT", "pg_switch_wal")]
    assert order == sorted(order)


def test_rpo_counts_only_acknowledged_writes_lost() -> None:
    assert rs.rpo_seconds(T0, T0) == 0.0
    assert rs.rpo_seconds(T0, T0 - timedelta(seconds=42)) == 42.0
    assert rs.rpo_seconds(None, None) == 0.0  # nothing was written
    assert rs.rpo_seconds(T0, None) is None  # everything lost


def test_the_drill_report_fails_on_any_difference() -> None:
    same = {"table": "table public.tickets", "point": "5 rows, md5 x", "restored": "5 rows, md5 x"}
    ok = drill_cmd.DrillReport("phase0", "p", "t", "a", "a", 0.0, 12.5, [same])
    assert ok.passed and ok.rows()[-1][-1] == "PASS" and '"passed": true' in ok.to_json()
    other = {**same, "restored": "4 rows, md5 y"}
    bad = drill_cmd.DrillReport("phase0", "p", "t", "a", "b", 3.0, 12.5, [other])
    assert not bad.passed and bad.differences == 1 and "DIFFERS" in bad.rows()[0]
    assert not drill_cmd.DrillReport("phase0", "p", "t", None, None, 0.0, 1.0, []).passed  # nothing compared


def test_an_artifact_is_checked_on_arrival() -> None:
    script = put_back.arrived("/var/tmp/psa-restore/redis-dump.rdb", "ab" * 32, 1234)
    assert "= 1234 ]" in script and f"= {'ab' * 32} ]" in script
    body, password = put_back.redis("/var/tmp/psa-restore/redis-dump.rdb", "s3cret")
    assert "s3cret" not in body and "s3cret" not in repr(password)
    steps = ("appendonly no", "systemctl start", "CONFIG SET appendonly yes")
    assert [body.index(s) for s in steps] == sorted(body.index(s) for s in steps)


def test_vzdump_and_restore_are_typed_writes() -> None:
    dump = Write("vzdump", "pve1", params={"vmid": 200, "mode": "snapshot", "storage": "local",
                                           "compress": "zstd"})
    assert (dump.method, dump.path) == ("POST", "/nodes/pve1/vzdump") and dump.body["compress"] == "zstd"
    assert write_effect(dump) is None  # a second vzdump is a second backup: never resent
    back = Write("restore", "pve1", params={"vmid": 700, "ostemplate": "local:backup/x.tar.zst",
                                            "restore": 1})
    assert (back.method, back.path) == ("POST", "/nodes/pve1/lxc")
    effect = write_effect(back)
    assert effect is not None and (effect.kind, effect.task, effect.vmid) == ("exists", "vzrestore", 700)


def test_backup_and_restore_privileges_are_in_the_role_and_on_the_backup_storage() -> None:
    assert "VM.Backup" in privileges.ROLE_PRIVILEGES
    target = privileges.Target(vmids=(200,), storages=("local-lvm",), templates="local", backups="dump",
                               bridges=("vmbr20",), nodes=("pve1",))
    assert privileges.required("backup", target)["/storage/dump"] == {"Datastore.AllocateSpace"}
    assert "VM.Backup" in privileges.required("backup", target)["/vms/200"]
    restore = privileges.required("restore", target)
    assert {"VM.Allocate", "VM.Backup", "VM.Config.Network", "VM.PowerMgmt"} <= restore["/vms/200"]
    assert "Datastore.AllocateSpace" in restore["/storage/local-lvm"]
    doctor = privileges.required("doctor", target)
    assert "VM.Backup" in doctor["/vms/200"] and "Datastore.AllocateSpace" in doctor["/storage/dump"]
    assert re.search(r"Datastore\.AllocateSpace", " ".join(privileges.pveum_commands()))


def test_a_restored_rabbitmq_copy_keeps_its_node_name_once(tmp_path: Path) -> None:

    from psa_provision.services import rabbitmq
    env = tmp_path / "rabbitmq-env.conf"
    env.write_text("ERL_EPMD_ADDRESS=127.0.0.1\n")
    script = rabbitmq.keep_node_name("psa-all-in-one").replace(rabbitmq.ENV_CONF, str(env))
    for _ in range(2):  # a resumed restore runs it again
        subprocess.run(["bash", "-euo", "pipefail", "-c", script], check=True)
    assert env.read_text().splitlines()[1:] == ["# a restored copy keeps its original node name",
                                                "NODENAME=rabbit@psa-all-in-one"]


def test_rabbitmq_definitions_go_to_rabbitmqctl_on_stdin() -> None:
    # rabbitmqctl runs as the rabbitmq user: a path in root's 0700 arrival directory "does not exist"
    path = "/var/tmp/psa-restore/rabbitmq-definitions.json"
    assert put_back.rabbitmq(path).splitlines()[-1] == f"rabbitmqctl -q import_definitions < {path}"


def test_restored_copies_get_firewall_rules_for_each_others_addresses() -> None:
    # restored from vzdump, a copy's rules name production's addresses: rewritten from restored_phase
    from psa_provision import firewall
    phase1 = load_phase("phase1", PHASES_DIR)
    targets = rs.derive(phase1, taken_addresses=every_address())
    copy = rs.restored_phase(phase1, targets)
    by = {t.original.vmid: t.spec for t in targets}
    db, app = by[100], by[230]
    sources = {r.source for r in firewall.rules(copy, db) if r.dport == 5432}
    assert app.ip in sources and phase1.container(230).ip not in sources
    assert copy.services["api-gateway"].container == app.vmid
    assert {c.vmid for c in copy.containers} == {t.spec.vmid for t in targets} | {
        c.vmid for c in phase1.containers if c.vmid not in by}


def test_the_repository_accepts_the_copies_database_while_it_restores_then_not(tmp_path: Path) -> None:
    from psa_provision import sandbox
    opted_in = sandbox.with_backup_container((PHASES_DIR / "phase1.yml").read_text())
    (tmp_path / "phase1.yml").write_text(opted_in)
    phase1 = load_phase("phase1", tmp_path)  # with the opt-in backup container
    targets = rs.derive(phase1, taken_addresses=every_address())
    db = next(t.spec for t in targets if t.original.vmid == 100)
    rules = restore_cmd.repository_openings(phase1, targets)
    assert [(r.dport, r.source) for r in rules] == [(22, db.ip)]
    assert restore_cmd.repository_openings(load_phase("phase0", PHASES_DIR),
                                           rs.derive(load_phase("phase0", PHASES_DIR))) == []  # no firewall

    class Px:
        def __init__(self) -> None:
            self.writes: list[Write] = []
            self.rules = [{"pos": 0, "comment": "psa-provision: ssh from the admin side"}]

        def find_vmid(self, vmid: int) -> str:
            return "pve2"

        def perform(self, write: Write) -> None:
            self.writes.append(write)
            if write.action == "firewall-rule-add":  # Proxmox puts a new rule first
                self.rules = [{"pos": 0, "comment": write.params["comment"]},
                              *({**r, "pos": int(r["pos"]) + 1} for r in self.rules)]

        def firewall_rules(self, node: str, vmid: int) -> list[dict[str, object]]:
            return self.rules

    px, repo = Px(), phase1.container(250)
    opened = restore_cmd._open_repository(px, repo, rules, lambda _: None)  # type: ignore[arg-type]
    restore_cmd._close_repository(px, repo, opened, lambda _: None)  # type: ignore[arg-type]
    assert [(w.action, w.node, w.vmid) for w in px.writes] == [("firewall-rule-add", "pve2", 250),
                                                                ("firewall-rule-delete", "pve2", 250)]
    assert px.writes[1].params == {"pos": 0}


def opted_in_phase1(tmp_path: Path) -> Phase:
    from psa_provision import sandbox
    text = sandbox.with_backup_container((PHASES_DIR / "phase1.yml").read_text())
    (tmp_path / "phase1.yml").write_text(text)
    return load_phase("phase1", tmp_path)


def rendered_files(phase: Phase, spec: ContainerSpec) -> dict[str, str]:
    """What `up` writes on `spec` in `phase` (every PutFile of a fresh guest's plan), by path."""
    inv = inventory.load_inventory(SANDBOX_INVENTORY)
    keys = BackupKeys(KeyPair(Sensitive("db key\n", ["db key"]), "ssh-ed25519 DB db"),
                      KeyPair(Sensitive("repo key\n", ["repo key"]), "ssh-ed25519 REPO repo"))
    ctx = HostContext(inv, phase, spec, Secrets(SECRETS), (), Bundle(APP_BUNDLE, "b" * 64), backup_keys=keys)
    return {c.path: c.content.reveal() for c in planner.plan_guest(ctx, GuestFacts()).changes
            if isinstance(c, PutFile)}


def words(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines()]  # pg_hba pads its columns by address length


def test_a_copys_rewritten_files_are_what_the_planner_renders_for_the_copy(tmp_path: Path) -> None:
    # the copy boots with its original's files; the rewrite must leave each exactly as `up` would render
    # it for the copy (restored_phase), else a store binds an address the copy lacks, or the app talks
    # to production. Names stay the original's (a RabbitMQ node keeps rabbit@<original>).
    phase1 = opted_in_phase1(tmp_path)
    targets = rs.derive(phase1, kind="drill", taken_addresses=every_address())
    mapping, copy = rs.address_map(targets), rs.restored_phase(phase1, targets)
    seen: set[str] = set()
    for t in targets:
        rewritten = set(catalog.managed_files(t.spec.components)) - catalog.OPAQUE_FILES
        before = rendered_files(phase1, t.original)
        want = rendered_files(copy, t.spec.model_copy(update={"hostname": t.original.hostname}))
        assert set(before) == set(want)
        for path, text in before.items():
            after = rs.rewrite_addresses(text, mapping) if path in rewritten else text
            assert words(after) == words(want[path]), f"{t.original.hostname}: {path}"
            assert not [a for a in mapping if re.search(rf"(?<![\d.]){re.escape(a)}(?!\d)", want[path])], path
            if any(re.search(rf"(?<![\d.]){re.escape(a)}(?!\d)", want[path]) for a in mapping.values()):
                seen.add(path)
    stores = (redis.CONF, elasticsearch.CONF, rabbitmq.CONF, postgresql.CONF, postgresql.HBA)
    for path in (*stores, app.ENV_FILE):
        assert path in seen, f"{path} names no copy's address: the test compares nothing there"
    by = {t.original.vmid: t.spec for t in targets}
    env = rendered_files(copy, by[230])[app.ENV_FILE]
    for store, vmid in (("POSTGRES", 100), ("REDIS", 110), ("RABBITMQ", 210), ("ELASTICSEARCH", 220)):
        assert f"{store}_HOST={by[vmid].ip}\n" in env


def test_the_copies_firewalls_let_the_app_copy_reach_each_store_copy(tmp_path: Path) -> None:
    phase1 = opted_in_phase1(tmp_path)
    targets = rs.derive(phase1, kind="drill", taken_addresses=every_address())
    copy = rs.restored_phase(phase1, targets)
    by = {t.original.vmid: t.spec for t in targets}
    app_copy = by[230]
    for vmid, component in ((100, "postgresql"), (110, "redis"), (210, "rabbitmq"), (220, "elasticsearch")):
        accepted = {(r.dport, r.source) for r in firewall.rules(copy, by[vmid])}
        assert (firewall.STORE_PORTS[component], app_copy.ip) in accepted, component
    production = {t.original.ip for t in targets}
    for t in targets:
        assert not {r.source for r in firewall.rules(copy, t.spec)} & production, t.spec.hostname


def test_a_copy_is_rewritten_before_its_services_restart_and_the_app_only_stops() -> None:
    phase0 = load_phase("phase0", PHASES_DIR)
    t = rs.derive(phase0, kind="drill", taken_addresses=every_address())[0]
    script = rs.copy_script(t, rs.address_map([t]))
    assert script.index(f"systemctl stop {app.UNIT}") < script.index("sed -E -i")
    assert script.index("sed -E -i") < script.index(rabbitmq.ENV_CONF) < script.index("systemctl restart")
    restarted = re.findall(r"^systemctl restart (\S+)$", script, re.M)
    assert {redis.UNIT, rabbitmq.UNIT, elasticsearch.UNIT, postgresql.UNIT} <= set(restarted)
    assert app.UNIT not in restarted
    for unit in restarted:  # a unit that failed at boot may be held by systemd's start limit
        assert script.index(f"systemctl reset-failed {unit} ") < script.index(f"systemctl restart {unit}\n")
    assert f"{redis.CONF}\n" in script and f"{app.ENV_FILE}\n" in script


def test_the_restored_app_starts_from_its_env_not_from_the_saved_list() -> None:
    # `pm2 resurrect` (the unit's start) would bring back production's environment saved in dump.pm2
    script = pm2.start_from_ecosystem()
    steps = (f"systemctl stop {app.UNIT}\n", f"rm -f {pm2.DUMP_FILE} {pm2.DUMP_BACKUP}\n",
             f"systemctl start {app.UNIT}\n", f"start {app.ECOSYSTEM_FILE}", "save")
    order = [script.index(s) for s in steps]
    assert order == sorted(order)
    assert "resurrect" not in script and "restart" not in script
