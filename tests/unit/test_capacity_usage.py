"""What capacity reads: the app database's answer (recorded psql output), the gateway's /metrics answer,
and the Proxmox rrddata call (path and parameters, through a recording stand-in for proxmoxer)."""

from __future__ import annotations

import json
from typing import Any

from psa_provision import proxmox
from psa_provision.services.app import usage

PSQL = """tenants\t4
users\t2
day\t0\t180
day\t1\t150
day\t2\t150
day\t3\t120
day\t4\t100
day\t5\t90
day\t6\t60
"""


def test_database_figures_and_the_seven_days_oldest_first() -> None:
    db = usage.parse_database(PSQL)
    assert (db.tenants, db.users, db.tickets_per_day) == (4, 2, 180)
    assert db.daily_tickets == (60, 90, 100, 120, 150, 150, 180)
    assert db.missing == {}


def test_a_missing_table_costs_only_its_own_figure() -> None:
    error = 'psql:<stdin>:1: ERROR:  relation "crm_customers" does not exist\n'
    out = error + "LINE 1: SELECT 'tenants', count(*) FROM crm_customers;\n" + PSQL.split("\n", 1)[1]  # noqa: S608
    db = usage.parse_database(out)
    assert db.tenants is None and db.users == 2 and db.tickets_per_day == 180
    assert db.missing == {"tenants": 'relation "crm_customers" does not exist'}


def test_an_incomplete_week_is_no_figure_and_nothing_at_all_says_so() -> None:
    db = usage.parse_database("tenants\t1\nusers\t1\nday\t0\t5\n")
    assert db.daily_tickets == () and db.tickets_per_day is None and "tickets_per_day" in db.missing
    empty = usage.parse_database("psql: error: connection to server on socket failed\n")
    assert empty.missing == {"tenants": "no answer", "users": "no answer", "tickets_per_day": "no answer"}


def test_the_sql_is_read_only_and_travels_on_stdin() -> None:
    assert "default_transaction_read_only=on" in usage.SCRIPT and "-f -" in usage.SCRIPT
    assert "psa_platform" in usage.SCRIPT
    statements = [s.strip() for s in usage.SQL.split(";") if s.strip()]
    assert len(statements) == 3 and all(s.startswith("SELECT ") for s in statements)


def test_gateway_metrics() -> None:
    body = {"service": "api-gateway", "workers": 2, "requests_last_minute": 734,
            "requests_per_minute_5m": 512.4, "requests_total": 9000, "errors_total": 3,
            "errors_last_minute": 0,
            "window_seconds": 60}
    got = usage.parse_metrics(json.dumps(body) + "\n200")
    assert (got.requests_last_minute, got.requests_per_minute_5m, got.workers, got.why) == (734, 512.4, 2, "")


def test_gateway_metrics_missing_say_why() -> None:
    old = usage.parse_metrics('{"error":"no route for GET /metrics"}\n404')
    assert old.requests_last_minute is None and "HTTP 404" in old.why and "before /metrics" in old.why
    assert "nothing answers" in usage.parse_metrics("\n000").why
    assert "not understood" in usage.parse_metrics("{}\n200").why
    assert usage.metrics_script(3000).endswith("http://127.0.0.1:3000/metrics")


class Recorder:
    """Stands in for proxmoxer's ProxmoxAPI: records each call's path and parameters, answers rows."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def __call__(self, path: str) -> Any:
        recorder = self

        class Resource:
            def get(self, **params: Any) -> list[dict[str, Any]]:
                recorder.calls.append(("GET", path, params))
                return recorder.rows

        return Resource()


def test_rrddata_asks_proxmox_for_a_container_or_a_node() -> None:
    api = Recorder([{"time": 60, "cpu": 0.25, "mem": 1, "maxmem": 4}])
    px = proxmox.ProxmoxClient(api, proxmox.ApiSettings(host="127.0.0.1"), proxmox.CallCounter(),
                               notify=lambda _: None)
    assert px.rrddata("pve1", 200) == [{"time": 60, "cpu": 0.25, "mem": 1, "maxmem": 4}]
    px.rrddata("pve2", timeframe="day", cf="MAX")
    assert api.calls == [("GET", "nodes/pve1/lxc/200/rrddata", {"timeframe": "hour", "cf": "AVERAGE"}),
                         ("GET", "nodes/pve2/rrddata", {"timeframe": "day", "cf": "MAX"})]
