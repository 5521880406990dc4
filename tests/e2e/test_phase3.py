"""`up phase3` for real on the sandbox's three nodes: verify passes, a second `up` changes nothing, and
Proxmox holds every container as an HA resource kept apart by the rules (PVE 9). In a full session phase 3
is the one `migrate phase3` made: verify runs on what the migration left, and the first `up` after it
must change nothing.

Select with `-m phase3`; the provisioning (tests/e2e/phase3_site.py) takes 15-25 min cold.
"""

from __future__ import annotations

import pytest

from psa_provision.services.container import ha

from .conftest import admin_api
from .phase3_site import Phase3, phase3, reset_phase3  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.sandbox, pytest.mark.phase3]


def test_verify_phase3_passes(phase3: Phase3) -> None:  # noqa: F811
    run = phase3.cli("verify", "phase3", timeout=1200)
    assert run.code == 0, run.output[-8000:]


def test_a_second_up_changes_nothing(phase3: Phase3) -> None:  # noqa: F811
    run = phase3.cli("up", "phase3", "--yes")  # after a migration: the first `up`
    assert run.code == 0, run.output[-6000:]
    changed, unchanged, failed = run.summary()
    assert (changed, failed) == (0, 0) and unchanged > 0, run.output[-6000:]
    plan = phase3.cli("plan", "phase3")
    assert plan.code == 0, plan.output[-4000:]  # exit 2 would mean changes pending


def test_every_container_is_an_ha_resource_kept_apart_by_rules(phase3: Phase3) -> None:  # noqa: F811
    px = admin_api()
    resources = {str(r["sid"]): r for r in px.request("GET", "/cluster/ha/resources") or []}
    for spec in phase3.phase.containers:
        entry = resources.get(f"ct:{spec.vmid}")
        assert entry is not None and entry.get("state") == "started", (spec.vmid, entry)
    rules = {str(r["rule"]): r for r in px.request("GET", "/cluster/ha/rules") or []}
    for rid, vmids in ha.apart(phase3.phase).items():
        rule = rules.get(rid)
        assert rule is not None, rid
        assert (rule["type"], rule["affinity"]) == ("resource-affinity", "negative")
        assert sorted(rule["resources"].split(",")) == sorted(f"ct:{v}" for v in vmids)
        assert not rule.get("errors"), rule  # pve-ha-manager would apply it
    where = {str(g["vmid"]): g["node"] for g in px.request("GET", "/cluster/resources", {"type": "vm"}) or []}
    for rid, vmids in ha.apart(phase3.phase).items():
        nodes = [where[str(v)] for v in vmids]
        assert len(set(nodes)) == len(nodes), (rid, nodes)
