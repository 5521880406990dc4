"""health's cluster verdicts (phase 3): each member's probe gathers its cluster's facts in the same
round trip (the `fact` shell function, run for real with bash here), and each cluster is judged across
its members on recorded answers of etcdctl 3.4, patronictl 3.0, redis-cli 7, rabbitmqctl 3.10,
Elasticsearch and `ip -o -4 addr show`: one line per cluster, naming the members at fault."""

from __future__ import annotations

import base64
import json
import subprocess
from typing import Any

import pytest

from psa_provision.commands import health
from psa_provision.packaged import PHASES_DIR
from psa_provision.phases import load_phase
from psa_provision.services import clusters
from psa_provision.services.members import MemberFacts, merge

P3 = load_phase("phase3", PHASES_DIR)


def ip(hostname: str) -> str:
    return P3.containers[[c.hostname for c in P3.containers].index(hostname)].ip


def fact(name: str, output: str, code: int = 0) -> str:
    """One probe line as health's `fact` function prints it."""
    return f"fact:{name}\t{code}\t{base64.b64encode(output.encode()).decode()}"


def member(hostname: str, *lines: str) -> MemberFacts:
    spec = next(c for c in P3.containers if c.hostname == hostname)
    return health.member_facts(spec, health.parse_probes("\n".join(lines)))


def down(hostname: str, why: str = "container is stopped") -> MemberFacts:
    return MemberFacts(hostname, ip(hostname), absent=why)


def judged(name: str, members: list[MemberFacts]) -> clusters.ClusterVerdict:
    found = {v.name: v for v in clusters.verdicts(P3, {m.hostname: m for m in members})}
    return found[name]


# -- the facts' round trip ------------------------------------------------------------------------

def test_fact_lines_carry_whole_outputs_and_stderr_when_stdout_is_empty() -> None:
    facts = ("fact two-lines printf 'a\\tb\\n{\"x\": 1}\\n'\n"
             "fact fails sh -c 'echo not here >&2; exit 3'\n"
             "fact says-both sh -c 'echo out; echo err >&2; exit 1'")
    script = health.probe_script([], {}, facts=facts)
    result = subprocess.run(["bash", "-c", script], input="pw\n", capture_output=True, text=True,
                            timeout=30, check=False)
    got = health.member_facts(P3.containers[0], health.parse_probes(result.stdout))
    assert got.facts == {"two-lines": (0, 'a\tb\n{"x": 1}'), "fails": (3, "not here"),
                         "says-both": (1, "out")}


def test_only_cluster_members_gather_facts_and_each_its_own_services() -> None:
    by_host = {c.hostname: clusters.facts_script(P3, c) for c in P3.containers}
    assert "patronictl" in by_host["psa-postgres-2"] and "etcdctl" in by_host["psa-etcd-3"]
    assert "SENTINEL ckquorum" in by_host["psa-redis-1"] and "cluster_status" in by_host["psa-rabbitmq-2"]
    assert "_cat/nodes" in by_host["psa-es-3"] and "ip -o -4 addr show" in by_host["psa-lb-2"]
    assert by_host["psa-gateway"] == "" and by_host["psa-tickets-2"] == ""
    assert [c.name for c in clusters.clusters(P3)] == ["postgresql", "etcd", "redis-sentinel", "rabbitmq",
                                                        "elasticsearch", "load-balancer"]


@pytest.mark.parametrize("name", ["phase0", "phase1", "phase2"])
def test_phases_without_clusters_gather_no_facts_and_get_no_cluster_line(name: str) -> None:
    phase = load_phase(name, PHASES_DIR)
    assert clusters.clusters(phase) == []
    assert all(clusters.facts_script(phase, c) == "" for c in phase.containers)
    assert clusters.verdicts(phase, {}) == []


def test_a_problem_seen_from_some_members_says_from_which() -> None:
    views = {"a": ["x down"], "b": ["x down"], "c": ["a down", "b down"]}
    assert merge(views) == ["x down (as a, b see it)", "a down (as c see it)", "b down (as c see it)"]
    assert merge({"a": ["same"], "b": ["same"]}) == ["same"]


# -- Patroni ---------------------------------------------------------------------------------------

def pg_row(name: str, role: str, state: str = "running", lag: int | None = 0) -> dict[str, Any]:
    row = {"Cluster": "15-main", "Member": name, "Host": ip(name), "Role": role, "State": state, "TL": 2}
    return row if role == "Leader" else {**row, "Lag in MB": lag}


PG_HEALTHY = [pg_row("psa-postgres-1", "Leader"), pg_row("psa-postgres-2", "Sync Standby"),
              pg_row("psa-postgres-3", "Replica", lag=1)]


def pg(rows: list[dict[str, Any]], *hosts: str) -> list[MemberFacts]:
    return [member(h, fact("patroni", json.dumps(rows))) for h in hosts]


def test_patroni_one_leader_replicas_streaming() -> None:
    v = judged("postgresql", pg(PG_HEALTHY, "psa-postgres-1", "psa-postgres-2", "psa-postgres-3"))
    assert (v.component, v.ok) == ("patroni", True)
    assert v.why == ("leader psa-postgres-1; streaming: psa-postgres-2 (sync, lag 0 MB), "
                     "psa-postgres-3 (lag 1 MB)")


def test_patroni_a_stopped_replica_and_a_lost_member_are_named() -> None:
    rows = [pg_row("psa-postgres-2", "Leader"),
            pg_row("psa-postgres-3", "Replica", state="stopped", lag=None)]
    v = judged("postgresql", [down("psa-postgres-1"), *pg(rows, "psa-postgres-2", "psa-postgres-3")])
    assert not v.ok
    assert "members missing: psa-postgres-1" in v.why and "replica psa-postgres-3 is stopped" in v.why
    assert "no synchronous standby" in v.why


def test_patroni_no_member_answering_says_why_for_each() -> None:
    failing = member("psa-postgres-2", fact("patroni", "Error: Can not find suitable configuration", 1))
    v = judged("postgresql", [down("psa-postgres-1"), failing, down("psa-postgres-3", "SSH failed")])
    assert not v.ok
    assert v.why == ("no member's patronictl list answered (psa-postgres-1: container is stopped; "
                     "psa-postgres-2: exit 1: Error: Can not find suitable configuration; "
                     "psa-postgres-3: SSH failed)")


# -- etcd --------------------------------------------------------------------------------------------

ETCD = ["psa-etcd-1", "psa-etcd-2", "psa-etcd-3"]


def etcd_members(names: list[str]) -> str:
    return json.dumps({"header": {"cluster_id": 1, "member_id": 2, "raft_term": 3}, "members": [
        {"ID": 10 + i, "name": n, "peerURLs": [f"http://{ip(n)}:2380"], "clientURLs": [f"http://{ip(n)}:2379"]}
        for i, n in enumerate(names)]})


def etcd_health(sick: str = "") -> str:
    return json.dumps([{"endpoint": f"http://{ip(n)}:2379", "health": n != sick, "took": "2.1ms",
                        **({"error": "context deadline exceeded"} if n == sick else {})} for n in ETCD])


def test_etcd_healthy_and_an_unhealthy_endpoint() -> None:
    listed = fact("etcd-members", etcd_members(ETCD))
    good = [member(h, listed, fact("etcd-health", etcd_health())) for h in ETCD]
    assert judged("etcd", good).ok
    assert judged("etcd", good).why == "3 members started, every endpoint healthy (quorum)"
    sick = [member(h, listed, fact("etcd-health", etcd_health("psa-etcd-3"), 1))
            for h in ETCD[:2]] + [down("psa-etcd-3")]
    v = judged("etcd", sick)
    assert not v.ok
    assert v.why == "unhealthy endpoints: http://10.0.30.52:2379 (context deadline exceeded)"


# -- Redis with Sentinel -----------------------------------------------------------------------------

QUORUM_OK = "OK 3 usable Sentinels. Quorum and failover authorization can be reached"


def info_master(replicas: list[str]) -> str:
    lines = ["# Replication", "role:master", f"connected_slaves:{len(replicas)}"]
    lines += [f"slave{i}:ip={r},port=6379,state=online,offset=4242,lag=0" for i, r in enumerate(replicas)]
    lines += ["master_failover_state:no-failover", "master_repl_offset:4242"]
    return "\r\n".join(lines) + "\r\n"


def info_replica(primary: str, link: str = "up") -> str:
    return "\r\n".join(["# Replication", "role:slave", f"master_host:{primary}", "master_port:6379",
                        f"master_link_status:{link}", "master_last_io_seconds_ago:1", "slave_priority:100",
                        "connected_slaves:0"]) + "\r\n"


def redis_member(host: str, info: str, sentinel_says: str, quorum: str = QUORUM_OK) -> MemberFacts:
    text = f"{info}@@config\n@@sentinel\n{sentinel_says}\n6379\n"
    return member(host, fact("redis-set", text), fact("redis-ckquorum", quorum))


R1, R2, R3 = ip("psa-redis-1"), ip("psa-redis-2"), ip("psa-redis-3")


def test_redis_sentinels_agree_on_the_primary_every_replica_follows() -> None:
    v = judged("redis-sentinel", [redis_member("psa-redis-1", info_master([R2, R3]), R1),
                                  redis_member("psa-redis-2", info_replica(R1), R1),
                                  redis_member("psa-redis-3", info_replica(R1), R1)])
    assert (v.component, v.ok) == ("redis", True)
    assert v.why == (f"primary psa-redis-1 ({R1}), named by every Sentinel, each at quorum; "
                     "psa-redis-2, psa-redis-3 replicate it, links up")


def test_redis_a_member_cut_off_that_made_itself_primary_is_named() -> None:
    v = judged("redis-sentinel", [redis_member("psa-redis-1", info_master([R2]), R1),
                                  redis_member("psa-redis-2", info_replica(R1), R1),
                                  redis_member("psa-redis-3", info_master([]), R3, "NOQUORUM 1 usable "
                                               "Sentinels. Not enough available Sentinels")])
    assert not v.ok
    seen = f"psa-redis-1: {R1}, psa-redis-2: {R1}, psa-redis-3: {R3}"
    assert f"Sentinels disagree on the primary ({seen})" in v.why
    assert "Redis with role master: psa-redis-1, psa-redis-3" in v.why
    assert "psa-redis-3's Sentinel: NOQUORUM 1 usable Sentinels" in v.why


def test_redis_a_stopped_member_fails_the_set() -> None:
    v = judged("redis-sentinel", [redis_member("psa-redis-1", info_master([R2]), R1),
                                  redis_member("psa-redis-2", info_replica(R1), R1), down("psa-redis-3")])
    assert not v.ok
    assert "psa-redis-3: role ?, follows nobody, link down" in v.why
    assert "psa-redis-3's Sentinel: no answer (container is stopped)" in v.why


# -- RabbitMQ ----------------------------------------------------------------------------------------

NODES = ["rabbit@psa-rabbitmq-1", "rabbit@psa-rabbitmq-2", "rabbit@psa-rabbitmq-3"]


def rabbit(host: str, running: list[str], partitions: dict[str, list[str]] | None = None,
           queue_members: list[str] = NODES) -> MemberFacts:
    status = json.dumps({"alarms": [], "cluster_name": "rabbit@psa-rabbitmq-1", "disk_nodes": NODES,
                         "partitions": partitions or {}, "ram_nodes": [], "running_nodes": running})
    queues = json.dumps([{"name": "tickets.created", "type": "quorum", "members": queue_members},
                         {"name": "billing.ticket-events", "type": "quorum", "members": NODES}])
    return member(host, fact("rabbitmq-cluster", f"{status}\n{queues}"))


def test_rabbitmq_every_node_running_quorum_queues_everywhere() -> None:
    v = judged("rabbitmq", [rabbit(h.removeprefix("rabbit@"), NODES) for h in NODES])
    assert (v.ok, v.why) == (True, "3 nodes running, no partition; 2 quorum queues on every node")


def test_rabbitmq_a_partitioned_member_sees_other_problems_than_the_rest() -> None:
    one, two, three = NODES
    v = judged("rabbitmq", [
        rabbit("psa-rabbitmq-1", [one, two], {}, [one, two]),
        rabbit("psa-rabbitmq-2", [one, two], {}, [one, two]),
        rabbit("psa-rabbitmq-3", [three], {three: [one, two]}, [one, two])])
    assert not v.ok
    assert f"not running: {three} (as psa-rabbitmq-1, psa-rabbitmq-2 see it)" in v.why
    assert f"not running: {one}, {two} (as psa-rabbitmq-3 see it)" in v.why
    assert f"network partition: {three} cannot see {one}, {two} (as psa-rabbitmq-3 see it)" in v.why
    assert f"quorum queue tickets.created has members {one}, {two}, not {', '.join(NODES)}" in v.why


# -- Elasticsearch -----------------------------------------------------------------------------------

ES = ["psa-es-1", "psa-es-2", "psa-es-3"]


def es(host: str, status: str, names: list[str]) -> MemberFacts:
    health_doc = {"cluster_name": "psa-platform", "status": status, "timed_out": False,
                  "number_of_nodes": len(names), "number_of_data_nodes": len(names), "unassigned_shards":
                  0 if status == "green" else 3, "initializing_shards": 0}
    nodes = [{"name": n, "master": "*" if i == 0 else "-", "node.role": "cdfhilmrstw"}
             for i, n in enumerate(names)]
    indices = [{"index": "tickets", "rep": "1", "health": status, "status": "open"}]
    return member(host, fact("es-health", json.dumps(health_doc)), fact("es-nodes", json.dumps(nodes)),
                  fact("es-indices", json.dumps(indices)))


def test_elasticsearch_green_with_three_nodes_then_a_member_lost() -> None:
    v = judged("elasticsearch", [es(h, "green", ES) for h in ES])
    assert (v.ok, v.why) == (True, "green, 3 nodes joined, master psa-es-1, every index replicated")
    curl_failed = member("psa-es-3",
                         fact("es-health", "curl: (7) Failed to connect to 127.0.0.1 port 9200", 7))
    v = judged("elasticsearch", [es(h, "yellow", ES[:2]) for h in ES[:2]] + [curl_failed])
    assert not v.ok
    assert "cluster health is 'yellow' (3 unassigned, 0 initializing shards), want 'green'" in v.why
    assert "number_of_nodes is 2, want 3" in v.why and "missing ['psa-es-3']" in v.why


# -- the load balancer pair --------------------------------------------------------------------------

def addr(own: str, vip: bool) -> str:
    lines = ["1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever",
             f"2: eth0    inet {own}/24 brd 10.0.20.255 scope global eth0\\       valid_lft forever"]
    if vip:
        lines.append("2: eth0    inet 10.0.20.250/24 scope global secondary eth0\\       valid_lft forever")
    return "\n".join(lines) + "\n"


def lb(host: str, vip: bool) -> MemberFacts:
    return member(host, fact("addresses", addr(ip(host), vip)))


@pytest.mark.parametrize(("lb1", "lb2", "ok", "why"), [
    (True, False, True, "VIP 10.0.20.250/24 on psa-lb-1 only"),
    (False, True, True, "VIP 10.0.20.250/24 on psa-lb-2 only"),
    (True, True, False,
     "the VIP 10.0.20.250/24 is on 2 load balancers at once (psa-lb-1, psa-lb-2): split brain"),
    (False, False, False, "no load balancer holds the VIP 10.0.20.250/24 (psa-lb-1, psa-lb-2 checked)"),
])
def test_keepalived_vip_on_exactly_one_load_balancer(lb1: bool, lb2: bool, ok: bool, why: str) -> None:
    v = judged("load-balancer", [lb("psa-lb-1", lb1), lb("psa-lb-2", lb2)])
    assert (v.component, v.ok, v.why) == ("keepalived", ok, why)


def test_keepalived_a_silent_load_balancer_leaves_no_spare() -> None:
    v = judged("load-balancer", [lb("psa-lb-1", True), down("psa-lb-2")])
    assert (v.ok, v.why) == (False, "psa-lb-2: container is stopped; VIP 10.0.20.250/24 on psa-lb-1")


# -- the report --------------------------------------------------------------------------------------

def test_cluster_lines_join_the_report_and_its_exit_code() -> None:
    good = clusters.ClusterVerdict("redis-sentinel", "redis", ("psa-redis-1", "psa-redis-2"), True, "fine")
    bad = clusters.ClusterVerdict("load-balancer", "keepalived", ("psa-lb-1", "psa-lb-2"), False,
                                  "split brain")
    report = health.HealthReport("phase3", [health.ContainerHealth("psa-lb-1", 240, None, [])], [good])
    assert report.exit_code == 0
    report.clusters.append(bad)
    assert report.exit_code == 1 and [line.why for line in report.failed] == ["split brain"]
    assert report.rows()[-1] == ["cluster load-balancer (psa-lb-1, psa-lb-2)", "keepalived", "FAILED",
                                 "split brain"]
    assert health.format_report(report)[-4:] == [
        "clusters:", "  cluster redis-sentinel (psa-redis-1, psa-redis-2)  redis  OK  fine",
        "  cluster load-balancer (psa-lb-1, psa-lb-2)  keepalived  FAILED  split brain", "1 failed"]


class Pve:
    """status/current as Proxmox answers it: only the load balancers run."""

    def status(self, node: str, vmid: int) -> dict[str, Any]:
        if vmid == 241:  # the HA manager recovered it to pve2 (the phase file says pve1)
            assert node == "pve2", node
        return {"status": "running" if vmid in (240, 241) else "stopped", "cpus": 2, "maxmem": 2 ** 31}

    def cluster_resources(self) -> list[dict[str, Any]]:
        return [{"type": "lxc", "vmid": 241, "node": "pve2"}]


class Answers:
    """One load balancer's SSH answer to the probe script: recorded lines (HAProxy and keepalived
    active, its addresses); the script it was given is kept."""

    def __init__(self, host: str, scripts: dict[str, str]) -> None:
        self.host, self.scripts = host, scripts

    def run(self, script: str, **_: Any) -> Any:
        self.scripts[self.host] = script
        stdout = "\n".join(["haproxy\t0\tactive", "keepalived\t0\tactive",
                            fact("addresses", addr(ip(self.host), self.host == "psa-lb-2"))])
        return subprocess.CompletedProcess([], 0, stdout, "")


def test_run_gathers_each_members_facts_with_its_probe_and_judges_every_cluster() -> None:
    scripts: dict[str, str] = {}
    report = health.run(None, P3, redis_password="pw", proxmox=Pve(),
                        connect=lambda spec: Answers(spec.hostname, scripts))
    assert [c.hostname for c in report.containers] == [c.hostname for c in P3.containers]
    assert set(scripts) == {"psa-lb-1", "psa-lb-2"}  # stopped containers are not asked
    assert all("fact addresses ip -o -4 addr show" in s for s in scripts.values())
    lines = {v.name: v for v in report.clusters}
    pair = lines["load-balancer"]
    assert (pair.ok, pair.why) == (True, "VIP 10.0.20.250/24 on psa-lb-2 only")
    assert not lines["postgresql"].ok
    assert lines["postgresql"].why.startswith("no member's patronictl list answered (psa-postgres-1: "
                                              "container is stopped;")
    assert [line.component for line in report.containers[-1].lines] == ["haproxy", "keepalived"]
    assert report.exit_code == 1
