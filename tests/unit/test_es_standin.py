"""The Elasticsearch stand-in: config parsing, query and snapshot logic, and the real process over HTTP.

The process tests start `python3 -m es_standin` with only pvesim/ on PYTHONPATH (as in the guest:
stdlib only, no pvesim imports) on 127.0.0.1 with a free port and a temporary config/data dir.
"""

from __future__ import annotations

import json
import os
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

from pvesim.es_standin import config, query, repositories
from pvesim.es_standin.cluster import Member
from pvesim.es_standin.node import ClusterNode
from pvesim.es_standin.repositories import Repositories
from pvesim.es_standin.snapshots import Snapshots
from pvesim.es_standin.store import EsError, Store

PVESIM_DIR = Path(__file__).resolve().parents[2] / "pvesim"


# -- config ----------------------------------------------------------------------------------------
SEED_YML = """\
cluster.name: psa-platform
node.name: "psa-node-1"   # quoted, with a comment

# Network
network.host: 127.0.0.1
http.port: 9200
path.data: /var/lib/elasticsearch
path.repo: ["/opt/backups/es", '/mnt/other']
discovery.type: single-node
xpack.security.enabled: false
"""


def test_yaml_subset_reads_the_seed_config() -> None:
    values = config.parse_yaml_subset(SEED_YML)
    assert values["cluster.name"] == "psa-platform"
    assert values["node.name"] == "psa-node-1"
    assert values["path.repo"] == ["/opt/backups/es", "/mnt/other"]
    assert values["xpack.security.enabled"] == "false"


def test_yaml_subset_block_lists_and_nested_keys() -> None:
    text = "path:\n  data: /data\n  repo:\n    - /a\n    - /b\ncluster:\n  name: c1\n"
    assert config.parse_yaml_subset(text) == {
        "path.data": "/data",
        "path.repo": ["/a", "/b"],
        "cluster.name": "c1",
    }


def test_yaml_subset_rejects_garbage() -> None:
    with pytest.raises(config.ConfigError, match="cannot parse"):
        config.parse_yaml_subset("this is not yaml\n")


@pytest.mark.parametrize(
    ("texts", "expected"),
    [
        (["-Xms4g\n-Xmx4g\n"], {"Xms": 4 * 1024**3, "Xmx": 4 * 1024**3}),
        (["## -Xms4g\n17-:-Xmx512m\n"], {"Xmx": 512 * 1024**2}),
        (["-Xms1g\n-Xmx1g\n", "-Xms2g\n-Xmx2g\n"], {"Xms": 2 * 1024**3, "Xmx": 2 * 1024**3}),
        (["-XX:+UseG1GC\n-Xmx100k\n"], {"Xmx": 100 * 1024}),
    ],
)
def test_heap_options(texts: list[str], expected: dict[str, int]) -> None:
    assert config.parse_heap_options(texts) == expected


def test_jvm_options_d_is_read_in_order_after_jvm_options(tmp_path: Path) -> None:
    (tmp_path / "jvm.options").write_text("-Xms1g\n-Xmx1g\n")
    (tmp_path / "jvm.options.d").mkdir()
    (tmp_path / "jvm.options.d" / "b.options").write_text("-Xmx3g\n")
    (tmp_path / "jvm.options.d" / "a.options").write_text("-Xms2g\n-Xmx2g\n")
    (tmp_path / "jvm.options.d" / "ignored.txt").write_text("-Xmx9g\n")
    assert config.read_jvm_options(tmp_path) == {"Xms": 2 * 1024**3, "Xmx": 3 * 1024**3}


@pytest.mark.parametrize(
    ("size", "text"), [(4 * 1024**3, "4gb"), (512 * 1024**2, "512mb"), (1536 * 1024**2, "1.5gb"), (10, "10b")]
)
def test_format_bytes(size: int, text: str) -> None:
    assert config.format_bytes(size) == text


def test_settings_and_bootstrap_checks() -> None:
    values = config.parse_yaml_subset(SEED_YML + "path.logs: /logs\n")
    settings = config.settings_from(values, {"Xms": 1024**3, "Xmx": 2 * 1024**3})
    assert settings.http_port == 9200
    assert settings.path_repo == [Path("/opt/backups/es"), Path("/mnt/other")]
    assert settings.path_logs == Path("/logs")
    assert settings.heap_max == 2 * 1024**3
    errors = config.bootstrap_errors(settings)
    assert len(errors) == 1 and "initial heap size [1073741824] not equal to maximum heap size" in errors[0]
    equal = config.settings_from({"path.repo": "/x,/y"}, {"Xms": 1024**3, "Xmx": 1024**3})
    assert config.bootstrap_errors(equal) == []
    assert equal.path_repo == [Path("/x"), Path("/y")]


# -- queries ----------------------------------------------------------------------------------------
DOCS = [
    ("t", "1", {"title": "Printer is broken", "status": "open", "priority": 3, "customer": {"name": "Acme"}}),
    (
        "t",
        "2",
        {"title": "Email not working", "status": "closed", "priority": 1, "customer": {"name": "Globex"}},
    ),
    (
        "t",
        "3",
        {"title": "Printer toner low", "status": "open", "priority": 2, "tags": ["hardware", "printer"]},
    ),
]


@pytest.mark.parametrize(
    ("body", "ids"),
    [
        ({}, ["1", "2", "3"]),
        ({"query": {"match_all": {}}}, ["1", "2", "3"]),
        ({"query": {"match": {"title": "PRINTER"}}}, ["1", "3"]),
        ({"query": {"match": {"title": {"query": "printer broken", "operator": "and"}}}}, ["1"]),
        ({"query": {"multi_match": {"query": "acme", "fields": ["title", "customer.*"]}}}, ["1"]),
        ({"query": {"query_string": {"query": "status:closed"}}}, ["2"]),
        ({"query": {"query_string": {"query": "toner"}}}, ["3"]),
        ({"query": {"query_string": {"query": "print*"}}}, ["1", "3"]),
        ({"query": {"term": {"status.keyword": "open"}}}, ["1", "3"]),
        ({"query": {"terms": {"priority": [1, 3]}}}, ["1", "2"]),
        ({"query": {"range": {"priority": {"gte": 2}}}}, ["1", "3"]),
        (
            {
                "query": {
                    "bool": {
                        "must": [{"match": {"title": "printer"}}],
                        "must_not": [{"term": {"priority": 2}}],
                    }
                }
            },
            ["1"],
        ),
        (
            {"query": {"bool": {"filter": [{"term": {"status": "open"}}]}}, "sort": [{"priority": "asc"}]},
            ["3", "1"],
        ),
        (
            {"query": {"match_all": {}}, "sort": [{"priority": {"order": "desc"}}], "from": 1, "size": 1},
            ["3"],
        ),
        ({"query": {"exists": {"field": "tags"}}}, ["3"]),
    ],
)
def test_search(body: dict[str, Any], ids: list[str]) -> None:
    hits = query.search(DOCS, body, {})
    found = [hit["_id"] for hit in hits["hits"]]
    assert sorted(found) == sorted(ids) if "sort" not in body else found == ids
    if "from" not in body:
        assert hits["total"]["value"] == len(ids)


def test_search_scores_more_matching_tokens_higher() -> None:
    hits = query.search(DOCS, {"query": {"match": {"title": "printer broken"}}}, {})["hits"]
    assert [h["_id"] for h in hits] == ["1", "3"]
    assert hits[0]["_score"] > hits[1]["_score"]


def test_q_parameter_and_unknown_query() -> None:
    assert [h["_id"] for h in query.search(DOCS, {}, {"q": "email"})["hits"]] == ["2"]
    with pytest.raises(EsError) as err:
        query.search(DOCS, {"query": {"fuzzy_magic": {}}}, {})
    assert err.value.status == 400 and err.value.kind == "parsing_exception"


# -- store and snapshots ------------------------------------------------------------------------------
def test_documents_survive_a_reload(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.put_doc("tickets", "a/1", {"title": "x"})
    store.put_doc("tickets", "a/1", {"title": "y"})
    store.put_doc("tickets", "2", {"title": "z"})
    store.delete_doc("tickets", "2")
    again = Store(tmp_path)
    assert {i: d.source for i, d in again.get("tickets").docs.items()} == {"a/1": {"title": "y"}}
    assert again.get("tickets").docs["a/1"].version == 2


def test_index_names_are_validated(tmp_path: Path) -> None:
    with pytest.raises(EsError) as err:
        Store(tmp_path).create_index("Tickets")
    assert (err.value.status, err.value.kind) == (400, "invalid_index_name_exception")


def _single_node(tmp_path: Path, path_repo: list[Path]) -> tuple[Store, ClusterNode, Repositories]:
    """A single node (its own master) in-process, over the indices already on its disk."""
    store = Store(tmp_path / "data")
    settings = config.settings_from({"node.name": "node-1", "discovery.type": "single-node"}, {})
    node = ClusterNode(settings, store, Member("id-1", "node-1", "", "127.0.0.1:9200"), "uuid-1",
                       tmp_path / "data")
    return store, node, Repositories(node, Snapshots(path_repo))


def test_snapshot_location_must_be_under_path_repo(tmp_path: Path) -> None:
    _, _, repos = _single_node(tmp_path, [tmp_path / "repo"])
    with pytest.raises(EsError) as err:
        repos.put("backup", {"type": "fs", "settings": {"location": str(tmp_path / "elsewhere")}})
    assert (err.value.status, err.value.kind) == (500, "repository_exception")
    assert "doesn't match any of the locations specified by path.repo" in err.value.reason
    _, _, unset = _single_node(tmp_path / "other", [])
    with pytest.raises(EsError, match="because this setting is empty"):
        unset.put("backup", {"type": "fs", "settings": {"location": str(tmp_path / "repo")}}, verify=False)


def test_snapshot_and_restore(tmp_path: Path) -> None:
    Store(tmp_path / "data").put_doc("tickets", "1", {"title": "before"})
    store, node, repos = _single_node(tmp_path, [tmp_path / "repo"])
    repos.put("backup", {"type": "fs", "settings": {"location": "psa"}})  # relative: under path.repo
    info = repos.create("backup", "snap-1", {})
    assert info["state"] == "SUCCESS" and info["indices"] == ["tickets"]
    assert (tmp_path / "repo" / "psa" / "snap-1" / "snapshot.json").is_file()
    assert (tmp_path / "repo" / "psa" / "snap-1" / "indices" / "tickets.json").is_file()
    store.put_doc("tickets", "1", {"title": "after"})
    with pytest.raises(EsError) as err:
        repos.restore("backup", "snap-1", {})
    assert err.value.status == 500 and "open index with same name already exists" in err.value.reason
    node.master_call("delete_index", {"index": "tickets"})
    assert repos.restore("backup", "snap-1", {"indices": "tickets"})["indices"] == ["tickets"]
    assert store.get("tickets").docs["1"].source == {"title": "before"}
    assert node.state["indices"]["tickets"]["in_sync"] == ["id-1"]  # the restored copy is the primary
    renamed = repos.restore(
        "backup", "snap-1", {"rename_pattern": "(.+)", "rename_replacement": "restored-$1"}
    )
    assert renamed["indices"] == ["restored-tickets"]
    assert [s["snapshot"] for s in repos.snapshots_of("backup", "_all")["snapshots"]] == ["snap-1"]
    with pytest.raises(EsError) as missing:
        repos.snapshots_of("backup", "nope")
    assert missing.value.kind == "snapshot_missing_exception"


def test_a_repository_is_kept_in_the_cluster_state_and_verified_with_probes_that_go(tmp_path: Path) -> None:
    _, node, repos = _single_node(tmp_path, [tmp_path / "repo"])
    repos.put("backup", {"type": "fs", "settings": {"location": "psa"}})
    assert node.state["repositories"]["backup"]["settings"]["location"] == "psa"
    assert list((tmp_path / "repo" / "psa").iterdir()) == []  # tests-<seed>/*.dat removed
    assert repos.verify("backup") == {"nodes": {"id-1": {"name": "node-1"}}}
    _, _, again = _single_node(tmp_path, [tmp_path / "repo"])  # a restart reads the persisted state
    assert again.get(None) == {"backup": {"type": "fs", "settings": {"location": "psa"}}}
    again.delete("backup")
    with pytest.raises(EsError) as err:
        again.get("backup")
    assert (err.value.status, err.value.kind) == (404, "repository_missing_exception")


def test_repositories_of_a_node_from_before_the_cluster_state_held_them(tmp_path: Path) -> None:
    legacy = {"psa": {"type": "fs", "settings": {"location": "/opt/backups/es"}}}
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "repositories.json").write_text(json.dumps(legacy))
    assert _single_node(tmp_path, [tmp_path / "repo"])[2].get("_all") == legacy


def test_restore_names_the_index_file_the_location_lacks(tmp_path: Path) -> None:
    Store(tmp_path / "data").put_doc("tickets", "1", {"title": "x"})
    _, node, repos = _single_node(tmp_path, [tmp_path / "repo"])
    repos.put("backup", {"type": "fs", "settings": {"location": "psa"}})
    repos.create("backup", "snap-1", {})
    node.master_call("delete_index", {"index": "tickets"})
    lost = tmp_path / "repo" / "psa" / "snap-1" / "indices" / "tickets.json"
    lost.unlink()  # as when another node wrote it into its own directory
    with pytest.raises(EsError) as err:
        repos.restore("backup", "snap-1", {})
    assert (err.value.status, err.value.kind) == (500, "snapshot_restore_exception")
    assert str(lost) in err.value.reason
    assert err.value.body()["error"]["caused_by"] == {"type": "no_such_file_exception", "reason": str(lost)}
    assert "tickets" not in node.state["indices"]


def test_a_node_that_cannot_see_the_masters_probe_fails_verification(tmp_path: Path) -> None:
    master, other = Snapshots([tmp_path / "m"]), Snapshots([tmp_path / "o"])
    entry = {"type": "fs", "settings": {"location": "psa"}}
    root = master.location("backup", entry)
    seed = master.start_verification("backup", root)
    assert (root / f"tests-{seed}" / "master.dat").read_text() == seed
    master.verify("backup", root, seed, "id-m", "{m}")  # the master sees its own file
    node = "{es-2}{id-o}{10.0.0.2}{10.0.0.2:9300}"
    with pytest.raises(EsError) as err:
        other.verify("backup", other.location("backup", entry), seed, "id-o", node)
    assert (err.value.status, err.value.kind) == (500, "repository_verification_exception")
    store = tmp_path / "o" / "psa"
    assert err.value.reason == (
        f"[backup] a file written by master to the store [{store}] cannot be accessed on the node [{node}]. "
        f"This might indicate that the store [{store}] is not shared between this node and the master node "
        "or that permissions on the store don't allow reading files written by the master node")
    assert list((tmp_path / "o" / "psa").iterdir()) == []  # its own probe removed
    shared = Snapshots([tmp_path / "m"])  # another node with the same (shared) directory
    shared.verify("backup", shared.location("backup", entry), seed, "id-s", "{s}")
    assert sorted(p.name for p in (root / f"tests-{seed}").iterdir()) == ["data-id-m.dat", "data-id-s.dat",
                                                                         "master.dat"]
    master.end_verification(root, seed)
    assert list(root.iterdir()) == []


def test_verification_failures_are_reported_per_node_as_elasticsearch_does() -> None:
    member = Member("id-b", "es-b", "10.0.30.42:9300", "10.0.30.42:9200")
    cause = EsError(500, "repository_verification_exception", "[psa] cannot be accessed")
    remote = repositories.verification_cause(cause, member, remote=True)
    assert remote == ("RemoteTransportException[[es-b][10.0.30.42:9300][internal:admin/repository/verify]]; "
                      "nested: RepositoryVerificationException[[psa] cannot be accessed];")
    err = repositories.verification_failed("psa", [("id-b", remote), ("id-c", "X[y]")])
    assert (err.status, err.kind) == (500, "repository_verification_exception")
    assert err.reason == f"[psa] [[id-b, '{remote}'], [id-c, 'X[y]']]"
    assert repositories.describe(member) == "{es-b}{id-b}{10.0.30.42}{10.0.30.42:9300}"


# -- the real process --------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Node:
    base: str
    root: Path
    process: subprocess.Popen[bytes]

    def call(self, method: str, path: str, body: Any = None, ndjson: str | None = None) -> tuple[int, Any]:
        data = (
            ndjson.encode()
            if ndjson is not None
            else (json.dumps(body).encode() if body is not None else None)
        )
        request = urllib.request.Request(  # noqa: S310 (http on loopback only)
            self.base + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (loopback)
                assert response.headers["X-Elastic-Product"] == "Elasticsearch"
                raw = response.read()
                status = response.status
        except urllib.error.HTTPError as err:
            raw, status = err.read(), err.code
        text = raw.decode()
        return status, (json.loads(text) if text.startswith(("{", "[")) else text)


def _write_config(
    root: Path, port: int, heap: tuple[str, str] = ("256m", "256m"), host: str = "127.0.0.1"
) -> Path:
    conf = root / "conf"
    (conf / "jvm.options.d").mkdir(parents=True, exist_ok=True)
    (conf / "elasticsearch.yml").write_text(
        f"cluster.name: psa-test\nnode.name: node-1\nnetwork.host: {host}\nhttp.port: {port}\n"
        f'path.data: {root / "data"}\npath.logs: {root / "logs"}\npath.repo: ["{root / "repo"}"]\n'
        "discovery.type: single-node\n"
    )
    (conf / "jvm.options.d" / "heap.options").write_text(f"-Xms{heap[0]}\n-Xmx{heap[1]}\n")
    return conf


def _spawn(conf: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "ES_PATH_CONF": str(conf), "PYTHONPATH": str(PVESIM_DIR)}
    return subprocess.Popen(
        [sys.executable, "-m", "es_standin"],
        env=env,
        cwd=conf,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _wait_ready(node: Node) -> None:
    deadline = time.monotonic() + 15
    while True:
        assert node.process.poll() is None, node.process.stdout.read().decode() if node.process.stdout else ""
        try:
            if node.call("GET", "/")[0] == 200:
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, "stand-in did not answer GET / within 15s"
        time.sleep(0.05)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    port = _free_port()
    conf = _write_config(tmp_path, port)
    running = Node(f"http://127.0.0.1:{port}", tmp_path, _spawn(conf))
    _wait_ready(running)
    yield running
    _stop(running.process)


def test_banner_health_and_nodes(node: Node) -> None:
    status, banner = node.call("GET", "/")
    assert status == 200
    assert banner["version"]["number"] == config.ES_VERSION and "STAND-IN" in banner["tagline"]
    assert "STAND-IN" in banner["standin"] and banner["version"]["build_flavor"] == "stand-in"
    assert node.call("GET", "/_cluster/health")[1]["status"] == "green"
    assert node.call("GET", "/_cat/nodes?format=json&h=name,heap.max")[1] == [
        {"name": "node-1", "heap.max": "256mb"}
    ]
    assert "node-1" in node.call("GET", "/_cat/nodes?v")[1]
    raw = node.call("GET", "/_cat/nodes?h=heap.max&format=json&bytes=b")[1]  # what the verify suite asks
    assert raw == [{"heap.max": str(256 * 1024**2)}]
    assert (node.root / "logs" / "psa-test.log").read_text().count("started") == 1


def test_documents_and_search(node: Node) -> None:
    assert node.call("PUT", "/tickets", {"mappings": {"properties": {"title": {"type": "text"}}}})[0] == 200
    assert node.call("PUT", "/tickets")[1]["error"]["type"] == "resource_already_exists_exception"
    assert node.call("HEAD", "/tickets")[0] == 200 and node.call("HEAD", "/nope")[0] == 404
    assert node.call("PUT", "/tickets/_doc/1", {"title": "Printer broken"})[0] == 201
    status, created = node.call("POST", "/tickets/_doc", {"title": "Email down"})
    assert status == 201 and created["result"] == "created"
    bulk = (
        '{"index":{"_index":"tickets","_id":"3"}}\n{"title":"printer toner"}\n'
        '{"delete":{"_index":"tickets","_id":"1"}}\n'
    )
    status, result = node.call("POST", "/_bulk", ndjson=bulk)
    assert (
        status == 200
        and result["errors"] is False
        and [i.get("index", i.get("delete"))["status"] for i in result["items"]] == [201, 200]
    )
    bad = node.call("POST", "/_bulk", ndjson='{"index":{"_index":"tickets"}}\nnot json\n')
    assert bad[0] == 400 and bad[1]["error"]["type"] == "illegal_argument_exception"
    assert node.call("POST", "/tickets/_refresh")[0] == 200
    search = node.call("POST", "/tickets/_search", {"query": {"match": {"title": "printer"}}})[1]
    assert [h["_id"] for h in search["hits"]["hits"]] == ["3"] and search["hits"]["total"]["value"] == 1
    assert node.call("GET", "/tickets/_count")[1]["count"] == 2
    assert node.call("GET", f"/tickets/_doc/{created['_id']}")[1]["_source"] == {"title": "Email down"}
    assert node.call("GET", "/tickets/_doc/1")[0] == 404
    assert node.call("PUT", "/tickets/_doc/a%2Fb%20c", {"title": "escaped id"})[1]["_id"] == "a/b c"
    assert node.call("GET", "/tickets/_doc/a%2Fb%20c")[1]["_source"] == {"title": "escaped id"}
    status, missing = node.call("GET", "/nope/_search")
    assert status == 404 and missing["error"]["type"] == "index_not_found_exception"
    indices = node.call("GET", "/_cat/indices?format=json")[1]
    # one node cannot hold the replica Elasticsearch 8 gives every index by default: yellow
    assert [(i["index"], i["docs.count"], i["health"]) for i in indices] == [("tickets", "3", "yellow")]
    assert node.call("GET", "/_cluster/health")[1]["status"] == "yellow"
    assert node.call("PUT", "/solo", {"settings": {"number_of_replicas": 0}})[0] == 200
    assert node.call("GET", "/_cluster/health/solo")[1]["status"] == "green"
    assert node.call("DELETE", "/tickets")[1] == {"acknowledged": True}
    assert node.call("DELETE", "/tickets")[0] == 404


def test_snapshot_restore_over_http_and_restart(node: Node) -> None:
    node.call("PUT", "/crm/_doc/c1", {"name": "Acme"})
    bad = node.call("PUT", "/_snapshot/psa", {"type": "fs", "settings": {"location": "/tmp/not-path-repo"}})
    assert bad[0] == 500 and bad[1]["error"]["type"] == "repository_exception"
    location = str(node.root / "repo" / "psa")
    assert node.call("PUT", "/_snapshot/psa", {"type": "fs", "settings": {"location": location}})[0] == 200
    assert node.call("GET", "/_snapshot/psa")[1]["psa"]["settings"]["location"] == location
    status, snap = node.call("PUT", "/_snapshot/psa/nightly?wait_for_completion=true")
    assert status == 200 and snap["snapshot"]["state"] == "SUCCESS" and snap["snapshot"]["indices"] == ["crm"]
    assert node.call("GET", "/_snapshot/psa/_all")[1]["snapshots"][0]["snapshot"] == "nightly"
    assert node.call("POST", "/_snapshot/psa/nightly/_restore")[0] == 500
    node.call("DELETE", "/crm")
    assert node.call("POST", "/_snapshot/psa/nightly/_restore?wait_for_completion=true")[0] == 200
    assert node.call("GET", "/crm/_doc/c1")[1]["_source"] == {"name": "Acme"}
    _stop(node.process)
    node.process = _spawn(node.root / "conf")
    _wait_ready(node)
    assert node.call("GET", "/crm/_doc/c1")[1]["_source"] == {"name": "Acme"}
    assert "psa" in node.call("GET", "/_snapshot")[1]


@pytest.mark.parametrize(
    ("heap", "host", "message"),
    [
        (("256m", "512m"), "127.0.0.1", "bootstrap check failure [1] of [1]: initial heap size"),
        (("256m", "256m"), "192.0.2.123", "BindHttpException"),  # TEST-NET-1: not an address of this machine
    ],
)
def test_refuses_to_start(tmp_path: Path, heap: tuple[str, str], host: str, message: str) -> None:
    process = _spawn(_write_config(tmp_path, _free_port(), heap, host))
    output = process.communicate(timeout=15)[0].decode()
    assert process.returncode == 1
    assert message in output
    assert message in (tmp_path / "logs" / "psa-test.log").read_text()


def test_network_host_list_binds_every_address(tmp_path: Path) -> None:
    """`network.host: [a, b]` serves on each address (127.0.0.2 is loopback too on Linux)."""
    port = _free_port()
    conf = _write_config(tmp_path, port, host='["127.0.0.1", "127.0.0.2"]')
    node = Node(f"http://127.0.0.1:{port}", tmp_path, _spawn(conf))
    try:
        _wait_ready(node)
        second = Node(f"http://127.0.0.2:{port}", tmp_path, node.process)
        assert second.call("GET", "/_cluster/health")[1]["cluster_name"] == "psa-test"
    finally:
        _stop(node.process)
