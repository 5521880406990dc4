"""etcd: /etc/default/etcd for each member (read back as the shell assignments systemd reads), the plan's
order and convergence, and the health parsing of etcdctl 3.4's JSON."""

from __future__ import annotations

import json
import shlex

import pytest
from ha_phase import ha_ctx, ha_phase

from psa_provision.facts import FileFact, GuestFacts, ServiceFact
from psa_provision.plan import Noop, Package, PutFile, Service, sha256
from psa_provision.services.etcd import DEFAULTS, health
from psa_provision.services.etcd import component as etcd

PEERS = "psa-etcd-1=http://10.0.30.50:2380,psa-etcd-2=http://10.0.30.51:2380,psa-etcd-3=http://10.0.30.52:2380"


def environment_file(text: str) -> dict[str, str]:
    """KEY="value" lines as systemd's EnvironmentFile= reads them (comments skipped)."""
    out = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key] = shlex.split(value)[0]
    return out


@pytest.mark.parametrize(("vmid", "name", "ip"), [(105, "psa-etcd-1", "10.0.30.50"),
                                                  (107, "psa-etcd-3", "10.0.30.52")])
def test_each_member_names_itself_and_the_three_peers(vmid: int, name: str, ip: str) -> None:
    env = environment_file(etcd.defaults_content(ha_ctx(vmid)))
    assert env == {
        "ETCD_NAME": name,
        "ETCD_INITIAL_CLUSTER": PEERS,
        "ETCD_INITIAL_CLUSTER_STATE": "new",
        "ETCD_INITIAL_CLUSTER_TOKEN": "psa-phase3-etcd",
        "ETCD_INITIAL_ADVERTISE_PEER_URLS": f"http://{ip}:2380",
        "ETCD_LISTEN_PEER_URLS": f"http://{ip}:2380",
        "ETCD_LISTEN_CLIENT_URLS": f"http://{ip}:2379,http://127.0.0.1:2379",
        "ETCD_ADVERTISE_CLIENT_URLS": f"http://{ip}:2379",
    }


def test_members_come_from_the_phase_file() -> None:
    phase = ha_phase()
    assert [m.vmid for m in etcd.members(phase)] == [105, 106, 107]
    assert etcd.client_urls(phase) == ["http://10.0.30.50:2379", "http://10.0.30.51:2379",
                                       "http://10.0.30.52:2379"]


def test_fresh_guest_gets_the_file_before_the_package_then_the_unit() -> None:
    changes = etcd.plan(ha_ctx(105), GuestFacts())
    kinds = [type(c).__name__ for c in changes]
    assert kinds == ["PutFile", "Package", "Service", "Service"]
    assert [c.action for c in changes if isinstance(c, Service)] == ["enable", "restart"]
    assert isinstance(changes[0], PutFile) and changes[0].path == DEFAULTS
    assert isinstance(changes[1], Package) and changes[1].names == ("etcd-server", "etcd-client")


def test_converged_member_plans_only_noops_and_a_changed_file_restarts() -> None:
    ctx = ha_ctx(106)
    content = etcd.defaults_content(ctx)
    facts = GuestFacts(packages={"etcd-server": "3.4.23-4+b4", "etcd-client": "3.4.23-4+b4"},
                       files={DEFAULTS: FileFact(DEFAULTS, sha256(content), 0o644, "root", "root", content)},
                       services={"etcd": ServiceFact("etcd", True, True, 1.0)})
    assert all(isinstance(c, Noop) for c in etcd.plan(ctx, facts))
    old = content.replace("psa-phase3-etcd", "other")
    stale = GuestFacts(packages=facts.packages, services=facts.services,
                       files={DEFAULTS: FileFact(DEFAULTS, sha256(old), 0o644, "root", "root", old)})
    restarts = [c for c in etcd.plan(ctx, stale) if isinstance(c, Service)]
    assert [c.action for c in restarts] == ["restart"]


# recorded shapes of etcdctl 3.4 (endpoint health --cluster -w json; member list -w json)
HEALTHY = json.dumps([
    {"endpoint": "http://10.0.30.10:2379", "health": True, "took": "2.1ms"},
    {"endpoint": "http://10.0.30.11:2379", "health": True, "took": "2.5ms"},
    {"endpoint": "http://10.0.30.12:2379", "health": True, "took": "3.0ms"},
])
MEMBERS = json.dumps({"header": {"cluster_id": 1, "member_id": 2, "raft_term": 3}, "members": [
    {"ID": 11, "name": "psa-postgres-1", "peerURLs": ["http://10.0.30.10:2380"],
     "clientURLs": ["http://10.0.30.10:2379"]},
    {"ID": 12, "name": "psa-postgres-2", "peerURLs": ["http://10.0.30.11:2380"],
     "clientURLs": ["http://10.0.30.11:2379"]},
    {"ID": 13, "name": "psa-postgres-3", "peerURLs": ["http://10.0.30.12:2380"],
     "clientURLs": ["http://10.0.30.12:2379"]},
]})
NAMES = ["psa-postgres-1", "psa-postgres-2", "psa-postgres-3"]


def test_healthy_cluster_of_the_phase_has_no_problem() -> None:
    assert health.problems(NAMES, health.parse_members(MEMBERS), health.parse_health(HEALTHY)) == []


def test_lost_member_and_unstarted_member_are_named() -> None:
    members = json.loads(MEMBERS)
    members["members"][2] = {"ID": 13, "peerURLs": ["http://10.0.30.12:2380"]}  # added, never started
    lost = {"endpoint": "http://10.0.30.12:2379", "health": False, "error": "context deadline exceeded"}
    endpoints = [*json.loads(HEALTHY)[:2], lost]
    found = health.problems(NAMES, health.parse_members(json.dumps(members)),
                            health.parse_health(json.dumps(endpoints)))
    assert found == ["members missing: psa-postgres-3",
                     "members added but not started: http://10.0.30.12:2380",
                     "unhealthy endpoints: http://10.0.30.12:2379 (context deadline exceeded)"]


def test_foreign_member_and_missing_answers_are_problems() -> None:
    found = health.problems(NAMES[:2], health.parse_members(MEMBERS), health.parse_health(HEALTHY)[:1])
    assert "members not in the phase file: psa-postgres-3" in found
    assert health.problems(NAMES, health.parse_members(MEMBERS), []) == [
        "0 endpoints answered, the phase has 3 members"]


def test_parsers_refuse_other_json() -> None:
    with pytest.raises(ValueError):
        health.parse_health("{}")
    with pytest.raises(ValueError):
        health.parse_members("[]")


def test_probe_judgement() -> None:
    ok = "http://127.0.0.1:2379 is healthy: successfully committed proposal: took = 2.1ms"
    assert health.judge(0, ok) == (True, "member healthy (committed a proposal)")
    assert health.judge(1, "http://127.0.0.1:2379 is unhealthy: failed to commit proposal") is None
