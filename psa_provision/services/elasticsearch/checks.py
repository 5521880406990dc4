"""Elasticsearch's verify checks (seed: "Install Elasticsearch"): cluster health and name, the heap the seed
sets (scaled to the container), loopback."""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

import pytest

from psa_provision.suites.checks import listening_ports, loopback_only, output, size_bytes

HEAP_OPTIONS = "/etc/elasticsearch/jvm.options.d/heap.options"

def es_get(host: Any, path: str) -> Any:
    url = shlex.quote("http://127.0.0.1:9200" + path)
    return json.loads(output(host, f"curl -sSf --max-time 10 {url}", f"GET :9200{path}"))


@pytest.mark.component("elasticsearch")
def test_elasticsearch_healthy_with_cluster_name(host: Any, expected: dict[str, Any]) -> None:
    health = es_get(host, "/_cluster/health")
    assert health.get("status") in ("green", "yellow"), f"cluster health is {health.get('status')!r}"
    want = expected.get("elasticsearch", {}).get("cluster_name")
    assert want, "no seed cluster name in the verify context"
    found = health.get("cluster_name")
    assert found == want, f"cluster_name is {found!r}, want {want!r}"


@pytest.mark.component("elasticsearch")
def test_elasticsearch_heap_and_loopback(host: Any, expected: dict[str, Any]) -> None:
    nodes = es_get(host, "/_cat/nodes?h=name,heap.max&format=json&bytes=b")
    if expected.get("elasticsearch", {}).get("members"):  # a cluster member is named after its container
        name = host.backend.get_hostname()
        nodes = [n for n in nodes if n.get("name") == name]
        assert nodes, f"_cat/nodes does not list this member ({name})"
    heap = int(nodes[0]["heap.max"])
    options = host.file(HEAP_OPTIONS)
    assert options.exists, f"{HEAP_OPTIONS} is missing"
    xmx = re.findall(r"^-Xmx(\S+)$", options.content_string, re.MULTILINE)
    assert xmx, f"no -Xmx line in {HEAP_OPTIONS}"
    # the seed's heap (services/elasticsearch/expected.py), never the file's own value
    want_text = expected.get("elasticsearch", {}).get("heap")
    assert want_text, "no seed Elasticsearch heap in the verify context"
    assert size_bytes(xmx[-1]) == size_bytes(want_text), f"{HEAP_OPTIONS} has -Xmx{xmx[-1]}, want {want_text}"
    want = size_bytes(want_text)
    assert abs(heap - want) <= want * 0.05, f"heap.max is {heap} bytes, the configured heap is {want_text}"
    sockets = listening_ports(host.socket.get_listening_sockets(), 9200)
    also = expected.get("listen", "127.0.0.1")
    assert sockets and loopback_only(sockets, also), f"9200 listens on {sockets or 'nothing'} (want loopback)"

