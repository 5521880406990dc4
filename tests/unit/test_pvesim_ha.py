"""pvesim's HA stack: section config files, rule checks and placement (pure), the /cluster/ha API and one
CRM round after a node goes down, over the in-memory backend of test_pvesim_api_logic."""

# ruff: noqa: F811  (the fixtures secrets/api come from test_pvesim_api_logic)
from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_pvesim_api_logic import TEMPLATE, Client, MemoryBackend, create, secrets, token  # noqa: F401

from pvesim import auth, ha_rules
from pvesim.ha_config import HaFiles, SidError, parse, parse_sid, render
from pvesim.ha_manager import Crm
from pvesim.paths import StateDir
from pvesim.server import App

NODES = ["pve1", "pve2", "pve3"]


def test_section_config_round_trip_and_digest() -> None:
    text = "ct: 200\n\tstate started\n\tmax_restart 2\n\nct: 201\n\tstate stopped\n"
    cfg = parse(text)
    assert cfg.ids == {"ct:200": {"type": "ct", "state": "started", "max_restart": "2"},
                       "ct:201": {"type": "ct", "state": "stopped"}}
    assert render(cfg) == text
    assert parse(text).digest == cfg.digest != parse(text + "\n#").digest
    rules = parse("resource-affinity: apart\n\tresources ct:200,ct:201\n\taffinity negative\n")
    assert rules.ids["apart"] == {"type": "resource-affinity", "resources": "ct:200,ct:201",
                                  "affinity": "negative"}


def test_parse_sid_as_config_pm() -> None:
    assert parse_sid("200", {200}) == ("ct:200", "ct", "200")
    assert parse_sid("ct:201", set()) == ("ct:201", "ct", "201")
    with pytest.raises(SidError, match="unable to detect SID from VMID - VM/CT 999 does not exist"):
        parse_sid("999", {200})
    with pytest.raises(SidError, match="unable to parse service id 'x'"):
        parse_sid("x", set())


def _neg(*sids: str, disable: bool = False) -> dict[str, str]:
    rule = {"type": "resource-affinity", "affinity": "negative", "resources": ",".join(sids)}
    return {**rule, "disable": "1"} if disable else rule


def test_feasibility_messages_are_resource_affinity_pm_s() -> None:
    rules = {
        "lone": _neg("ct:1"),
        "many": _neg("ct:1", "ct:2", "ct:3", "ct:4"),
        "apart": _neg("ct:5", "ct:6"),
        "together": {"type": "resource-affinity", "affinity": "positive", "resources": "ct:5,ct:6,ct:7"},
        "off": _neg("ct:9", disable=True),
        "n1": {"type": "node-affinity", "resources": "ct:8", "nodes": "pve1", "order": "1"},
        "n2": {"type": "node-affinity", "resources": "ct:8", "nodes": "pve2", "order": "2"},
    }
    errors = ha_rules.check_feasibility(rules, NODES)
    assert errors["lone"] == {"resources": ["rule is ineffective as there are less than two resources"]}
    assert errors["many"] == {"resources": ["rule defines more resources than available nodes"]}
    assert errors["apart"]["resources"] == [
        "rule shares two or more resources with a positive resource affinity rule"]
    assert errors["together"]["resources"] == [
        "rule shares two or more resources with a negative resource affinity rule"]
    assert errors["n2"] == {"resources": ["resource 'ct:8' is already used in another node affinity rule"]}
    assert "off" not in errors and "n1" not in errors


def test_select_node_keeps_negative_affinity_apart() -> None:
    rules = {"apart": _neg("ct:1", "ct:2")}
    placement = {"ct:1": "pve1", "ct:2": "pve1", "ct:3": "pve2"}
    assert ha_rules.violations(rules, placement) == [("apart", "ct:1", "ct:2")]
    # ct:2 may not stay with ct:1; pve3 carries fewer resources than pve2
    assert ha_rules.select_node("ct:2", "pve1", NODES, rules, placement) == "pve3"
    assert ha_rules.select_node("ct:3", "pve2", NODES, rules, placement) == "pve2"  # stays
    assert ha_rules.select_node("ct:2", "pve1", ["pve1"], rules, placement) is None
    assert ha_rules.blocking(rules, "ct:2", placement, NODES) == {
        "pve1": [{"sid": "ct:1", "cause": "resource-affinity"}]}
    assert ha_rules.select_node("ct:2", "pve1", NODES, {"apart": _neg("ct:1", "ct:2", disable=True)},
                                placement) == "pve1"


def test_select_node_follows_node_affinity() -> None:
    strict = {"pin": {"type": "node-affinity", "resources": "ct:1", "nodes": "pve1:2,pve2:1", "strict": "1"}}
    assert ha_rules.select_node("ct:1", "pve3", NODES, strict, {}) == "pve1"
    assert ha_rules.select_node("ct:1", "pve3", ["pve2", "pve3"], strict, {}) == "pve2"
    assert ha_rules.select_node("ct:1", "pve3", ["pve3"], strict, {}) is None
    loose = {"pin": {**strict["pin"], "strict": "0"}}
    assert ha_rules.select_node("ct:1", "pve3", ["pve3"], loose, {}) == "pve3"


@pytest.fixture
def app(tmp_path: Path, secrets: dict[str, Any]) -> Iterator[App]:
    state = StateDir(tmp_path)
    state.template_cache.mkdir(parents=True)
    (state.template_cache / TEMPLATE).write_bytes(b"not really a tarball")
    yield App(state, NODES, MemoryBackend(), auth.Auth(secrets))


@pytest.fixture
def api(app: App, secrets: dict[str, Any]) -> Client:
    return token(app, secrets)


def test_resources_api_errors_are_pve_ha_manager_s(app: App, api: Client) -> None:
    create(api, 9000)
    assert api.ok("POST", "/cluster/ha/resources", sid="9000", max_restart=2) is None
    assert api("POST", "/cluster/ha/resources", sid="ct:9000") == (
        500, {"data": None, "message": "resource ID 'ct:9000' already defined"})
    assert api("POST", "/cluster/ha/resources", sid="9001")[1]["message"] == (
        "unable to detect SID from VMID - VM/CT 9001 does not exist")
    assert api("POST", "/cluster/ha/resources", sid="ct:9001")[1]["message"] == (
        "resource 'ct:9001' does not exist in cluster")
    assert api("POST", "/cluster/ha/resources", sid="ct:9000", group="g1")[1]["message"] == (
        "invalid parameter 'group': ha groups have been migrated to rules")
    (res,) = api.ok("GET", "/cluster/ha/resources")
    assert (res["sid"], res["type"], res["max_restart"]) == ("ct:9000", "ct", 2) and res["digest"]
    api.ok("PUT", "/cluster/ha/resources/ct:9000", state="stopped", delete="max_restart")
    assert api.ok("GET", "/cluster/ha/resources/9000")["state"] == "stopped"
    assert "max_restart" not in api.ok("GET", "/cluster/ha/resources/9000")
    assert api.ok("GET", "/nodes/pve1/lxc/9000/status/current")["ha"] == {"managed": 1}
    api.ok("DELETE", "/cluster/ha/resources/ct:9000")
    assert api("DELETE", "/cluster/ha/resources/ct:9000")[1]["message"] == (
        "cannot delete service 'ct:9000', not HA managed!")


def test_rules_are_checked_and_groups_refused_in_pve9(app: App, api: Client) -> None:
    create(api, 9000)
    create(api, 9001, "pve2")
    for sid in ("ct:9000", "ct:9001"):
        api.ok("POST", "/cluster/ha/resources", sid=sid)
    status, body = api("POST", "/cluster/ha/rules", rule="lone", type="resource-affinity",
                       affinity="negative", resources="ct:9000")
    assert (status, body["message"], body["errors"]) == (
        400, "Rule 'lone' is invalid.",
        {"resources": "rule is ineffective as there are less than two resources"})
    assert api("POST", "/cluster/ha/rules", rule="xy", type="resource-affinity", affinity="negative",
               resources="ct:9000,ct:9002")[1]["message"] == "cannot use unmanaged resource(s) ct:9002."
    assert api("POST", "/cluster/ha/rules", rule="xy", type="resource-affinity",
               resources="ct:9000,ct:9001")[1]["message"] == "missing value for required option 'affinity'"
    assert api("POST", "/cluster/ha/rules", rule="xy", type="resource-affinity", affinity="negative",
               resources="ct:9000,ct:9001", nodes="pve1")[1]["message"] == "unexpected property 'nodes'"
    api.ok("POST", "/cluster/ha/rules", rule="apart", type="resource-affinity", affinity="negative",
           resources="ct:9000,ct:9001")
    (rule,) = api.ok("GET", "/cluster/ha/rules", resource="ct:9001")
    assert (rule["rule"], rule["affinity"], rule["resources"], rule["order"]) == (
        "apart", "negative", "ct:9000,ct:9001", 1)
    assert api("GET", "/cluster/ha/groups") == (
        500, {"data": None, "message": "cannot index groups: ha groups have been migrated to rules"})
    assert api.ok("GET", "/version")["release"] == "9.2"
    api.ok("DELETE", "/cluster/ha/resources/ct:9001")  # purge: the rule keeps one resource
    assert api.ok("GET", "/cluster/ha/rules/apart")["resources"] == "ct:9000"


def test_present_as_pve8_has_groups_and_no_rules(app: App, api: Client) -> None:
    app.state.settings.write_text('{"nodes": ["pve1", "pve2", "pve3"], "pve_version": 8}')
    assert api.ok("GET", "/version")["release"] == "8.4"
    assert api("GET", "/cluster/ha/rules") == (
        501, {"data": None, "message": "Method 'GET /api2/json/cluster/ha/rules' not implemented"})
    api.ok("POST", "/cluster/ha/groups", group="spread", nodes="pve1,pve2:2", restricted=1)
    assert api.ok("GET", "/cluster/ha/groups/spread")["nodes"] == "pve1,pve2:2"
    assert api("POST", "/cluster/ha/groups", group="bad", nodes="pve7")[1]["errors"] == {
        "nodes": "unknown node 'pve7'"}


def _wait_tasks(app: App) -> None:
    deadline = time.monotonic() + 10
    while any(t["status"] == "running" for t in app.tasks.all()):
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_node_down_fences_then_recovers_apart_from_the_rule(app: App, api: Client) -> None:
    create(api, 9000, "pve1")
    create(api, 9001, "pve2")
    for sid in ("ct:9000", "ct:9001"):
        api.ok("POST", "/cluster/ha/resources", sid=sid)
    api.ok("POST", "/cluster/ha/rules", rule="apart", type="resource-affinity", affinity="negative",
           resources="ct:9000,ct:9001")
    crm = Crm(app)
    crm.round()
    _wait_tasks(app)
    assert api.ok("GET", "/nodes/pve1/lxc/9000/status/current")["status"] == "running"
    assert api.ok("GET", "/nodes/pve2/lxc/9001/status/current")["status"] == "running"
    # pve2 loses power: what `pvesim fault node-down pve2` records, then its containers stop
    app.faults.add_node_down({"node": "pve2", "since": time.time(), "fence_delay": 3600})
    app.backend.stop(9001, lambda line: None)
    fenced = crm.round()["service_status"]["ct:9001"]
    assert (fenced["node"], fenced["state"]) == ("pve2", "fence")
    assert api("GET", "/nodes/pve2/lxc") == (595, {"data": None, "message": "No route to host"})
    online = {e["name"]: e["online"] for e in api.ok("GET", "/cluster/status") if e["type"] == "node"}
    assert online == {"pve1": 1, "pve2": 0, "pve3": 1}
    assert {n["node"]: n["status"] for n in api.ok("GET", "/nodes")}["pve2"] == "offline"
    # the fence delay is over: recovered on pve3, never on pve1 where ct:9000 runs
    app.faults.take_nodes_down(node="pve2")
    app.faults.add_node_down({"node": "pve2", "since": time.time() - 10, "fence_delay": 5})
    status = crm.round()
    _wait_tasks(app)
    assert status["service_status"]["ct:9001"]["node"] == "pve3"
    assert api.ok("GET", "/nodes/pve3/lxc/9001/status/current")["status"] == "running"
    services = {e["sid"]: e for e in api.ok("GET", "/cluster/ha/status/current") if e["type"] == "service"}
    assert services["ct:9001"]["status"] == "ct:9001 (pve3, started)"
    assert services["ct:9001"]["request_state"] == "started"
    assert any("recover service 'ct:9001' from fenced node 'pve2' to node 'pve3'" in line for line in crm.log)
    app.faults.take_nodes_down(node="pve2")
    crm.round()
    assert not (app.state.lxc_conf("pve2", 9001)).exists()  # it stays where it was recovered


def test_ha_start_is_a_request_and_the_crm_relocates_a_breach(app: App, api: Client) -> None:
    create(api, 9000, "pve1")
    create(api, 9001, "pve1")
    for sid in ("ct:9000", "ct:9001"):
        api.ok("POST", "/cluster/ha/resources", sid=sid, state="stopped")
    api.ok("POST", "/cluster/ha/rules", rule="apart", type="resource-affinity", affinity="negative",
           resources="ct:9000,ct:9001")
    task = api.task("POST", "/nodes/pve1/lxc/9001/status/start")
    assert task["type"] == "hastart" and task["exitstatus"] == "OK"
    assert app.tasks.log(task["upid"])[0] == "Requesting HA start for CT 9001"
    assert HaFiles(app.state.root).read("resources").ids["ct:9001"]["state"] == "started"
    crm = Crm(app)
    crm.round()  # ct:9000 is requested stopped, yet placed on pve1: ct:9001 moves away
    _wait_tasks(app)
    assert app.state.lxc_conf("pve2", 9001).exists() or app.state.lxc_conf("pve3", 9001).exists()
    crm.round()
    _wait_tasks(app)
    node = next(n for n in NODES if app.state.lxc_conf(n, 9001).exists())
    assert node != "pve1" and api.ok("GET", f"/nodes/{node}/lxc/9001/status/current")["status"] == "running"
