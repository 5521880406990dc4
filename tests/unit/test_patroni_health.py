"""Patroni's cluster judgement on recorded `patronictl list` output (3.0.2's columns), the health probe's
summary, REST status codes, HAProxy's PostgreSQL frontends and the apps' endpoint."""

from __future__ import annotations

import json
from typing import Any

from ha_phase import ha_ctx, ha_phase
from test_planner import make_ctx

from psa_provision import health as command
from psa_provision.services.app.component import env_content
from psa_provision.services.patroni import haproxy
from psa_provision.services.patroni import health as h

NAMES = ["psa-postgres-1", "psa-postgres-2", "psa-postgres-3"]


NO_SYNC = "no synchronous standby: a commit would be acknowledged before any replica has it"


def row(member: str, role: str, state: str = "running", tl: int = 1, lag: Any = 0,
        **more: Any) -> dict[str, Any]:
    out = {"Cluster": "15-main", "Member": member, "Host": "10.0.30." + member[-1], "Role": role,
           "State": state, "TL": tl, **more}
    if role != "Leader":
        out["Lag in MB"] = lag
    return out


HEALTHY = [row("psa-postgres-1", "Leader"), row("psa-postgres-2", "Sync Standby"),
           row("psa-postgres-3", "Replica")]


def problems(rows: list[dict[str, Any]], expected: list[str] = NAMES, **kw: Any) -> list[str]:
    return h.problems(h.parse_list(json.dumps(rows)), expected, **kw)


def test_healthy_cluster() -> None:
    assert problems(HEALTHY) == []
    members = h.parse_list(json.dumps(HEALTHY))
    assert [m.role for m in members] == ["leader", "sync_standby", "replica"]
    assert h.leader(members) is not None and h.leader(members).name == "psa-postgres-1"  # type: ignore[union-attr]


def test_no_sync_standby_is_a_problem_only_where_required() -> None:
    rows = [HEALTHY[0], row("psa-postgres-2", "Replica"), HEALTHY[2]]
    assert problems(rows) == [NO_SYNC]
    assert problems(rows, sync_required=False) == []


def test_leaders_counted() -> None:
    assert problems([row(n, "Replica") for n in NAMES], sync_required=False) == [
        "0 leaders (none), want exactly one"]
    two = [HEALTHY[0], row("psa-postgres-2", "Leader"), HEALTHY[2]]
    assert "2 leaders (psa-postgres-1, psa-postgres-2), want exactly one" in problems(two)


def test_replica_not_streaming_diverged_or_behind() -> None:
    rows = [HEALTHY[0], row("psa-postgres-2", "Sync Standby", state="starting"),
            row("psa-postgres-3", "Replica", tl=2)]
    assert problems(rows) == ["replica psa-postgres-2 is starting",
                              "replica psa-postgres-3 is on timeline 2, the leader on 1",
                              NO_SYNC]
    behind = [HEALTHY[0], HEALTHY[1], row("psa-postgres-3", "Replica", lag=300)]
    assert problems(behind) == ["replica psa-postgres-3 lags the leader by 300 MB"]
    unknown = [HEALTHY[0], HEALTHY[1], row("psa-postgres-3", "Replica", lag="unknown")]
    assert problems(unknown) == ["replica psa-postgres-3 lags the leader by unknown"]


def test_membership_and_pending_restart() -> None:
    rows = [*HEALTHY[:2], row("psa-postgres-3", "Replica", **{"Pending restart": "*"})]
    pending = "restart pending (settings not in effect) on psa-postgres-3: patronictl restart"
    assert problems(rows) == [pending]
    assert problems(HEALTHY[:2]) == ["members missing: psa-postgres-3"]
    assert problems(HEALTHY, NAMES[:2]) == ["members not in the phase file: psa-postgres-3"]


def test_probe_summary_judged() -> None:
    detail = ("Member Role State psa-postgres-1 Leader running psa-postgres-2 Sync_Standby running "
              "psa-postgres-3 Replica running")
    assert h.judge(0, detail) == (True, "leader psa-postgres-1, 2 replicas, sync standby psa-postgres-2")
    down = detail.replace("Replica running", "Replica start_failed")
    assert h.judge(0, down) == (False, "leader psa-postgres-1; not running: psa-postgres-3")
    leaderless = detail.replace("Leader", "Replica")
    assert h.judge(0, leaderless) == (False, "no single leader among 3 members")
    assert h.judge(0, "")[0] is False  # type: ignore[index]
    assert h.judge(1, "Error: etcd unreachable") is None
    assert "patronictl -c /etc/patroni/15-main.yml list -f tsv" in h.PROBE


def test_rest_codes_give_the_role_haproxy_sees() -> None:
    # patroni/api.py 3.0.2: /leader 200 on the leader only, /replica 200 on running replicas, /sync on the
    # synchronous one; 503 otherwise
    assert h.ENDPOINTS["/leader"] == {"leader": 200, "sync_standby": 503, "replica": 503}
    assert h.ENDPOINTS["/replica"] == {"leader": 503, "sync_standby": 200, "replica": 200}
    assert h.ENDPOINTS["/sync"] == {"leader": 503, "sync_standby": 200, "replica": 503}
    for role in ("leader", "sync_standby", "replica"):
        assert h.role_from_codes({p: codes[role] for p, codes in h.ENDPOINTS.items()}) == role
    assert h.role_from_codes({"/health": 503, "/leader": 200}) == "down"


def sections(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    current = ""
    for line in text.splitlines():
        if line.startswith("listen "):
            current = line.split()[1]
            out[current] = []
        elif current and line.strip():
            out[current].append(" ".join(line.split()))
    return out


def test_haproxy_frontends_route_by_patronis_rest_checks() -> None:
    got = sections(haproxy.fragment(ha_phase()))
    servers = ["server psa-postgres-1 10.0.30.10:5432 maxconn 100 check port 8008",
               "server psa-postgres-2 10.0.30.11:5432 maxconn 100 check port 8008",
               "server psa-postgres-3 10.0.30.12:5432 maxconn 100 check port 8008"]
    common = ["http-check expect status 200",
              "default-server inter 3s fall 3 rise 2 on-marked-down shutdown-sessions", *servers]
    assert got == {
        "postgresql_primary": ["bind *:5000", "mode tcp", "option httpchk GET /leader", *common],
        "postgresql_replicas": ["bind *:5001", "mode tcp", "option httpchk GET /replica", *common],
    }


def test_no_patroni_cluster_no_frontends_and_apps_keep_the_server() -> None:
    assert haproxy.fragment(make_ctx("phase2").phase) == ""
    env = env_content(make_ctx("phase2", 120))
    assert "POSTGRES_HOST=10.0.30.10\nPOSTGRES_PORT=5432\n" in env


def test_apps_reach_the_leader_through_the_load_balancer() -> None:
    assert haproxy.client_endpoint(ha_phase()) == ("10.0.20.250", 5000)  # the pair's virtual IP
    env = env_content(ha_ctx(120))
    assert "POSTGRES_HOST=10.0.20.250\nPOSTGRES_PORT=5000\n" in env


def test_health_command_probes_and_judges_etcd_and_patroni() -> None:
    script = command.probe_script(["base", "etcd", "postgresql", "patroni"], {})
    assert "probe etcd etcdctl" in script and "probe patroni sh -c" in script
    detail = "Member Role State psa-postgres-1 Leader running psa-postgres-2 Sync_Standby running"
    lines = command.judge("psa-postgres-1", ["etcd", "postgresql", "patroni"], {},
                          {"etcd": (0, "http://127.0.0.1:2379 is healthy: successfully committed proposal"),
                           "postgresql": (0, "accepting connections"), "patroni": (0, detail)})
    assert [(x.component, x.ok) for x in lines] == [("etcd", True), ("postgresql", True), ("patroni", True)]
