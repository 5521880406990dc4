"""Patroni's phase-3 verify checks on each PostgreSQL member: the unit, the stock unit out of the way,
one leader, replicas streaming, a synchronous standby, and REST answers that agree with the cluster's view
(what HAProxy routes by)."""

from __future__ import annotations

from typing import Any

import pytest

from psa_provision.suites.checks import assert_running_and_enabled, output

from . import REST_PORT, START_CONF, STOCK_UNIT, UNIT, start_mode
from .health import ENDPOINTS, LIST, parse_list, problems

STREAMING = ("runuser -u postgres -- psql -XAt -c \"SELECT count(*) FILTER (WHERE state = 'streaming') "
             "|| ' ' || count(*) FILTER (WHERE sync_state = 'sync') FROM pg_stat_replication\"")


@pytest.mark.component("postgresql")
def test_patroni_running_and_enabled(host: Any) -> None:
    assert host.package("patroni").is_installed, "package patroni is not installed"
    assert_running_and_enabled(host, UNIT)


@pytest.mark.component("postgresql")
def test_stock_postgresql_unit_stays_out_of_the_way(host: Any) -> None:
    assert not host.service(STOCK_UNIT).is_running, f"{STOCK_UNIT} runs beside Patroni"
    mode = start_mode(host.file(START_CONF).content_string)
    assert mode == "manual", f"{START_CONF} says {mode or 'nothing'}: the stock unit would start the server"


@pytest.mark.component("postgresql")
def test_one_leader_replicas_streaming_sync_standby(host: Any, expected: dict[str, Any]) -> None:
    want: list[str] = expected.get("patroni", {}).get("members", [])
    assert want, "no Patroni members in the verify context"
    found = problems(parse_list(output(host, LIST, "patronictl list")), want)
    assert not found, "; ".join(found)


@pytest.mark.component("postgresql")
def test_rest_answers_match_the_members_role(host: Any, expected: dict[str, Any]) -> None:
    me = host.backend.get_hostname()
    ip = expected.get("patroni", {}).get("ip", "127.0.0.1")
    members = {m.name: m for m in parse_list(output(host, LIST, "patronictl list"))}
    role = members[me].role if me in members else "missing"
    assert role in ("leader", "sync_standby", "replica"), f"{me} has role {role} in patronictl list"
    wrong = []
    for path, codes in ENDPOINTS.items():
        got = host.run(f"curl -s -o /dev/null -w '%{{http_code}}' http://{ip}:{REST_PORT}{path}").stdout.strip()
        if got != str(codes[role]):
            wrong.append(f"GET {path} -> {got or 'no answer'} (a {role} answers {codes[role]})")
    assert not wrong, "; ".join(wrong)


@pytest.mark.component("postgresql")
def test_leader_streams_to_every_replica_one_synchronously(host: Any, expected: dict[str, Any]) -> None:
    members = {m.name: m for m in parse_list(output(host, LIST, "patronictl list"))}
    me = members.get(host.backend.get_hostname())
    if me is None or me.role != "leader":
        pytest.skip("not the leader")
    want = len(expected.get("patroni", {}).get("members", [])) - 1
    streaming, sync = output(host, STREAMING, "pg_stat_replication").split()
    assert int(streaming) == want, f"{streaming} replicas stream from the leader, want {want}"
    assert int(sync) >= 1, "no replica is synchronous (pg_stat_replication.sync_state)"
