"""output.py: JSON plans never carry file contents, stdin or secrets; errors are one line + hint."""

from __future__ import annotations

import io
import json

import pytest

from psa_provision.changes import ApiCall, Command, Noop, Plan, PutFile, Secret, Sensitive
from psa_provision.errors import ProxmoxError
from psa_provision.output import Output, plan_json


def sample() -> Plan:
    return Plan([
        PutFile("ct", "app", "write .env", path="/opt/psa-platform/.env",
                content=Sensitive("DB_PASSWORD=hunter2\n"), mode=0o600, diff="+DB_PASSWORD=***"),
        Command("ct", "postgresql", "create role psa_app", script="read -r pw", stdin=Sensitive("hunter2")),
        ApiCall("ct", "container", "update", node="pve1", vmid=200,
                params={"password": Secret("hunter2"), "cores": 2}, diff={"cores": (1, 2)}),
        Noop("ct", "redis", "redis.conf up to date"),
    ])


def test_plan_json_has_no_contents_stdin_or_secret_values() -> None:
    data = plan_json(sample(), phase="phase0")
    text = json.dumps(data)
    assert "hunter2" not in text
    assert data["counts"] == {"changes": 3, "unchanged": 1}
    put = data["changes"][0]
    assert put["path"] == "/opt/psa-platform/.env" and put["mode"] == 0o600 and "content" not in put
    assert data["changes"][2]["params"] == {"password": "***", "cores": 2}


def test_human_plan_shows_diffs_and_counts_without_secrets() -> None:
    out, err = io.StringIO(), io.StringIO()
    Output(stdout=out, stderr=err).plan(sample(), "phase phase0")
    text = out.getvalue()
    assert "hunter2" not in text
    assert "+DB_PASSWORD=***" in text and "cores: 1 -> 2" in text
    assert "Plan: 3 to change, 1 unchanged." in text


def test_error_is_one_red_line_and_a_hint() -> None:
    err = io.StringIO()
    Output(stdout=io.StringIO(), stderr=err).error(ProxmoxError("bridge vmbr9 does not exist on node pve1",
                                                                hint="create the bridge"))
    assert err.getvalue().splitlines() == ["error: bridge vmbr9 does not exist on node pve1",
                                           "  -> create the bridge"]


def test_summary_line_is_exact() -> None:
    out = io.StringIO()
    Output(stdout=out, stderr=io.StringIO()).summary(3, 40, 0)
    assert out.getvalue() == "3 changed, 40 unchanged, 0 failed\n"


def test_trailing_backslashes_in_diffs_survive() -> None:
    out = io.StringIO()
    plan = Plan([PutFile("ct", "scripts", "write", path="/x", content=Sensitive("a \\\n"), diff="+a \\")])
    Output(stdout=out, stderr=io.StringIO()).plan(plan, "t")
    assert "      +a \\\n" in out.getvalue()


def test_a_whole_column_is_never_wrapped_on_a_narrow_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    buf = io.StringIO()
    out = Output(stdout=buf)
    ident = "backups:backup/vzdump-lxc-200-2026_12_02-17_33_57.tar.zst"
    row = [ident, "phase0", "2026-12-02 17:34:05Z", "postgresql 20261202-173351F, redis, rabbitmq", "0.1 MiB",
           "complete"]
    columns = ["id", "phase", "finished", "stores", "size", "state"]
    out.table("backups", columns, [row], whole=("id", "finished"))
    text = buf.getvalue()
    assert ident in text and "2026-12-02 17:34:05Z" in text, text
    out.table("backups", ["id", "phase", "finished", "stores", "size", "state"], [row])
    assert ident not in buf.getvalue()[len(text):]  # without `whole`, the id is folded at 80 columns
