"""Phase 3's Elasticsearch cluster, tool side: elasticsearch.yml for each member (seed hosts and initial
master nodes from the phase file's members) and the verify verdict over recorded API answers."""

from __future__ import annotations

from typing import Any

import pytest

from psa_provision import inventory, phases
from psa_provision.packaged import PHASES_DIR, SANDBOX_INVENTORY
from psa_provision.secrets import Secrets, generate
from psa_provision.services.context import HostContext
from psa_provision.services.elasticsearch import cluster
from psa_provision.services.elasticsearch import component as elasticsearch
from psa_provision.services.elasticsearch import expected as es_expected


def _yml(phase: str, vmid: int) -> dict[str, str]:
    inv = inventory.load_inventory(SANDBOX_INVENTORY)
    ph = phases.load_phase(phase, PHASES_DIR)
    text = elasticsearch.conf_content(HostContext(inv, ph, ph.container(vmid), Secrets(generate())))
    settings = [line for line in text.splitlines() if ": " in line and not line.startswith("#")]
    return dict(line.split(": ", 1) for line in settings)


def _es_members() -> list[phases.ContainerSpec]:
    return phases.load_phase("phase3", PHASES_DIR).with_component("elasticsearch")


def test_phase3_members_discover_each_other_through_the_seed_hosts() -> None:
    members = _es_members()
    assert len(members) == 3  # seed, phase 3: "Elasticsearch cluster (3 nodes)"
    for member in members:
        yml = _yml("phase3", member.vmid)
        assert yml["cluster.name"] == "psa-platform"
        assert yml["node.name"] == member.hostname
        assert yml["discovery.seed_hosts"] == "[" + ", ".join(f"{m.ip}:9300" for m in members) + "]"
        assert yml["cluster.initial_master_nodes"] == "[" + ", ".join(m.hostname for m in members) + "]"
        assert yml["network.host"] == f"[{member.ip}, 127.0.0.1]"
        assert yml["transport.port"] == "9300"
        assert "discovery.type" not in yml  # single-node discovery cannot form a cluster


def test_earlier_phases_stay_single_node() -> None:
    yml = _yml("phase1", 220)
    assert yml["discovery.type"] == "single-node" and yml["node.name"] == "psa-node-1"
    assert "discovery.seed_hosts" not in yml and "cluster.initial_master_nodes" not in yml


def test_expected_members_only_for_a_cluster() -> None:
    assert es_expected.expected(None, 16384, ["psa-es-2", "psa-es-1", "psa-es-3"])["members"] == [
        "psa-es-1", "psa-es-2", "psa-es-3"]
    assert "members" not in es_expected.expected(None, 16384, ["psa-es-1"])


MEMBERS = ["psa-es-1", "psa-es-2", "psa-es-3"]
GREEN = {"cluster_name": "psa-platform", "status": "green", "number_of_nodes": 3, "unassigned_shards": 0,
         "initializing_shards": 0}
NODES = [{"name": "psa-es-1", "master": "*", "node.role": "cdfhilmrstw"},
         {"name": "psa-es-2", "master": "-", "node.role": "cdfhilmrstw"},
         {"name": "psa-es-3", "master": "-", "node.role": "cdfhilmrstw"}]
INDICES = [{"index": "tickets", "rep": "1", "health": "green", "status": "open"},
           {"index": ".security-7", "rep": "0", "health": "green", "status": "open"}]


@pytest.mark.parametrize(
    ("health", "nodes", "indices", "found"),
    [
        (GREEN, NODES, INDICES, []),
        ({**GREEN, "status": "yellow", "unassigned_shards": 1}, NODES, INDICES,
         ["cluster health is 'yellow' (1 unassigned, 0 initializing shards), want 'green'"]),
        ({**GREEN, "number_of_nodes": 2}, NODES[:2], INDICES,
         ["number_of_nodes is 2, want 3", "members are ['psa-es-1', 'psa-es-2']: missing ['psa-es-3'], "
          "unexpected none"]),
        (GREEN, [{**n, "master": "-"} for n in NODES], INDICES, ["0 elected masters (none), want exactly 1"]),
        (GREEN, NODES, [{"index": "reports", "rep": "0", "health": "green", "status": "open"}],
         ["index reports has 0 replicas: losing one member could lose it, want >= 1"]),
    ],
)
def test_cluster_verdict(health: dict[str, Any], nodes: list[dict[str, Any]], indices: list[dict[str, Any]],
                         found: list[str]) -> None:
    assert cluster.problems(health, nodes, indices, MEMBERS) == found
