"""A setting of Patroni's file that needs a server restart (archive_mode, when the backup container joins a
running phase 3): planned from the member's facts, applied member by member through Patroni, the
replicas in phase-file order first, the leader last; nothing when the server runs with it already.

The turn rule is the Python the member runs (restart.TURN), run here against answers of GET /patroni as
Patroni 3.0 gives them ("state", "role" master/replica, "pending_restart": true only when set)."""

from __future__ import annotations

import io
import json
import shlex
import sys
import urllib.request
from pathlib import Path

import pytest
from test_pgbackrest import KEYS, ctx, opted_in

from psa_provision.changes import Command, Noop, Service
from psa_provision.facts import GuestFacts, ServiceFact
from psa_provision.packaged import PHASES_DIR
from psa_provision.phases import load_phase
from psa_provision.services.patroni import component as patroni
from psa_provision.services.patroni import restart
from psa_provision.services.postgresql import facts as postgresql_facts
from psa_provision.services.postgresql.facts import PostgresFacts

LEADER, SYNC, REPLICA = "10.0.30.10", "10.0.30.11", "10.0.30.12"


@pytest.fixture(scope="module")
def with_backup(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return opted_in(tmp_path_factory.mktemp("phases"))


def member(*, pending: bool, role: str = "replica", state: str = "running") -> dict[str, object]:
    out: dict[str, object] = {"state": state, "role": role, "server_version": 150010}
    if pending:
        out["pending_restart"] = True
    return out


def turn(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], cluster: dict[str, object],
         me: str, before: list[str], others: list[str]) -> tuple[int, str]:
    """(exit code, output) of restart.TURN on `me` with GET /patroni answered from `cluster`."""
    def urlopen(url: str, timeout: float) -> io.BytesIO:
        ip = url.split("//")[1].split(":")[0]
        if ip not in cluster:
            raise OSError("connection refused")
        return io.BytesIO(json.dumps(cluster[ip]).encode())

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    monkeypatch.setattr(sys, "argv", ["-c", me, " ".join(before), " ".join(others)])
    code = 0
    try:
        exec(compile(restart.TURN, "TURN", "exec"), {})  # noqa: S102 - the guest's own script, under test
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().out.strip()


def test_replicas_restart_in_phase_order_and_the_leader_last(monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    cluster = {LEADER: member(pending=True, role="master"), SYNC: member(pending=True),
               REPLICA: member(pending=True)}
    everyone = [LEADER, SYNC, REPLICA]

    def others(me: str) -> list[str]:
        return [ip for ip in everyone if ip != me]

    # 101 goes first: the leader before it in the phase file does not hold a replica up
    assert turn(monkeypatch, capsys, cluster, SYNC, [LEADER], others(SYNC)) == (0, "go")
    assert turn(monkeypatch, capsys, cluster, REPLICA, [LEADER, SYNC], others(REPLICA)) == (1, f"wait {SYNC}")
    assert turn(monkeypatch, capsys, cluster, LEADER, [], others(LEADER)) == (1, f"wait {SYNC} {REPLICA}")
    cluster[SYNC] = member(pending=False, state="restarting")  # Patroni clears the flag as it restarts
    assert turn(monkeypatch, capsys, cluster, REPLICA, [LEADER, SYNC], others(REPLICA)) == (1, f"wait {SYNC}")
    cluster[SYNC] = member(pending=False)
    assert turn(monkeypatch, capsys, cluster, REPLICA, [LEADER, SYNC], others(REPLICA)) == (0, "go")
    assert turn(monkeypatch, capsys, cluster, LEADER, [], others(LEADER)) == (1, f"wait {REPLICA}")
    cluster[REPLICA] = member(pending=False)
    assert turn(monkeypatch, capsys, cluster, LEADER, [], others(LEADER)) == (0, "go")
    cluster[LEADER] = member(pending=False, role="master")
    assert turn(monkeypatch, capsys, cluster, LEADER, [], others(LEADER)) == (0, "done")


def test_a_member_down_holds_no_one_up_and_a_failover_is_followed(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # 101 stopped with its flag, 102 not answering at all: the leader goes on
    cluster: dict[str, object] = {LEADER: member(pending=True, role="master"),
                                  SYNC: member(pending=True, state="stopped")}
    assert turn(monkeypatch, capsys, cluster, LEADER, [], [SYNC, REPLICA]) == (0, "go")
    # after a failover 101 leads: 102 (a replica now, after it) need not wait for it, and 100, now a
    # replica before 101... is a replica before 102: 102 waits for it
    cluster = {LEADER: member(pending=True), SYNC: member(pending=True, role="master"),
               REPLICA: member(pending=True)}
    waits = turn(monkeypatch, capsys, cluster, REPLICA, [LEADER, SYNC], [LEADER, SYNC])
    assert waits == (1, f"wait {LEADER}")
    assert turn(monkeypatch, capsys, cluster, LEADER, [], [SYNC, REPLICA]) == (0, "go")


def facts(archive_mode: str | None, pending: frozenset[str] = frozenset(), recovery: bool | None = False
          ) -> GuestFacts:
    settings = {"archive_mode": archive_mode} if archive_mode is not None else {}
    pg = PostgresFacts(settings=settings, pending_restart=pending, in_recovery=recovery)
    return GuestFacts(postgres=pg)


def test_only_settings_the_server_lacks_are_stale() -> None:
    wanted, managed = {"archive_mode": "on"}, {"archive_mode", "shared_buffers"}
    assert restart.stale(facts("off"), wanted, managed) == ["archive_mode"]
    assert restart.stale(facts("on"), wanted, managed) == []
    assert restart.stale(facts("on", frozenset({"shared_buffers"})), wanted, managed) == ["shared_buffers"]
    # a setting the tool does not set is not its business (health reports a pending restart anyway)
    assert restart.stale(facts("on", frozenset({"shared_preload_libraries"})), wanted, managed) == []
    # no server answers: it starts with the file
    assert restart.stale(facts("off", recovery=None), wanted, managed) == []
    assert restart.stale(GuestFacts(), wanted, managed) == []


def running_member(archive_mode: str, pending: frozenset[str] = frozenset()) -> GuestFacts:
    base = facts(archive_mode, pending)
    return GuestFacts(services={"patroni@15-main": ServiceFact("patroni@15-main", True, True, 1.0)},
                      postgres=base.postgres)


def test_the_backup_container_added_to_a_running_phase3_restarts_each_member_once(with_backup: Path) -> None:
    changes = patroni.plan(ctx(with_backup, "phase3", 101), running_member("off"))
    reload = next(i for i, c in enumerate(changes) if isinstance(c, Service) and c.action == "reload")
    wait, go = [c for c in changes if isinstance(c, Command) and c.component == "patroni"
                and "archive_mode" in c.summary]
    assert changes.index(wait) > reload  # Patroni reloads its file first
    assert not wait.needs_peers and go.needs_peers  # every member's flag is set before any restarts
    patronictl = "patronictl -c /etc/patroni/15-main.yml restart 15-main psa-postgres-2 --pending --force"
    assert patronictl in go.script
    sql = restart.running_sql({"archive_mode": "on"})
    assert "VALUES ('archive_mode', 'on')" in sql and shlex.quote(sql) in wait.script
    converged = patroni.plan(ctx(with_backup, "phase3", 101), running_member("on"))
    assert not [c for c in converged if isinstance(c, Command) and "restart" in c.summary]
    assert any(isinstance(c, Noop) and "runs with every setting" in c.summary for c in converged)


def test_without_the_backup_container_nothing_restarts() -> None:
    # the packaged phase 3: no archiving wanted, whatever the server runs with (a member migrated from
    # an opted-in phase 2 keeps archive_mode on from its old drop-in: no restart every run for that)
    changes = patroni.plan(ctx(PHASES_DIR, "phase3", 100), running_member("on"))
    assert not [c for c in changes if isinstance(c, Command) and "restart" in c.summary]
    changes = patroni.plan(ctx(PHASES_DIR, "phase3", 100, keys=KEYS), running_member("off"))
    assert not [c for c in changes if isinstance(c, Command) and "restart" in c.summary]


def test_each_member_knows_who_goes_before_it() -> None:
    phase = load_phase("phase3", PHASES_DIR)
    script = restart.restart_script(phase, phase.container(102))
    args = f"{REPLICA} {shlex.quote(f'{LEADER} {SYNC}')} {shlex.quote(f'{LEADER} {SYNC}')})"
    assert args in script
    first = restart.restart_script(phase, phase.container(100))
    assert f"{LEADER} '' {shlex.quote(f'{SYNC} {REPLICA}')})" in first


def test_the_facts_carry_archive_mode_and_the_settings_pending_a_restart() -> None:
    pg = postgresql_facts.parse("setting\tarchive_mode\toff\npending\tarchive_mode\npending\tshared_buffers\n"
                                "recovery\tt\n")
    assert pg.settings == {"archive_mode": "off"}
    assert pg.pending_restart == frozenset({"archive_mode", "shared_buffers"}) and pg.in_recovery
    assert "'archive_mode'" in postgresql_facts._SQL and "WHERE pending_restart" in postgresql_facts._SQL


def test_the_member_scripts_parse() -> None:
    import subprocess

    phase = load_phase("phase3", PHASES_DIR)
    for code in (restart.TURN, restart.RESTARTED, restart.PENDING):
        compile(code, "snippet", "exec")
    for script in (restart.restart_script(phase, phase.container(101)),
                   restart.loaded_script(phase.container(101), {"archive_mode": "on"})):
        subprocess.run(["bash", "-n", "-c", script], check=True)
