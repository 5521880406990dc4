"""RabbitMQ's phase-3 verify checks, on each member: the cluster holds every member of the phase
file, all running, no partition; every queue of vhost / is a quorum queue on every member."""

from __future__ import annotations

import json
from typing import Any

import pytest

from psa_provision.suites.checks import output

from .cluster import cluster_problems, queue_problems
from .facts import parse_cluster


def _members(container: Any, ctx: dict[str, Any]) -> list[str]:
    return sorted(f"rabbit@{c['hostname']}" for c in ctx["containers"].values()
                  if c.get("cluster") == container.get("cluster") and "rabbitmq" in c["components"])


@pytest.mark.component("rabbitmq")
def test_rabbitmq_cluster_has_every_member_running(host: Any, container: Any, ctx: dict[str, Any]) -> None:
    status = output(host, "rabbitmqctl -q cluster_status --formatter json", "rabbitmqctl cluster_status")
    problems = cluster_problems(parse_cluster(status.replace("\n", "")), _members(container, ctx))
    assert not problems, "; ".join(problems)


@pytest.mark.component("rabbitmq")
def test_rabbitmq_queues_are_quorum_queues_on_every_member(host: Any, container: Any,
                                                           ctx: dict[str, Any]) -> None:
    queues = output(host, "rabbitmqctl -q list_queues name type members --formatter json", "list_queues")
    status = parse_cluster(json.dumps({}) + "\n" + queues.replace("\n", ""))
    assert status.queues, "no queues in vhost / (the app declares its queues as it starts)"
    problems = queue_problems(status, _members(container, ctx))
    assert not problems, "; ".join(problems)
