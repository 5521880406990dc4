"""Fault rules: matched by kind, path regex, task type and their scope (vmid, user, path prefix); each use
consumes one count; a clear removes every rule, one owner's or one numbered rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from pvesim import cli
from pvesim import faults as faults_mod
from pvesim.faults import Faults
from pvesim.paths import StateDir
from pvesim.tasks import Tasks


def test_rules_are_consumed_per_use(tmp_path: Path) -> None:
    faults = Faults(tmp_path / "faults.json")
    faults.add({"kind": "http-error", "count": 2, "status": 503, "path": "^/api2/json/version$"})
    assert faults.take("http-error", path="/api2/json/nodes") is None
    assert faults.take("http-error", path="/api2/json/version") is not None
    assert faults.take("http-error", path="/api2/json/version") is not None
    assert faults.take("http-error", path="/api2/json/version") is None
    assert faults.read()["rules"] == []


def test_task_failures_match_type(tmp_path: Path) -> None:
    faults = Faults(tmp_path / "faults.json")
    faults.add({"kind": "task-fail", "count": 1, "type": "vzstart", "message": "no power"})
    faults.add({"kind": "task-fail", "count": 1})
    assert faults.task_failure("vzstart") == "no power"
    assert faults.task_failure("vzcreate") == "injected failure (pvesim fault)"
    assert faults.task_failure("vzcreate") is None


def test_task_failures_match_the_guest(tmp_path: Path) -> None:
    faults = Faults(tmp_path / "faults.json")
    faults.add({"kind": "task-fail", "count": 1, "type": "vzstart", "id": "202", "message": "mine"})
    assert faults.task_failure("vzstart", "201") is None
    assert faults.task_failure("vzstart", "202") == "mine"
    assert faults.task_failure("vzstart", "202") is None


def test_ticket_policy_and_clear(tmp_path: Path) -> None:
    faults = Faults(tmp_path / "faults.json")
    assert faults.ticket_policy() == (0, None)
    faults.expire_tickets()
    faults.set_ticket_lifetime(30)
    faults.add({"kind": "drop", "count": 1})
    assert faults.ticket_policy() == (1, 30)
    faults.clear()
    assert faults.read()["rules"] == [] and faults.ticket_policy()[0] == 1


def test_unknown_kind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown fault kind"):
        Faults(tmp_path / "faults.json").add({"kind": "meteor", "count": 1})


# -- scopes and owners: runs sharing the sandbox only meet their own faults -------------------------------
@pytest.mark.parametrize(("authorization", "cookie", "who"), [
    ("PVEAPIToken=root@pam!psa-e2e=0f1e-secret", "", "root@pam!psa-e2e"),
    ("PVEAPIToken=u@pve!ci = s", "", "u@pve!ci"),
    ("", "PVEAuthCookie=PVE%3Aroot%40pam%3A6650A1B2%3A%3Asig", "root@pam"),
    ("PVEAuthCookie=PVE:psa@pve:6650A1B2::sig", "", "psa@pve"),
    ("", "other=1; PVEAuthCookie=PVE:a@pve:1::s; x=2", "a@pve"),
    ("", "PVEAuthCookie=garbage", ""),
    ("Basic dXNlcg==", "", ""),
])
def test_requester_reads_the_claimed_identity(authorization: str, cookie: str, who: str) -> None:
    assert faults_mod.requester(authorization, cookie) == who


def test_user_scope_covers_a_users_tokens_but_a_token_only_itself() -> None:
    assert faults_mod.user_matches("root@pam", "root@pam")
    assert faults_mod.user_matches("root@pam", "root@pam!psa-e2e")
    assert not faults_mod.user_matches("root@pam", "root@pamela")
    assert not faults_mod.user_matches("root@pam", "root@pamx!t")
    assert faults_mod.user_matches("root@pam!psa-e2e", "root@pam!psa-e2e")
    assert not faults_mod.user_matches("root@pam!psa-e2e", "root@pam")
    assert not faults_mod.user_matches("root@pam!psa-e2e", "root@pam!psa-e2e2")


def test_vmid_and_prefix_scopes_match_whole_path_segments() -> None:
    assert faults_mod.path_names_vmid("/api2/json/nodes/pve1/lxc/202/status/start", "202")
    assert faults_mod.path_names_vmid("/api2/json/nodes/pve1/lxc/202", "202")
    assert not faults_mod.path_names_vmid("/api2/json/nodes/pve1/lxc/2020/config", "202")
    assert not faults_mod.path_names_vmid("/api2/json/nodes/pve1/lxc", "202")
    assert faults_mod.path_under("/nodes/pve1/lxc/202", "/api2/json/nodes/pve1/lxc/202/config")
    assert faults_mod.path_under("/api2/json/nodes/pve1/lxc/202/", "/api2/json/nodes/pve1/lxc/202")
    assert not faults_mod.path_under("/nodes/pve1/lxc/20", "/api2/json/nodes/pve1/lxc/202/config")
    assert not faults_mod.path_under("/nodes/pve2", "/api2/json/nodes/pve1/lxc/202/config")


def test_scoped_http_rules_reach_only_their_vmid_user_and_prefix(tmp_path: Path) -> None:
    faults = Faults(tmp_path / "faults.json")
    faults.add({"kind": "http-error", "count": 5, "vmid": 202, "user": "root@pam!mine", "owner": "a"})
    faults.add({"kind": "drop", "count": 5, "prefix": "/nodes/pve2", "owner": "b"})
    config = "/api2/json/nodes/pve1/lxc/202/config"
    assert faults.take("http-error", path=config, user="root@pam!theirs") is None
    other_ct = "/api2/json/nodes/pve1/lxc/201/config"
    assert faults.take("http-error", path=other_ct, user="root@pam!mine") is None
    assert faults.take("http-error", path="/api2/json/version", user="root@pam!mine") is None
    assert faults.take("http-error", path=config, user="") is None
    assert faults.take("http-error", path=config, user="root@pam!mine") is not None
    assert faults.take("drop", path="/api2/json/nodes/pve1/status") is None
    assert faults.take("drop", path="/api2/json/nodes/pve2/status") is not None
    left = {r["owner"]: r["count"] for r in faults.read()["rules"]}
    assert left == {"a": 4, "b": 4}  # only the uses that applied were consumed


def test_scoped_task_failures_reach_only_their_vmid_and_user(tmp_path: Path) -> None:
    faults = Faults(tmp_path / "faults.json")
    faults.add({"kind": "task-fail", "count": 1, "vmid": 9009, "user": "root@pam", "message": "mine"})
    assert faults.task_failure("vzcreate", "9008", "root@pam") is None
    assert faults.task_failure("vzcreate", "9009", "psa@pve!ci") is None
    assert faults.task_failure("vzcreate", "9009", "root@pam!psa-e2e") == "mine"
    assert faults.task_failure("vzcreate", "9009", "root@pam!psa-e2e") is None


def test_the_task_runner_hands_the_tasks_user_to_the_rules(tmp_path: Path) -> None:
    faults = Faults(tmp_path / "faults.json")
    faults.add({"kind": "task-fail", "count": 2, "user": "root@pam!mine", "message": "mine"})
    runner = Tasks(tmp_path / "tasks", faults.task_failure)
    theirs = runner.start("pve1", "download", "x.tar.zst", "root@pam!theirs", lambda log: None)
    mine = runner.start("pve1", "download", "x.tar.zst", "root@pam!mine", lambda log: None)
    assert [(runner.wait(u, 10) or {}).get("exitstatus") for u in (theirs, mine)] == ["OK", "mine"]


def test_clear_by_owner_or_number_leaves_the_others(tmp_path: Path) -> None:
    faults = Faults(tmp_path / "faults.json")
    first = faults.add({"kind": "delay", "count": 1, "seconds": 1, "owner": "run-a"})
    second = faults.add({"kind": "delay", "count": 1, "seconds": 2, "owner": "run-a"})
    other = faults.add({"kind": "drop", "count": 1, "owner": "run-b"})
    untagged = faults.add({"kind": "drop", "count": 1})
    assert len({first, second, other, untagged}) == 4
    lock = faults.add_backup_lock({"vmid": 9030, "node": "pve1", "upid": "U", "owner": "run-b"})
    assert lock not in (first, second, other, untagged)  # one numbering for rules and backups
    assert faults.clear(rule_id=second) == 1
    assert [r["rule_id"] for r in faults.read("run-a")["rules"]] == [first]
    assert faults.clear(owner="run-a") == 1
    assert faults.take_backup_locks(owner="run-a") == []
    assert [r["rule_id"] for r in faults.read()["rules"]] == [other, untagged]
    assert faults.clear(owner="run-b") == 1
    assert [b["vmid"] for b in faults.take_backup_locks(owner="run-b")] == [9030]
    assert faults.read()["rules"] == [{"kind": "drop", "count": 1, "rule_id": untagged}]
    assert faults.clear() == 1


@pytest.mark.parametrize(("rule", "error"), [
    ({"kind": "task-fail", "count": 1, "prefix": "/nodes/pve1"}, "scope a task-fail rule with vmid or user"),
    ({"kind": "drop", "count": 1, "prefix": "nodes/pve1"}, "does not start with /"),
    ({"kind": "drop", "count": 1, "vmid": "two"}, "is not a number"),
    ({"kind": "drop", "count": 1, "user": "root"}, "is not user@realm"),
])
def test_bad_scopes_are_refused(tmp_path: Path, rule: dict[str, object], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        Faults(tmp_path / "faults.json").add(rule)


def test_cli_adds_scoped_rules_and_clears_only_the_owners(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    fault = ["fault", "--state-dir", str(tmp_path)]
    assert cli.main([*fault, "http-error", "--vmid", "202", "--user", "root@pam!ci",
                     "--prefix", "/nodes/pve1", "--owner", "e2e-1", "--count", "3"]) == 0
    assert cli.main([*fault, "task-fail", "--type", "vzstart", "--vmid", "202", "--owner", "e2e-2"]) == 0
    ids = [int(line) for line in capsys.readouterr().out.split()]
    rules = Faults(StateDir(tmp_path).faults).read()["rules"]
    assert rules[0] == {"kind": "http-error", "count": 3, "status": 500, "vmid": 202, "user": "root@pam!ci",
                        "prefix": "/nodes/pve1", "owner": "e2e-1", "rule_id": ids[0]}
    assert cli.main([*fault, "clear", "--owner", "e2e-1"]) == 0
    assert [r["rule_id"] for r in Faults(StateDir(tmp_path).faults).read()["rules"]] == [ids[1]]
    assert cli.main([*fault, "clear", "--id", str(ids[1])]) == 0
    assert Faults(StateDir(tmp_path).faults).read()["rules"] == []
    assert cli.main([*fault, "drop", "--user", "nobody"]) == 1
    assert "is not user@realm" in capsys.readouterr().err
