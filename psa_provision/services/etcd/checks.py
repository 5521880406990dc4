"""etcd's verify checks (phase 3): package, unit, the cluster the phase file names, every member healthy."""

from __future__ import annotations

from typing import Any

import pytest

from psa_provision.suites.checks import output

from .health import HEALTH, MEMBERS, parse_health, parse_members, problems


@pytest.mark.component("etcd")
def test_etcd_installed(host: Any) -> None:
    for name in ("etcd-server", "etcd-client"):
        assert host.package(name).is_installed, f"package {name} is not installed"


@pytest.mark.component("etcd")
def test_etcd_running_and_enabled(host: Any) -> None:
    unit = host.service("etcd")
    assert unit.is_running, "etcd is not running"
    assert unit.is_enabled, "etcd is not enabled at boot"


@pytest.mark.component("etcd")
def test_etcd_cluster_is_the_phases_and_healthy(host: Any, expected: dict[str, Any]) -> None:
    want: list[str] = expected.get("etcd", {}).get("members", [])
    assert want, "no etcd members in the verify context"
    members = parse_members(output(host, MEMBERS, "etcdctl member list"))
    endpoints = parse_health(output(host, HEALTH, "etcdctl endpoint health --cluster"))
    found = problems(want, members, endpoints)
    assert not found, "; ".join(found)
