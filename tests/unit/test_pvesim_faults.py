"""Fault rules: matched by kind, path regex and task type; each use consumes one count."""

from __future__ import annotations

from pathlib import Path

import pytest

from pvesim.faults import Faults


def test_rules_are_consumed_per_use(tmp_path: Path) -> None:
    faults = Faults(tmp_path / "faults.json")
    faults.add({"kind": "http-error", "count": 2, "status": 503, "path": "^/api2/json/version$"})
    assert faults.take("http-error", path="/api2/json/nodes") is None
    assert faults.take("http-error", path="/api2/json/version") is not None
    assert faults.take("http-error", path="/api2/json/version") is not None
    assert faults.take("http-error", path="/api2/json/version") is None
    assert faults.read()["rules"] == []


def test_task_failures_match_type(tmp_path: Path) -> None:
    faults = Faults(tmp_path / "faults.json")
    faults.add({"kind": "task-fail", "count": 1, "type": "vzstart", "message": "no power"})
    faults.add({"kind": "task-fail", "count": 1})
    assert faults.task_failure("vzstart") == "no power"
    assert faults.task_failure("vzcreate") == "injected failure (pvesim fault)"
    assert faults.task_failure("vzcreate") is None


def test_task_failures_match_the_guest(tmp_path: Path) -> None:
    faults = Faults(tmp_path / "faults.json")
    faults.add({"kind": "task-fail", "count": 1, "type": "vzstart", "id": "202", "message": "mine"})
    assert faults.task_failure("vzstart", "201") is None
    assert faults.task_failure("vzstart", "202") == "mine"
    assert faults.task_failure("vzstart", "202") is None


def test_ticket_policy_and_clear(tmp_path: Path) -> None:
    faults = Faults(tmp_path / "faults.json")
    assert faults.ticket_policy() == (0, None)
    faults.expire_tickets()
    faults.set_ticket_lifetime(30)
    faults.add({"kind": "drop", "count": 1})
    assert faults.ticket_policy() == (1, 30)
    faults.clear()
    assert faults.read()["rules"] == [] and faults.ticket_policy()[0] == 1


def test_unknown_kind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown fault kind"):
        Faults(tmp_path / "faults.json").add({"kind": "meteor", "count": 1})
