"""The Elasticsearch stand-in as a 3-node cluster: membership, election, allocation, health (pure), then
three real processes on loopback that form a cluster through their seed hosts and lose members, and
snapshot into repositories that are, or are not, shared between them.

Expected values come from Elasticsearch's documented behaviour: a master needs a majority of the voting
configuration; an index has 1 replica by default; health is red when a primary has no copy, yellow
when a replica is unassigned, green otherwise; a document acknowledged survives the loss of a node; a
repository is registered cluster-wide and verified on every master/data node (an fs location must be
a filesystem shared by all of them); each primary's node writes its shard data into the repository
as it sees it, the master the snapshot's metadata.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pvesim.es_standin import cluster
from pvesim.es_standin.cluster import Member

PVESIM_DIR = Path(__file__).resolve().parents[2] / "pvesim"
A, B, C = (Member(f"id-{n}", f"es-{n}", f"10.0.30.4{i}:9300", f"10.0.30.4{i}:9200")
           for i, n in enumerate("abc"))


# -- membership and election ---------------------------------------------------------------------------
def test_members_are_the_nodes_heard_from_within_the_timeout() -> None:
    assert cluster.live_ids({"a": 100.0, "b": 98.0, "c": 90.0}, now=100.5, timeout=3.0) == {"a", "b"}


def test_bootstrap_needs_a_majority_of_initial_master_nodes() -> None:
    names = ["es-a", "es-b", "es-c"]
    assert cluster.bootstrap_voting(names, [A]) is None
    assert cluster.bootstrap_voting(names, [A, B]) == ["id-a", "id-b", "{bootstrap-placeholder}-es-c"]
    assert cluster.bootstrap_voting([], [A, B, C]) is None  # no initial_master_nodes: never bootstraps


def test_a_joining_node_takes_its_placeholder_and_nobody_is_dropped() -> None:
    voting = ["id-a", "id-b", "{bootstrap-placeholder}-es-c"]
    assert cluster.adjust_voting(voting, [A, C]) == ["id-a", "id-b", "id-c"]
    assert cluster.adjust_voting(["id-a"], [A, B, C]) == ["id-a", "id-b", "id-c"]


@pytest.mark.parametrize(
    ("live", "master"),
    [([A, B, C], "es-a"), ([B, C], "es-b"), ([C, B], "es-b"), ([A], None), ([C], None)],
)
def test_master_needs_a_quorum_and_is_the_same_for_everyone(live: list[Member], master: str | None) -> None:
    elected = cluster.elect(["id-a", "id-b", "id-c"], live)
    assert (elected.name if elected else None) == master


def test_a_node_outside_the_voting_configuration_is_never_master() -> None:
    outsider = Member("id-0", "es-0", "x:9300", "x:9200")
    assert cluster.elect(["id-a", "id-b", "id-c"], [outsider, B, C]).name == "es-b"  # type: ignore[union-attr]
    voter_only = Member("id-d", "es-d", "y:9300", "y:9200", roles=("data",))
    assert cluster.elect(["id-d"], [voter_only]) is None


# -- allocation and health -------------------------------------------------------------------------------
DATA = {"id-a": "es-a", "id-b": "es-b", "id-c": "es-c"}


def _index(in_sync: list[str], initializing: list[str] | None = None,
           replicas: int | None = None) -> dict[str, Any]:
    settings = {} if replicas is None else {"number_of_replicas": replicas}
    return {"uuid": "u", "created": 0, "settings": settings, "mappings": {}, "closed": False,
            "in_sync": in_sync, "initializing": initializing or []}


def test_a_new_index_gets_a_primary_and_one_replica_on_the_least_loaded_nodes() -> None:
    indices = {"t1": _index(["id-a", "id-b"])}
    assert cluster.allocate_new(indices, 1, DATA) == ["id-c", "id-a"]
    assert cluster.allocate_new({}, 0, DATA) == ["id-a"]


def test_losing_the_primary_promotes_the_replica_and_a_new_replica_initializes() -> None:
    live = {"id-b": "es-b", "id-c": "es-c"}
    after = cluster.reconcile({"t": _index(["id-a", "id-b"])}, live)["t"]
    assert after["in_sync"] == ["id-b"] and after["initializing"] == ["id-c"]
    assert cluster.primary(after, live) == "id-b"
    assert cluster.index_health(after, live)["status"] == "yellow"


def test_losing_the_only_copy_is_red_until_its_node_returns() -> None:
    live = {"id-b": "es-b", "id-c": "es-c"}
    after = cluster.reconcile({"solo": _index(["id-a"], replicas=0)}, live)["solo"]
    assert after["in_sync"] == ["id-a"] and after["initializing"] == []
    assert cluster.index_health(after, live) == {"status": "red", "primaries": 0, "active": 0,
                                                 "initializing": 0, "unassigned": 1, "replicas": 0}
    back = cluster.reconcile({"solo": after}, DATA)["solo"]
    assert cluster.index_health(back, DATA)["status"] == "green"


@pytest.mark.parametrize(
    ("indices", "live", "status", "counts"),
    [
        ({"t": _index(["id-a", "id-b"])}, DATA, "green", (1, 2, 0, 0)),
        ({"t": _index(["id-a"], ["id-b"])}, DATA, "yellow", (1, 1, 1, 0)),
        ({"t": _index(["id-a", "id-b"])}, {"id-a": "es-a"}, "yellow", (1, 1, 0, 1)),
        ({"t": _index(["id-a", "id-b"]), "solo": _index(["id-c"], replicas=0)}, {"id-a": "es-a"}, "red",
         (1, 1, 0, 2)),
        ({}, DATA, "green", (0, 0, 0, 0)),
    ],
)
def test_cluster_health(indices: dict[str, Any], live: dict[str, str], status: str,
                        counts: tuple[int, int, int, int]) -> None:
    health = cluster.cluster_health(indices, live)
    assert health["status"] == status
    assert (health["active_primary_shards"], health["active_shards"], health["initializing_shards"],
            health["unassigned_shards"]) == counts


def test_replicas_setting_forms() -> None:
    assert cluster.replicas_of({"settings": {}}) == 1
    assert cluster.replicas_of({"settings": {"index": {"number_of_replicas": "0"}}}) == 0
    assert cluster.replicas_of({"settings": {"index.number_of_replicas": 2}}) == 2


# -- three real processes on loopback ------------------------------------------------------------------
def _free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for sock in socks:
            sock.close()


@dataclass
class Proc:
    name: str
    http: int
    conf: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "ES_PATH_CONF": str(self.conf), "PYTHONPATH": str(PVESIM_DIR)}
        self.process = subprocess.Popen([sys.executable, "-m", "es_standin"], env=env, cwd=self.conf,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http}{path}", data=data, method=method,
            headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=40) as response:  # noqa: S310 (loopback)
                raw, status = response.read(), response.status
        except urllib.error.HTTPError as err:
            raw, status = err.read(), err.code
        text = raw.decode()
        return status, (json.loads(text) if text.startswith(("{", "[")) else text)


def _wait(proc: Proc, query: str) -> dict[str, Any]:
    """GET /_cluster/health?<query>: the stand-in waits (up to 30s) like Elasticsearch; 200 = reached."""
    deadline = time.monotonic() + 40
    while True:
        try:
            status, body = proc.call("GET", f"/_cluster/health?{query}&timeout=30s")
            if status == 200:
                return dict(body)
        except OSError:
            status, body = 0, "no answer"
        assert time.monotonic() < deadline, f"{proc.name}: {query} not reached: {status} {body}"
        time.sleep(0.2)


def _conf(root: Path, name: str, http: int, cluster_lines: str, path_repo: list[Path]) -> Proc:
    conf = root / "conf"
    (conf / "jvm.options.d").mkdir(parents=True)
    repos = ", ".join(f'"{p}"' for p in path_repo)
    (conf / "elasticsearch.yml").write_text(
        f"cluster.name: psa-test\nnode.name: {name}\nnetwork.host: 127.0.0.1\nhttp.port: {http}\n"
        f"{cluster_lines}path.data: {root / 'data'}\npath.logs: {root / 'logs'}\npath.repo: [{repos}]\n")
    (conf / "jvm.options.d" / "heap.options").write_text("-Xms256m\n-Xmx256m\n")
    return Proc(name, http, conf)


@pytest.fixture
def three(tmp_path: Path) -> Iterator[list[Proc]]:
    """es-1..3; path.repo: each its own <node>/repo (first: relative locations resolve there, as on a
    container's own disk) and tmp/shared (a directory all three see, as a shared filesystem)."""
    ports = _free_ports(6)
    seeds = ", ".join(f'"127.0.0.1:{p}"' for p in ports[3:])
    procs = []
    for i, name in enumerate(("es-1", "es-2", "es-3")):
        lines = (f"transport.port: {ports[3 + i]}\ndiscovery.seed_hosts: [{seeds}]\n"
                 'cluster.initial_master_nodes: ["es-1", "es-2", "es-3"]\n')
        procs.append(_conf(tmp_path / name, name, ports[i], lines, [tmp_path / name / "repo",
                                                                    tmp_path / "shared"]))
    try:
        for proc in procs:
            proc.start()
        yield procs
    finally:
        for proc in procs:
            proc.stop()


def _holders(proc: Proc, index: str) -> dict[str, str]:
    rows = proc.call("GET", f"/_cat/shards/{index}?format=json")[1]
    return {row["node"]: row["prirep"] for row in rows if row["state"] == "STARTED"}


def test_three_nodes_form_a_cluster_replicate_and_survive_the_loss_of_one(three: list[Proc]) -> None:
    for proc in three:
        assert _wait(proc, "wait_for_nodes=3")["number_of_nodes"] == 3
    nodes = three[0].call("GET", "/_cat/nodes?format=json&h=name,master")[1]
    assert sorted(n["name"] for n in nodes) == ["es-1", "es-2", "es-3"]
    assert [n["master"] for n in nodes].count("*") == 1
    assert len(three[1].call("GET", "/_nodes")[1]["nodes"]) == 3

    assert three[1].call("PUT", "/tickets", {"settings": {"number_of_replicas": 1}})[0] == 200
    for i in range(12):  # through every member
        assert three[i % 3].call("PUT", f"/tickets/_doc/t{i}", {"n": i})[0] == 201
    assert _wait(three[2], "wait_for_status=green")["active_shards"] == 2
    holders = _holders(three[0], "tickets")
    assert sorted(holders.values()) == ["p", "r"]

    primary = next(p for p in three if holders.get(p.name) == "p")
    primary.stop()
    left = [p for p in three if p is not primary]
    for proc in left:  # each member notices the loss on its own (no heartbeat within the timeout)
        assert _wait(proc, "wait_for_nodes=2")["number_of_nodes"] == 2
    health = _wait(left[1], "wait_for_nodes=2&wait_for_status=green")  # replica promoted, a new one recovered
    assert (health["number_of_nodes"], health["active_shards"]) == (2, 2)
    for proc in left:
        assert proc.call("GET", "/tickets/_count")[1]["count"] == 12
        assert proc.call("GET", "/tickets/_doc/t5")[1]["_source"] == {"n": 5}
    assert left[0].call("PUT", "/tickets/_doc/after", {"n": 99})[0] == 201
    assert left[1].call("GET", "/tickets/_doc/after")[1]["found"] is True


def test_health_turns_red_when_an_index_loses_its_only_copy_and_no_quorum_means_no_master(
        three: list[Proc]) -> None:
    for proc in three:
        _wait(proc, "wait_for_nodes=3")
    assert three[0].call("PUT", "/solo", {"settings": {"index": {"number_of_replicas": 0}}})[0] == 200
    assert three[0].call("PUT", "/solo/_doc/1", {"x": 1})[0] == 201
    holder = next(p for p in three if p.name in _holders(three[0], "solo"))
    holder.stop()
    left = [p for p in three if p is not holder]
    health = _wait(left[0], "wait_for_nodes=2")
    _wait(left[1], "wait_for_nodes=2")
    assert health["status"] == "red" and health["unassigned_shards"] >= 1
    assert left[1].call("GET", "/solo/_doc/1")[0] == 503
    left[1].stop()
    status, body = left[0].call("GET", "/_cluster/health")
    deadline = time.monotonic() + 30
    while status == 200 and time.monotonic() < deadline:  # until the lost member times out
        time.sleep(0.2)
        status, body = left[0].call("GET", "/_cluster/health")
    assert status == 503 and body["error"]["type"] == "master_not_discovered_exception"


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_a_snapshot_into_each_nodes_own_directory_is_split_between_them(three: list[Proc],
                                                                        tmp_path: Path) -> None:
    for proc in three:
        _wait(proc, "wait_for_nodes=3")
    master = next(n["name"] for n in three[0].call("GET", "/_cat/nodes?format=json&h=name,master")[1]
                  if n["master"] == "*")
    docs = {"crm": 3, "tickets": 4, "audit": 5}
    for name, count in docs.items():
        assert three[0].call("PUT", f"/{name}")[0] == 200
        for i in range(count):
            assert three[i % 3].call("PUT", f"/{name}/_doc/d{i}", {"n": i})[0] == 201
    primaries = {index: next(node for node, kind in _holders(three[0], index).items() if kind == "p")
                 for index in docs}
    assert len(set(primaries.values())) == 3  # one primary on each node

    own = {"type": "fs", "settings": {"location": "psa"}}  # the same setting; each node's own directory
    status, body = three[1].call("PUT", "/_snapshot/local", own)
    assert status == 500 and body["error"]["type"] == "repository_verification_exception"
    reason = body["error"]["reason"]
    assert reason.startswith("[local] [[") and reason.count("internal:admin/repository/verify") == 2
    assert reason.count("is not shared between this node and the master node") == 2
    for proc in three:
        assert proc.call("GET", "/_snapshot")[1] == {}
        assert _files(tmp_path / proc.name / "repo") == []  # every probe removed

    assert three[1].call("PUT", "/_snapshot/local?verify=false", own)[0] == 200
    for proc in three:  # registered cluster-wide
        assert proc.call("GET", "/_snapshot/local")[1] == {"local": own}
    status, body = three[2].call("POST", "/_snapshot/local/_verify")
    assert status == 500 and body["error"]["type"] == "repository_verification_exception"

    status, snap = three[2].call("PUT", "/_snapshot/local/nightly?wait_for_completion=true")
    assert status == 200 and snap["snapshot"]["state"] == "SUCCESS"
    assert sorted(snap["snapshot"]["indices"]) == sorted(docs)
    for proc in three:
        expected = [f"nightly/indices/{i}.json" for i, node in sorted(primaries.items()) if node == proc.name]
        if proc.name == master:
            expected += ["index.latest", "nightly/snapshot.json"]
        assert _files(tmp_path / proc.name / "repo" / "psa") == sorted(expected)
    listed = three[0].call("GET", "/_snapshot/local/_all")[1]
    assert [s["snapshot"] for s in listed["snapshots"]] == ["nightly"]  # the master's listing

    merged = tmp_path / "merged"  # the three directories copied into one, onto a fresh single node
    for proc in three:
        shutil.copytree(tmp_path / proc.name / "repo" / "psa", merged / "psa", dirs_exist_ok=True)
    single = _conf(tmp_path / "single", "solo", _free_ports(1)[0], "discovery.type: single-node\n", [merged])
    single.start()
    try:
        _wait(single, "wait_for_nodes=1")
        assert single.call("PUT", "/_snapshot/copy", own)[0] == 200
        assert single.call("POST", "/_snapshot/copy/nightly/_restore?wait_for_completion=true")[0] == 200
        for name, count in docs.items():
            assert single.call("GET", f"/{name}/_count")[1]["count"] == count
    finally:
        single.stop()

    shared = {"type": "fs", "settings": {"location": str(tmp_path / "shared" / "psa")}}
    assert three[0].call("PUT", "/_snapshot/shared", shared)[0] == 200
    assert three[1].call("POST", "/_snapshot/shared/_verify")[1]["nodes"].keys() == set(
        three[0].call("GET", "/_nodes")[1]["nodes"])
    assert three[0].call("PUT", "/_snapshot/shared/nightly?wait_for_completion=true")[0] == 200
    assert _files(tmp_path / "shared" / "psa") == sorted(
        ["index.latest", "nightly/snapshot.json", *(f"nightly/indices/{i}.json" for i in docs)])
    rename = {"rename_pattern": "(.+)", "rename_replacement": "restored-$1"}
    status, restored = three[2].call("POST", "/_snapshot/shared/nightly/_restore?wait_for_completion=true",
                                     rename)
    assert status == 200 and sorted(restored["snapshot"]["indices"]) == sorted(f"restored-{i}" for i in docs)
    placed = {next(node for node, kind in _holders(three[0], f"restored-{i}").items() if kind == "p")
              for i in docs}
    assert len(placed) > 1  # spread over the nodes: each read its index from its own view of the repository
    for proc in three:
        for name, count in docs.items():
            assert proc.call("GET", f"/restored-{name}/_count")[1]["count"] == count

    copy = {"rename_pattern": "(.+)", "rename_replacement": "copy-$1"}  # a node lacks another's index file
    status, body = three[0].call("POST", "/_snapshot/local/nightly/_restore?wait_for_completion=true", copy)
    assert status == 500 and body["error"]["type"] == "snapshot_restore_exception"
    assert body["error"]["caused_by"]["type"] == "no_such_file_exception"

    assert three[1].call("DELETE", "/_snapshot/local")[0] == 200
    for proc in three:
        assert sorted(proc.call("GET", "/_snapshot")[1]) == ["shared"]
