"""Proxmox HA of a high_availability phase: resources, PVE 9 rules or PVE 8 groups, planned from the
cluster's lists; a converged cluster plans no write. Rules are checked against pvesim's model of
pve-ha-manager's feasibility checks (Rules.pm) for three nodes."""

from __future__ import annotations

from typing import Any

from psa_provision.changes import ApiCall, Change, Noop
from psa_provision.packaged import PHASES_DIR
from psa_provision.phases import load_phase
from psa_provision.proxmox import Write
from psa_provision.services.container import ha
from pvesim import ha_rules

P3 = load_phase("phase3", PHASES_DIR)


def calls(changes: list[Change]) -> list[ApiCall]:
    return [c for c in changes if isinstance(c, ApiCall)]


def listed(changes: list[Change], action: str, key: str) -> list[dict[str, Any]]:
    """What GET would list after the creates: each create's parameters, as PVE stores them."""
    return [{k: (str(v) if k != key else v) for k, v in c.params.items()} for c in calls(changes)
            if c.action == action]


def test_a_fresh_pve9_cluster_gets_every_container_and_a_rule_per_cluster_and_service() -> None:
    changes = ha.plan(P3, 9, [], [], None)
    resources = [c for c in calls(changes) if c.action == "ha-resource-create"]
    assert sorted(c.params["sid"] for c in resources) == sorted(f"ct:{c.vmid}" for c in P3.containers)
    assert all((c.params["state"], c.params["max_restart"], c.params["max_relocate"]) == ("started", "1", "1")
               for c in resources)
    rules = {c.params["rule"]: c.params for c in calls(changes) if c.action == "ha-rule-create"}
    assert rules["psa-postgresql-apart"]["resources"] == "ct:100,ct:101,ct:102"
    assert rules["psa-etcd-apart"]["resources"] == "ct:105,ct:106,ct:107"
    assert rules["psa-load-balancer-apart"]["resources"] == "ct:240,ct:241"
    assert rules["psa-app-tickets-apart"]["resources"] == "ct:140,ct:141"
    assert all(r["affinity"] == "negative" and r["type"] == "resource-affinity" for r in rules.values())
    assert len(rules) == 6 + 8  # six clusters, eight services
    # resources before the rules that name them (Rules.pm refuses unmanaged resources)
    actions = [c.action for c in calls(changes)]
    last_resource = max(i for i, a in enumerate(actions) if a == "ha-resource-create")
    assert actions.index("ha-rule-create") > last_resource
    # pve-ha-manager would apply every one of them on three nodes, and the phase file's placement
    # breaks none of them
    cfg = {rid: {"type": p["type"], "affinity": p["affinity"], "resources": p["resources"]}
           for rid, p in rules.items()}
    assert ha_rules.check_feasibility(cfg, ["pve1", "pve2", "pve3"]) == {}
    assert ha_rules.violations(cfg, {f"ct:{c.vmid}": c.node for c in P3.containers}) == []


def test_a_converged_cluster_plans_no_write() -> None:
    fresh = ha.plan(P3, 9, [], [], None)
    resources = listed(fresh, "ha-resource-create", "sid")
    rules = [{**p, "disable": 0, "order": i} for i, p in enumerate(listed(fresh, "ha-rule-create", "rule"))]
    again = ha.plan(P3, 9, resources, rules, None)
    assert calls(again) == [] and all(isinstance(c, Noop) for c in again)


def test_a_stopped_resource_and_a_disabled_rule_are_put_back() -> None:
    fresh = ha.plan(P3, 9, [], [], None)
    resources = listed(fresh, "ha-resource-create", "sid")
    resources[0]["state"] = "stopped"
    rules = listed(fresh, "ha-rule-create", "rule")
    rules[0]["disable"] = 1
    rules[1]["resources"] = "ct:100,ct:101"
    fixes = calls(ha.plan(P3, 9, resources, rules, None))
    assert [(c.action, c.params) for c in fixes] == [
        ("ha-resource-update", {"sid": resources[0]["sid"], "state": "started"}),
        ("ha-rule-update", {"rule": rules[0]["rule"], "type": "resource-affinity", "affinity": "negative",
                            "resources": fixes[1].params["resources"], "delete": "disable"}),
        ("ha-rule-update", {"rule": rules[1]["rule"], "type": "resource-affinity", "affinity": "negative",
                            "resources": fixes[2].params["resources"]}),
    ]
    assert fixes[2].params["resources"] != "ct:100,ct:101"


def test_pve8_uses_a_preferring_group_per_node_and_no_rules() -> None:
    changes = ha.plan(P3, 8, [], None, [])
    groups = {c.params["group"]: c.params["nodes"] for c in calls(changes) if c.action == "ha-group-create"}
    assert groups == {"psa-pve1": "pve1:2,pve2:1,pve3:1", "psa-pve2": "pve2:2,pve1:1,pve3:1",
                      "psa-pve3": "pve3:2,pve1:1,pve2:1"}
    assert not any(c.action.startswith("ha-rule") for c in calls(changes))
    created = {c.params["sid"]: c.params["group"] for c in calls(changes) if c.action == "ha-resource-create"}
    assert (created["ct:100"], created["ct:101"], created["ct:240"]) == ("psa-pve1", "psa-pve2", "psa-pve3")
    groups_now = [{"group": g, "nodes": n, "restricted": 0, "nofailback": 0} for g, n in groups.items()]
    again = ha.plan(P3, 8, listed(changes, "ha-resource-create", "sid"), None, groups_now)
    assert calls(again) == []


def test_phases_without_high_availability_get_nothing() -> None:
    assert ha.plan(load_phase("phase2", PHASES_DIR), 9, [], [], None) == []


def test_ha_writes_go_to_pve_ha_managers_paths() -> None:
    update = Write("ha-resource-update", params={"sid": "ct:100", "state": "started"})
    assert (update.method, update.path, update.body) == ("PUT", "/cluster/ha/resources/ct:100",
                                                         {"state": "started"})
    create = Write("ha-resource-create", params={"sid": "ct:100", "state": "started"})
    assert (create.method, create.path, create.body["sid"]) == ("POST", "/cluster/ha/resources", "ct:100")
    rule = Write("ha-rule-update", params={"rule": "psa-etcd-apart", "resources": "ct:105"})
    assert (rule.path, rule.body) == ("/cluster/ha/rules/psa-etcd-apart", {"resources": "ct:105"})
    assert Write("ha-group-create", params={"group": "g"}).path == "/cluster/ha/groups"


def test_the_api_is_chosen_by_the_version_read_at_connect() -> None:
    from psa_provision import waves
    from psa_provision.proxmox import ProxmoxClient

    class Pve(ProxmoxClient):
        def __init__(self, release: str) -> None:
            self.release, self.asked = release, []  # type: ignore[var-annotated]

        def request(self, method: str, path: str, params: Any = None, effect: Any = None) -> Any:
            self.asked.append(path)
            return {"version": f"{self.release}.1", "release": self.release} if path == "/version" else []

    for release, lists in (("9.2", "/cluster/ha/rules"), ("8.4", "/cluster/ha/groups")):
        pve = Pve(release)
        pve.version()
        assert pve.pve_major() == int(release[0])
        waves.ha_changes(pve, P3)
        assert sorted(pve.asked) == sorted(["/version", lists, "/cluster/ha/resources"])  # one GET each
