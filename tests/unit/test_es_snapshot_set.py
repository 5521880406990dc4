"""A backup set's Elasticsearch snapshot (services/elasticsearch/snapshot.py): the requests, the checks of
the answers, and the guest scripts run for real on local directories."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import pytest

# the stand-in's three-node cluster, each node with a path.repo of its own (tests/unit)
from test_es_standin_cluster import Proc, _conf, _free_ports, _holders, _wait, three  # noqa: F401

from psa_provision.errors import GuestError
from psa_provision.services.elasticsearch import BACKUP_DIR
from psa_provision.services.elasticsearch import snapshot as es

SET = "20261203T101500Z"


def test_each_set_has_a_location_and_snapshot_of_its_own_under_path_repo() -> None:
    assert es.location(SET) == f"{BACKUP_DIR}/sets/20261203t101500z"
    assert es.location("20261204T000000Z") != es.location(SET)
    assert es.name(SET) == "psa-20261203t101500z"  # Elasticsearch refuses uppercase snapshot names


def test_a_cluster_registers_without_verification_a_single_node_with_it() -> None:
    single = es.take_requests(SET, 1)
    cluster = es.take_requests(SET, 3)
    assert single[0][1] == "/_snapshot/psa-set"
    # the members' locations are not one shared filesystem: verification would refuse the repository
    assert cluster[0][1] == "/_snapshot/psa-set?verify=false"
    for requests in (single, cluster):
        assert requests[0][0] == "PUT" and requests[0][2] == {"type": "fs",
                                                             "settings": {"location": es.location(SET)}}
        method, path, body = requests[1]
        assert (method, path) == ("PUT", "/_snapshot/psa-set/psa-20261203t101500z?wait_for_completion=true")
        assert body == {"include_global_state": False}


def test_part_names_keep_one_file_per_member_in_a_cluster() -> None:
    assert es.part_name("psa-app", 1) == "repository.tar"
    names = {es.part_name(h, 3) for h in ("psa-es-1", "psa-es-2", "psa-es-3")}
    assert names == {"repository-psa-es-1.tar", "repository-psa-es-2.tar", "repository-psa-es-3.tar"}


def _answer(state: str, failed: int, indices: list[str]) -> str:
    return json.dumps({"snapshot": {"snapshot": es.name(SET), "state": state, "indices": indices,
                                    "shards": {"total": len(indices), "failed": failed,
                                               "successful": len(indices) - failed}}})


def test_only_a_successful_snapshot_with_no_failed_shard_is_a_backup() -> None:
    got = es.summary("psa-es-1", _answer("SUCCESS", 0, ["tickets", "assets"]), 3)
    assert got == {"snapshot": es.name(SET), "indices": ["assets", "tickets"], "shards": 2, "members": 3}
    with pytest.raises(GuestError, match="did not succeed"):
        es.summary("psa-es-1", _answer("PARTIAL", 1, ["tickets", "assets"]), 3)
    with pytest.raises(GuestError, match="did not succeed"):
        es.summary("psa-es-1", _answer("FAILED", 0, ["tickets"]), 3)


def test_a_restore_must_bring_back_every_index_of_the_snapshot() -> None:
    ok = json.dumps({"snapshot": {"indices": ["tickets", "assets"], "shards": {"failed": 0}}})
    assert es.restored("c", ok, ["assets", "tickets"]) == ["assets", "tickets"]
    short = json.dumps({"snapshot": {"indices": ["tickets"], "shards": {"failed": 0}}})
    with pytest.raises(GuestError, match="restore incomplete"):
        es.restored("c", short, ["assets", "tickets"])
    failed = json.dumps({"snapshot": {"indices": ["tickets"], "shards": {"failed": 1}}})
    with pytest.raises(GuestError, match="restore incomplete"):
        es.restored("c", failed, ["tickets"])


def _bash(script: str, root: Path) -> subprocess.CompletedProcess[str]:
    """The guest script with BACKUP_DIR moved under `root` (the same script, on a scratch directory)."""
    moved = script.replace(BACKUP_DIR, str(root / BACKUP_DIR.lstrip("/")))
    return subprocess.run(["bash", "-c", moved], capture_output=True, text=True, check=False)


def test_pack_tars_the_members_part_and_an_empty_tar_when_it_wrote_nothing(tmp_path: Path) -> None:
    loc = tmp_path / es.location(SET).lstrip("/")
    (loc / "indices" / "abc" / "0").mkdir(parents=True)
    (loc / "indices" / "abc" / "0" / "__blob").write_text("shard data")
    (loc / "index.latest").write_text("x")
    out = tmp_path / "part.tar"
    done = _bash(es.pack(SET, str(out)), tmp_path)
    assert done.returncode == 0, done.stderr
    with tarfile.open(out) as tar:
        assert {"./indices/abc/0/__blob", "./index.latest"} <= set(tar.getnames())

    other = tmp_path / "other"  # a member that wrote nothing: no location at all
    empty = tmp_path / "empty.tar"
    done = _bash(es.pack(SET, str(empty)), other)
    assert done.returncode == 0, done.stderr
    with tarfile.open(empty) as tar:
        assert tar.getnames() == []


def test_unpack_puts_every_part_into_one_directory() -> None:
    script = es.unpack(SET, ["/var/tmp/psa-restore/elasticsearch-repository-psa-es-1.tar",
                             "/var/tmp/psa-restore/elasticsearch-repository-psa-es-2.tar"])
    restore_dir = f"{BACKUP_DIR}/restore/20261203t101500z"
    assert script.count(f"tar -C {restore_dir} -xf ") == 2
    assert f"chown -R elasticsearch:elasticsearch {restore_dir}" in script
    assert subprocess.run(["bash", "-n", "-c", script], check=False).returncode == 0
    restore = es.restore_requests(SET)
    assert restore[0] == ("PUT", "/_snapshot/psa-set-restore",
                          {"type": "fs", "settings": {"location": restore_dir, "readonly": True}})
    assert restore[1][1] == ("/_snapshot/psa-set-restore/psa-20261203t101500z/_restore"
                             "?wait_for_completion=true")


def test_the_sets_requests_and_parts_restore_a_whole_cluster_on_one_node(three: list[Proc],  # noqa: F811
                                                                        tmp_path: Path) -> None:
    """The stand-in's three nodes, each with its own path.repo (as containers are): the set's requests
    through one member, every member's part packed, the parts unpacked into one directory, restored on a
    fresh single node with every document (the stand-in refuses a verified registration here)."""
    for node in three:
        _wait(node, "wait_for_nodes=3")
    docs = {"tickets": 4, "crm": 3, "assets": 5}
    for index, count in docs.items():
        assert three[0].call("PUT", f"/{index}")[0] == 200
        for i in range(count):
            assert three[i % 3].call("PUT", f"/{index}/_doc/d{i}", {"n": i})[0] == 201
    primaries = {n for i in docs for n, kind in _holders(three[0], i).items() if kind == "p"}
    assert len(primaries) > 1, "the primaries are spread: no single member holds the snapshot"

    def relative(body: object) -> object:  # the set's location, each node's own under its path.repo
        text = json.dumps(body).replace(f"{BACKUP_DIR}/", "")
        return json.loads(text)

    verified = es.take_requests(SET, 1)[0]
    status, refused = three[1].call(verified[0], verified[1], relative(verified[2]))
    assert status == 500 and refused["error"]["type"] == "repository_verification_exception"
    answers = [three[1].call(m, p, relative(b)) for m, p, b in es.take_requests(SET, 3)]
    assert [code for code, _ in answers] == [200, 200], answers
    detail = es.summary("es-2", json.dumps(answers[-1][1]), 3)
    assert detail["indices"] == sorted(docs)

    merged = tmp_path / "merged" / "sets" / SET.lower()
    merged.mkdir(parents=True)
    for node in three:
        part = tmp_path / f"{node.name}.tar"
        own = es.pack(SET, str(part)).replace(BACKUP_DIR, str(tmp_path / node.name / "repo"))
        packed = subprocess.run(["bash", "-c", own], capture_output=True, text=True, check=False)
        assert packed.returncode == 0, packed.stderr
        unpacked = subprocess.run(["tar", "-C", str(merged), "-xf", str(part)], check=False)
        assert unpacked.returncode == 0

    single = _conf(tmp_path / "single", "solo", _free_ports(1)[0], "discovery.type: single-node\n",
                   [tmp_path / "merged"])
    single.start()
    try:
        _wait(single, "wait_for_nodes=1")
        register, restore = es.restore_requests(SET)
        location = {"type": "fs", "settings": {"location": str(merged), "readonly": True}}
        assert single.call(register[0], register[1], location)[0] == 200
        status, body = single.call(restore[0], restore[1], restore[2])
        assert status == 200, body
        assert es.restored("solo", json.dumps(body), detail["indices"]) == sorted(docs)
        for index, count in docs.items():
            assert single.call("GET", f"/{index}/_count")[1]["count"] == count
    finally:
        single.stop()
