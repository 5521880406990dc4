"""Elasticsearch's phase-3 verify check (seed: "Elasticsearch cluster (3 nodes)"): green, every member
joined, one master, each app index replicated. Asked of each member: any member answers for the cluster,
so a member that cannot see the others fails here too."""

from __future__ import annotations

from typing import Any

import pytest

from psa_provision.services.elasticsearch import cluster
from psa_provision.services.elasticsearch.checks import es_get


@pytest.mark.component("elasticsearch")
def test_elasticsearch_cluster_green_with_every_member(host: Any, expected: dict[str, Any]) -> None:
    members = expected.get("elasticsearch", {}).get("members")
    assert members, "the phase has no Elasticsearch cluster (fewer than 2 members in the verify context)"
    found = cluster.problems(es_get(host, cluster.HEALTH), es_get(host, cluster.NODES),
                             es_get(host, cluster.INDICES), members)
    assert not found, "; ".join(found)
