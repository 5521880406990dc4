"""`migrate phase3` for PostgreSQL as data: phase 2's container 100 becomes the Patroni leader, 101 and 102
clone it; each step's check judged on recorded output, its rollback present, secrets only on stdin."""

from __future__ import annotations

import json
from typing import Any

import pytest
from ha_phase import ha_phase
from test_planner import SECRETS

from psa_provision import phases
from psa_provision.packaged import PHASES_DIR
from psa_provision.services.patroni import migration

PASSWORDS = {"postgres": SECRETS["postgresql.superuser_password"],
             "replicator": SECRETS["postgresql.replication_password"],
             "rewind_user": SECRETS["postgresql.rewind_password"]}


def steps() -> list[migration.Step]:
    return migration.steps(phases.load_phase("phase2", PHASES_DIR), ha_phase(), PASSWORDS)


def by_name() -> dict[str, migration.Step]:
    return {s.name: s for s in steps()}


def listing(*rows: tuple[str, str]) -> str:
    return json.dumps([{"Cluster": "15-main", "Member": m, "Host": "h", "Role": r, "State": "running",
                        "TL": 1, **({} if r == "Leader" else {"Lag in MB": 0})} for m, r in rows])


def test_order_and_where_each_step_runs() -> None:
    assert [(s.name, s.vmid) for s in steps()] == [
        ("etcd", 105), ("roles", 100), ("takeover", 100), ("replica psa-postgres-2", 101),
        ("replica psa-postgres-3", 102), ("synchronous", 100)]


def test_takeover_stops_the_stock_server_then_starts_patroni_and_can_go_back() -> None:
    step = by_name()["takeover"]
    run = step.run.splitlines()
    stop = run.index("systemctl stop postgresql@15-main")
    assert stop < run.index("systemctl enable --now patroni@15-main")
    assert "http://10.0.30.10:8008/leader" in step.run
    undo = step.rollback.splitlines()
    assert undo[0] == "systemctl stop patroni@15-main"
    assert undo[2] == ("printf '%s\\n' 15-main 'Yes I am aware' psa-postgres-1 | "
                       "patronictl -c /etc/patroni/15-main.yml remove 15-main")
    assert undo[-1] == "systemctl start postgresql@15-main"


def test_takeover_check_wants_container_100_leading() -> None:
    judge = by_name()["takeover"].check.judge
    assert judge(0, listing(("psa-postgres-1", "Leader"))) == []
    assert judge(0, listing(("psa-postgres-2", "Leader"))) == [
        "members missing: psa-postgres-1", "members not in the phase file: psa-postgres-2",
        "the leader is psa-postgres-2, want psa-postgres-1"]
    assert judge(1, "Error") == ["patronictl list failed (exit 1): Error"]
    assert judge(0, "not json")[0].startswith("patronictl list answered no JSON")


def test_replica_steps_and_the_synchronous_standby() -> None:
    s = by_name()
    two = listing(("psa-postgres-1", "Leader"), ("psa-postgres-2", "Replica"))
    assert s["replica psa-postgres-2"].check.judge(0, two) == []
    assert s["replica psa-postgres-3"].check.judge(0, two) == ["members missing: psa-postgres-3"]
    assert "pg_dropcluster 15 main" in s["replica psa-postgres-3"].rollback
    three = listing(("psa-postgres-1", "Leader"), ("psa-postgres-2", "Replica"),
                    ("psa-postgres-3", "Replica"))
    assert s["synchronous"].check.judge(0, three) == [
        "no synchronous standby: a commit would be acknowledged before any replica has it"]
    synced = three.replace('"psa-postgres-2", "Host": "h", "Role": "Replica"',
                           '"psa-postgres-2", "Host": "h", "Role": "Sync Standby"')
    assert s["synchronous"].check.judge(0, synced) == []


def test_roles_travel_on_stdin_only() -> None:
    step = by_name()["roles"]
    assert step.stdin is not None
    sql = step.stdin.reveal()
    assert "ALTER ROLE rewind_user WITH LOGIN PASSWORD" in sql
    assert "GRANT EXECUTE ON FUNCTION pg_catalog.pg_ls_dir(text, boolean, boolean) TO rewind_user;" in sql
    for s in steps():
        for value in PASSWORDS.values():
            assert value not in s.run + s.rollback + s.check.script + s.summary + repr(s)
    assert step.check.judge(0, "3\n") == []
    assert step.check.judge(0, "1\n") == ["Patroni's users: 1 of 3 present"]


def test_etcd_step_judges_both_answers() -> None:
    judge: Any = by_name()["etcd"].check.judge
    members = {"members": [{"name": f"psa-etcd-{i + 1}", "peerURLs": [f"http://10.0.30.5{i}:2380"],
                            "clientURLs": [f"http://10.0.30.5{i}:2379"]} for i in range(3)]}
    health = [{"endpoint": f"http://10.0.30.5{i}:2379", "health": True} for i in range(3)]
    assert judge(0, json.dumps(members) + "\n---\n" + json.dumps(health)) == []
    assert judge(0, "{}\n---\n[]") == ["members missing: psa-etcd-1, psa-etcd-2, psa-etcd-3",
                                       "0 endpoints answered, the phase has 3 members"]


def test_a_phase_without_the_old_server_among_the_members_is_refused() -> None:
    with pytest.raises(ValueError, match="0 Patroni members ran PostgreSQL in phase0"):
        old = phases.load_phase("phase0", PHASES_DIR)
        migration.steps(old, ha_phase(), PASSWORDS)


def test_described_like_the_other_stores_steps() -> None:
    described = migration.described(steps())
    assert [(d.name, d.host) for d in described][:3] == [
        ("postgresql: etcd", "psa-etcd-1"), ("postgresql: roles", "psa-postgres-1"),
        ("postgresql: takeover", "psa-postgres-1")]
    assert described[0].rollback == "(nothing: checks only)"
    assert described[2].rollback == "systemctl stop patroni@15-main"
