"""pvesim's DELETE /nodes/{node}/lxc/{vmid} as pve-container API2/LXC.pm destroy_vm has it: the checks
before the task (protection, HA resource without purge, running) and what purge removes with the
container (the HA resource, and it from the HA rules), over the in-memory backend of
test_pvesim_api_logic."""

# ruff: noqa: F811  (the fixtures: secrets from test_pvesim_api_logic, app/api from test_pvesim_ha)
from __future__ import annotations

from pathlib import Path

from test_pvesim_api_logic import Client, create, secrets  # noqa: F401
from test_pvesim_ha import NODES, api, app  # noqa: F401  (three nodes, in memory)

from pvesim.ha_config import HaFiles
from pvesim.server import App


def _ha_pair(api: Client) -> None:
    """CTs 9000 (pve1) and 9001 (pve2), both HA resources (stopped), kept apart by one rule and 9000
    pinned by another that names it alone."""
    create(api, 9000, "pve1")
    create(api, 9001, "pve2")
    for sid in ("ct:9000", "ct:9001"):
        api.ok("POST", "/cluster/ha/resources", sid=sid, state="stopped")
    api.ok("POST", "/cluster/ha/rules", rule="apart", type="resource-affinity", affinity="negative",
           resources="ct:9000,ct:9001")
    api.ok("POST", "/cluster/ha/rules", rule="pin", type="node-affinity", resources="ct:9000", nodes="pve1")


def test_an_ha_resource_is_destroyed_only_with_purge_which_removes_it_from_the_ha_config(
        app: App, api: Client) -> None:
    _ha_pair(api)
    status, body = api("DELETE", "/nodes/pve1/lxc/9000")
    assert (status, body["message"]) == (
        500, "unable to remove CT 9000 - used in HA resources and purge parameter not set.")
    assert "lock" not in api.ok("GET", "/nodes/pve1/lxc/9000/config")  # refused before anything changed
    assert [r["sid"] for r in api.ok("GET", "/cluster/ha/resources")] == ["ct:9000", "ct:9001"]

    rec = api.task("DELETE", "/nodes/pve1/lxc/9000", purge=1)
    assert rec["exitstatus"] == "OK"
    log = app.tasks.log(rec["upid"])
    assert "purging CT 9000 from related configurations.." in log
    assert "NOTE: removed CT 9000 from HA resource configuration." in log
    assert not app.state.lxc_conf("pve1", 9000).exists()
    assert [r["sid"] for r in api.ok("GET", "/cluster/ha/resources")] == ["ct:9001"]
    # HA::Config delete_service_from_config with purge: out of every rule, a rule left empty deleted
    assert {r["rule"]: r["resources"] for r in api.ok("GET", "/cluster/ha/rules")} == {"apart": "ct:9001"}


def test_purge_of_a_container_that_is_no_ha_resource_leaves_the_ha_config_alone(
        app: App, api: Client) -> None:
    _ha_pair(api)
    create(api, 9002, "pve3")
    before = HaFiles(app.state.root)
    texts = {name: before.path(name).read_text() for name in ("resources", "rules")}
    rec = api.task("DELETE", "/nodes/pve3/lxc/9002", purge=1)
    assert rec["exitstatus"] == "OK"
    assert "purging CT 9002 from related configurations.." in app.tasks.log(rec["upid"])
    assert not any(line.startswith("NOTE:") for line in app.tasks.log(rec["upid"]))
    assert {name: before.path(name).read_text() for name in texts} == texts


def test_force_destroys_a_running_ha_resource_whose_stop_is_requested_from_the_ha_manager(
        app: App, api: Client) -> None:
    _ha_pair(api)
    app.backend.start(9000, lambda line: None)
    status, body = api("DELETE", "/nodes/pve1/lxc/9000", purge=1)
    assert (status, body["message"]) == (500, "unable to destroy CT 9000 - container is running")
    rec = api.task("DELETE", "/nodes/pve1/lxc/9000", purge=1, force=1)
    assert rec["exitstatus"] == "OK"
    log = app.tasks.log(rec["upid"])
    assert log.index("forced to stop CT 9000 before destroying!") < log.index(
        "purging CT 9000 from related configurations..")
    assert not app.backend.exists(9000)
    assert "ct:9000" not in HaFiles(app.state.root).read("resources").ids


def test_a_protected_container_is_not_destroyed(app: App, api: Client) -> None:
    create(api, 9000, "pve1")
    api.ok("PUT", "/nodes/pve1/lxc/9000/config", protection=1)
    status, body = api("DELETE", "/nodes/pve1/lxc/9000", purge=1, force=1)
    assert (status, body["message"]) == (500, "can't remove CT 9000 - protection mode enabled")
    assert app.backend.exists(9000) and "lock" not in api.ok("GET", "/nodes/pve1/lxc/9000/config")


def test_delete_service_without_purge_keeps_the_rules(tmp_path: Path) -> None:
    files = HaFiles(tmp_path)
    resources = "ct: 9000\n\tstate started\n\nct: 9001\n\tstate started\n"
    rules = "resource-affinity: apart\n\tresources ct:9000,ct:9001\n\taffinity negative\n"
    files.dir.mkdir(parents=True)
    files.path("resources").write_text(resources)
    files.path("rules").write_text(rules)
    assert files.delete_service("ct:9000", purge=False) is True
    assert list(files.read("resources").ids) == ["ct:9001"]
    assert files.path("rules").read_text() == rules
    assert files.delete_service("ct:9000", purge=True) is False  # no longer configured: nothing written
    assert files.delete_service("ct:9001", purge=True) is True
    assert files.read("resources").ids == {}
    assert files.read("rules").ids["apart"]["resources"] == "ct:9000"
