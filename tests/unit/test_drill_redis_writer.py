"""The drill's Redis writer: its bash (rendered, and run against a real redis-server, replica and
Sentinel on loopback when installed), what its output says, where it runs, and the losses it yields."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from psa_provision.drill.kinds import parse_kind
from psa_provision.drill.measure import Attempt, measure, redis_losses
from psa_provision.drill.redis_writer import attempts_of, sentinels_from, writer_host
from psa_provision.packaged import PHASES_DIR
from psa_provision.phases import load_phase
from psa_provision.services.redis import writes

RUN = "ab12cd34"
PHASE3 = load_phase("phase3", PHASES_DIR)
REDIS = [c for c in PHASE3.with_component("redis")]


def bash_syntax(script: str) -> str:
    done = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True, check=False)
    return done.stderr


def test_the_scripts_are_bash_that_parses_and_carry_no_password() -> None:
    sentinels = writes.sentinel_addresses(["10.0.30.21", "10.0.30.20"])
    assert sentinels == ["10.0.30.21:26379", "10.0.30.20:26379"]
    launch = writes.writer_script(RUN, sentinels, rate=5, max_seconds=900, max_writes=4501)
    collect = writes.collect_script(RUN, sentinels)
    for script in (launch, collect, writes.stop_script(RUN), writes.ASK_PRIMARY):
        assert bash_syntax(script) == ""
    # the writer itself is a heredoc inside the launcher: check it on its own too
    body = launch.split("<<'PSA_DRILL_WRITER'\n", 1)[1].split("PSA_DRILL_WRITER\n", 1)[0]
    assert bash_syntax(body) == ""
    assert launch.count(writes.AUTH) == 1 and collect.count(writes.AUTH) == 1
    assert "-a " not in launch + collect and "REDISCLI_AUTH=" not in launch + collect
    assert "WAIT 1 1000" in body and "CLIENT ID" in body and f"drill:{RUN}:$store:$n" in body
    assert "sentinels=(10.0.30.21:26379 10.0.30.20:26379)" in body
    assert "timeout -k 5 930 bash" in launch, "hard bound: max_seconds plus a margin"
    assert f"--pattern 'drill:{RUN}:*'" in collect
    assert "SENTINEL get-master-addr-by-name psa-redis" in writes.ASK_PRIMARY


def test_a_run_that_is_not_a_plain_token_is_refused() -> None:
    for bad in ("", "AB", "a b", "x;rm", "../x"):
        with pytest.raises(ValueError):
            writes.run_dir(bad)
    assert writes.run_dir(RUN) == f"/run/psa-drill-redis-{RUN}"


@pytest.mark.parametrize(("store", "replies", "acked"), [
    ("nowait", ["OK"], True),
    ("nowait", [], False),                                    # no answer (primary down)
    ("nowait", ["READONLY You can't write against a read only replica."], False),
    ("nowait", ["NOREPLICAS Not enough good replicas to write."], False),
    ("wait", ["13", "OK", "1", "13"], True),
    ("wait", ["13", "OK", "2", "13"], True),
    ("wait", ["13", "OK", "0", "13"], False),                 # no replica confirmed within the timeout
    ("wait", ["13", "OK", "1", "14"], False),                 # WAIT ran on a new connection
    ("wait", ["13", "OK", "1"], False),                       # cut off before the last CLIENT ID
    ("wait", ["13", "NOREPLICAS Not enough good replicas to write.", "2", "13"], False),
    ("wait", ["", "OK", "1", ""], False),
])
def test_what_counts_as_acknowledged(store: str, replies: list[str], acked: bool) -> None:
    assert writes.acknowledged(store, replies) is acked


RECORD = """start 1000000
wait\t1\t1000100\t1010100\t10.0.30.20:6379\t7|OK|1|7
nowait\t2\t1200000\t1210000\t10.0.30.20:6379\tOK
wait\t3\t1400000\t6400000\t:\t
nowait\t4\t6600000\t6700000\t10.0.30.21:6379\tOK
garbage line
other\t5\t1\t2\t-\tOK
"""


def test_the_record_parses_into_writes_relative_to_the_writers_start() -> None:
    got = writes.parse_record(RUN, RECORD)
    assert [(w.store, w.key, w.acked, w.primary) for w in got] == [
        ("wait", f"drill:{RUN}:wait:1", True, "10.0.30.20:6379"),
        ("nowait", f"drill:{RUN}:nowait:2", True, "10.0.30.20:6379"),
        ("wait", f"drill:{RUN}:wait:3", False, ""),
        ("nowait", f"drill:{RUN}:nowait:4", True, "10.0.30.21:6379")]
    assert (got[0].sent_us, got[0].answered_us) == (100, 10100)
    assert writes.parse_record(RUN, "wait\t1\t1\t2\tx\tOK\n") == [], "nothing before the start line"


def collected(primary: str, held: str) -> str:
    return f"{writes.MARK_WRITES}\n{RECORD}{writes.MARK_PRIMARY}\n{primary}\n{writes.MARK_HELD}\n{held}"


def test_the_collected_output_gives_the_keys_the_primary_holds_or_none() -> None:
    two = f"drill:{RUN}:wait:1\ndrill:{RUN}:nowait:4\n"
    ok = writes.parse_collected(RUN, collected("10.0.30.21:6379", two + "drill:other:wait:2\n"))
    assert ok.primary == "10.0.30.21:6379" and len(ok.writes) == 4
    assert ok.held == {f"drill:{RUN}:wait:1", f"drill:{RUN}:nowait:4"}, "another run's keys are not ours"
    empty = writes.parse_collected(RUN, collected("10.0.30.21:6379", ""))
    assert empty.held == set(), "a primary holding none of the keys lost them all"
    assert writes.parse_collected(RUN, collected(":", "")).held is None, "no primary named"
    failed = writes.parse_collected(RUN, collected("10.0.30.21:6379", f"drill:{RUN}:wait:1\n@@scan-failed\n"))
    assert failed.held is None, "a SCAN cut short is no answer"
    assert writes.parse_collected(RUN, "").held is None


def test_the_losses_come_from_the_record_and_the_held_keys() -> None:
    held = f"drill:{RUN}:wait:1\ndrill:{RUN}:nowait:4\n"
    got = writes.parse_collected(RUN, collected("10.0.30.21:6379", held))
    assert got.held is not None
    attempts = attempts_of(got.writes, 12.5)
    assert attempts[0].sent == pytest.approx(12.5001) and attempts[0].store == "redis-wait"
    assert {a.store for a in attempts} == {"redis-wait", "redis-nowait"}
    losses = redis_losses(attempts, got.held)
    assert losses["with_wait"] == {"attempts": 2, "acknowledged": 1, "lost": 0, "lost_keys": []}
    assert losses["without_wait"] == {"attempts": 2, "acknowledged": 2, "lost": 1,
                                      "lost_keys": [f"drill:{RUN}:nowait:2"]}


def test_the_json_and_the_table_carry_the_redis_losses_and_leave_passed_to_the_tickets() -> None:
    tickets = [Attempt("t1", 1.0, 1.1, True)]
    redis = [Attempt("w1", 1.0, 1.1, True, "redis-wait"), Attempt("w2", 2.0, 2.1, False, "redis-wait"),
             Attempt("n1", 1.0, 1.1, True, "redis-nowait"), Attempt("n2", 2.0, 2.1, True, "redis-nowait")]
    result = measure(parse_kind("redis-primary"), "psa-redis-1", tickets + redis, Counter({"t1": 1}), 1.5,
                     40.0, redis_held={"w1", "n1"})
    result.healed = True
    doc = result.as_dict()
    assert doc["redis_lost"]["with_wait"]["acknowledged"] == 1 and doc["redis_lost"]["with_wait"]["lost"] == 0
    assert doc["redis_lost"]["without_wait"] == {"attempts": 2, "acknowledged": 2, "lost": 1,
                                                 "lost_keys": ["n2"]}
    assert doc["attempts"] == 1 and result.passed, "Redis figures are reported, the exit stays the tickets'"
    rows = dict(result.rows())
    assert rows["Redis writes lost with WAIT"] == "0 of 1 acknowledged (2 attempts)"
    assert rows["Redis writes lost without WAIT"] == "1 of 2 acknowledged (2 attempts)"
    unread = measure(parse_kind("redis-primary"), "x", tickets + redis, Counter({"t1": 1}), 1.5, None)
    assert unread.redis_lost == {} and not any("Redis" in r[0] for r in unread.rows())


def test_the_writer_runs_on_a_redis_member_the_fault_spares() -> None:
    assert [c.hostname for c in REDIS] == ["psa-redis-1", "psa-redis-2", "psa-redis-3"]
    host = writer_host(PHASE3, (REDIS[0],))
    assert host is not None and host.hostname == "psa-redis-2"
    host = writer_host(PHASE3, ())
    assert host is not None and host.hostname == "psa-redis-1"
    on_pve2 = tuple(c for c in PHASE3.containers if c.node == "pve2")
    host = writer_host(PHASE3, on_pve2)
    assert host is not None and host.node != "pve2"
    assert writer_host(PHASE3, tuple(REDIS)) is None
    assert writer_host(load_phase("phase2", PHASES_DIR), ()) is None, "no replicated set, no Sentinels"
    assert sentinels_from(PHASE3, REDIS[1]) == ["10.0.30.21:26379", "10.0.30.20:26379", "10.0.30.22:26379"]


# -- the bash against a real Redis (primary, replica, Sentinel on loopback) ------------------------------

PASSWORD = "drill s3cret"  # a space: redis.conf takes it quoted, REDISCLI_AUTH as is


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(port: int, *args: str) -> str:
    done = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args], capture_output=True,
                          text=True, check=False, timeout=10, env={**os.environ, "REDISCLI_AUTH": PASSWORD})
    return done.stdout.strip()


def _until(what: str, ok: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not ok():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"not within {timeout:.0f} s: {what}"
        time.sleep(0.1)


@pytest.fixture
def redis_set(tmp_path: Path) -> Iterator[tuple[int, int, int]]:
    """(primary, replica, sentinel) ports: min-replicas-to-write 1 as on phase 3, Sentinel with a password."""
    primary, replica, sentinel = _free_port(), _free_port(), _free_port()
    quoted = '"' + PASSWORD + '"'
    procs = []
    try:
        for port, extra in ((primary, ""), (replica, f"replicaof 127.0.0.1 {primary}\n")):
            d = tmp_path / str(port)
            d.mkdir()
            (d / "redis.conf").write_text(
                f"port {port}\nbind 127.0.0.1\ndir {d}\nsave \"\"\nappendonly no\nrequirepass {quoted}\n"
                f"masterauth {quoted}\nmin-replicas-to-write 1\nmin-replicas-max-lag 10\n"
                f"repl-diskless-sync-delay 0\n{extra}")
            procs.append(subprocess.Popen(["redis-server", str(d / "redis.conf")], stdout=subprocess.DEVNULL))
        conf = tmp_path / "sentinel.conf"
        conf.write_text(f"port {sentinel}\nbind 127.0.0.1\ndir {tmp_path}\nrequirepass {quoted}\n"
                        f"sentinel monitor psa-redis 127.0.0.1 {primary} 1\n"
                        f"sentinel auth-pass psa-redis {quoted}\n")
        procs.append(subprocess.Popen(["redis-server", str(conf), "--sentinel"], stdout=subprocess.DEVNULL))
        _until("the replica in sync", lambda: "master_link_status:up" in _cli(replica, "INFO", "replication"))
        _until("the Sentinel names the primary",
               lambda: _cli(sentinel, "SENTINEL", "get-master-addr-by-name", "psa-redis").split()
               == ["127.0.0.1", str(primary)])
        yield primary, replica, sentinel
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=10)


@pytest.mark.skipif(shutil.which("redis-server") is None or shutil.which("setsid") is None,
                    reason="redis-server (or setsid) not installed")
def test_the_writer_writes_both_ways_stops_when_asked_and_a_deleted_key_counts_lost(
        redis_set: tuple[int, int, int], tmp_path: Path) -> None:
    primary, _, sentinel = redis_set
    sentinels = [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{sentinel}"]  # the first answers nothing
    stdin = PASSWORD + "\n"
    launch = writes.writer_script(RUN, sentinels, rate=20, max_seconds=60, max_writes=1000,
                                  base=str(tmp_path))
    started = subprocess.run(["bash", "-c", launch], input=stdin, text=True, capture_output=True,
                             check=False, timeout=20)
    assert started.stdout.split() == ["started"], started.stderr
    d = Path(writes.run_dir(RUN, str(tmp_path)))
    _until("a few writes of each kind", lambda: (d / "out").read_text().count("OK") >= 10)
    subprocess.run(["bash", "-c", writes.stop_script(RUN, str(tmp_path))], check=True, timeout=10)
    _until("the writer stopped", lambda: (d / "done").exists())
    record = writes.parse_record(RUN, (d / "out").read_text())
    acked = {s: [w.key for w in record if w.store == s and w.acked] for s in writes.STORES}
    assert acked["wait"] and acked["nowait"], record
    assert all(w.primary == f"127.0.0.1:{primary}" for w in record)
    assert _cli(primary, "TTL", acked["wait"][0]).isdigit(), "the drill's keys expire"
    _cli(primary, "DEL", acked["wait"][0], acked["nowait"][-1])

    done = subprocess.run(["bash", "-c", writes.collect_script(RUN, sentinels, base=str(tmp_path))],
                          input=stdin, text=True, capture_output=True, check=False, timeout=60)
    got = writes.parse_collected(RUN, done.stdout)
    assert got.primary == f"127.0.0.1:{primary}" and got.held is not None, done.stdout[-2000:]
    losses = redis_losses(attempts_of(got.writes, 0.0), got.held)
    assert losses["with_wait"]["lost_keys"] == [acked["wait"][0]]
    assert losses["without_wait"]["lost_keys"] == [acked["nowait"][-1]]
    assert losses["with_wait"]["acknowledged"] == len(acked["wait"])
    assert not d.exists(), "collect removes the writer's directory"
