"""`verify` and `health` against the real phase-0 guest: both pass on a converged guest, both name what
is wrong on a broken one (a service stopped and a file's mode changed), and the next `up` repairs it.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from psa_provision.commands.health import PROBED
from psa_provision.services import app as app_service
from psa_provision.ssh import Connection

from .conftest import Site

pytestmark = [pytest.mark.sandbox, pytest.mark.phase0]

MIN_CHECKS = 40
BOX = "│┃"


def table_rows(text: str) -> list[list[str]]:
    """The body rows of a Rich table as cells; a cell wrapped over several lines is joined with spaces."""
    rows: list[list[str]] = []
    for line in text.splitlines():
        if line[:1] not in BOX:
            continue
        cells = [c.strip() for c in line.strip()[1:-1].replace("┃", "│").split("│")]
        if cells[0]:
            rows.append(cells)
        elif rows and len(cells) == len(rows[-1]):  # a wrapped continuation line of the previous row
            rows[-1] = [f"{a} {b}".strip() for a, b in zip(rows[-1], cells, strict=True)]
    return rows[1:] if rows and rows[0][0] in ("host", "container") else rows  # without the heading


def junit(path: Path) -> tuple[list[str], dict[str, str]]:
    """(every testcase name, {failed testcase name: failure message}) of a JUnit XML file."""
    root = ET.parse(path).getroot()  # noqa: S314 - our own verify's report
    cases = list(root.iter("testcase"))
    failed = {str(c.get("name")): str(f.get("message") or f.text or "")
              for c in cases if (f := c.find("failure")) is not None or (f := c.find("error")) is not None}
    return [str(c.get("name")) for c in cases], failed


def components(site: Site) -> set[str]:
    """What `health` reports a line for on the phase-0 container: probed stores and each service."""
    return {c for c in PROBED if c in site.container.components and c != "app"} | set(site.phase.services)


def test_verify_passes_with_junit_xml_and_plan_json_is_empty(phase0: Site, tmp_path: Path) -> None:
    report = tmp_path / "verify.xml"
    run = phase0.cli("verify", "phase0", "--junit-xml", str(report), timeout=900)
    assert run.code == 0, run.output[-4000:]
    names, failed = junit(report)
    assert not failed, f"verify exited 0 but the JUnit XML has failures: {failed}"
    assert len(names) >= MIN_CHECKS, f"only {len(names)} checks ran: {names}"
    assert any(n.startswith("test_no_wildcard_listener") for n in names), names
    assert f"{len(names)} passed, 0 failed" in run.stdout
    plan = phase0.cli("plan", "phase0", "--output", "json", timeout=600)
    assert plan.code == 0, plan.output[-3000:]
    doc = json.loads(plan.stdout)
    assert doc["changes"] == [] and doc["phase"] == "phase0", doc


def test_health_prints_one_ok_line_per_component(phase0: Site) -> None:
    run = phase0.cli("health", "phase0", timeout=600)
    assert run.code == 0, run.output[-4000:]
    rows = table_rows(run.stdout)
    host = f"{phase0.container.hostname} ({phase0.container.vmid})"
    lines = {r[1]: r[2] for r in rows if r[0] == host and r[1] != "resources"}
    assert lines == dict.fromkeys(components(phase0), "OK"), run.stdout
    assert sum(1 for r in rows if r[1] != "resources") == len(lines), f"a component twice:\n{run.stdout}"
    resources = [r for r in rows if r[1] == "resources"]
    assert len(resources) == 1 and "CPU" in resources[0][3] and "RAM" in resources[0][3], run.stdout


def test_a_broken_guest_fails_verify_and_health_until_up_repairs_it(reset_phase0: Site, guest: Connection,
                                                                   tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    site = reset_phase0
    monkeypatch.setenv("COLUMNS", "200")  # as wide as a CI log: Rich cuts long check names at 80 columns
    guest.run(f"systemctl stop rabbitmq-server && chmod 644 {app_service.ENV_FILE}")
    report = tmp_path / "broken.xml"
    run = site.cli("verify", "phase0", "--junit-xml", str(report), timeout=900)
    assert run.code == 1, run.output[-4000:]
    host = site.container.hostname
    found = {(r[0], r[1]): r[3] for r in table_rows(run.stdout) if r[2] == "FAILED"}
    assert "rabbitmq-server is not running" in found.get((host, "test_rabbitmq_running_and_enabled"), ""), \
        run.stdout
    assert "mode 0644" in found.get((host, "test_env_file_private_to_psa"), ""), run.stdout
    _, failed = junit(report)
    assert "rabbitmq-server is not running" in failed[f"test_rabbitmq_running_and_enabled[ssh://{host}]"]
    assert "mode 0644" in failed[f"test_env_file_private_to_psa[ssh://{host}]"]

    health = site.cli("health", "phase0", timeout=600)
    assert health.code != 0, health.output[-4000:]
    bad = {r[1]: r[3] for r in table_rows(health.stdout) if r[2] == "FAILED"}
    assert "rabbitmq" in bad, health.stdout

    plan = site.cli("plan", "phase0", "--output", "json", timeout=600)
    assert plan.code == 2, plan.output[-3000:]
    planned = {(c["kind"], c.get("path") or c.get("name")) for c in json.loads(plan.stdout)["changes"]}
    assert {("PutFile", app_service.ENV_FILE), ("Service", "rabbitmq-server")} <= planned, planned

    up = site.cli("up", "phase0", "--yes")
    assert up.code == 0, up.output[-4000:]
    again = site.cli("verify", "phase0", timeout=900)
    assert again.code == 0, again.output[-4000:]
    assert site.cli("health", "phase0", timeout=600).code == 0
