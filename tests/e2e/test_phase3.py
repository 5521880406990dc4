"""`up phase3` for real on the sandbox's three nodes: verify passes, a second `up` changes nothing, and
Proxmox holds every container as an HA resource kept apart by the rules (PVE 9). In a full session phase 3
is the one `migrate phase3` made: verify runs on what the migration left, and the first `up` after it
must change nothing.

Select with `-m phase3`; the provisioning (tests/e2e/phase3_site.py) takes 15-25 min cold.
"""

from __future__ import annotations

import secrets
import time

import pytest

from psa_provision.drill.run import vip_base
from psa_provision.drill.writer import login, request
from psa_provision.secrets import load_secrets
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


STEADY = 5  # writes in a row that must succeed, each indexed, with the member down


def _healthy_within(site: Phase3, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if site.cli("health", "phase3", timeout=300).code == 0:
            return True
        time.sleep(5)
    return False


def test_tickets_are_indexed_and_found_with_the_first_elasticsearch_member_stopped(
        reset_phase3: Phase3) -> None:  # noqa: F811
    """The app's clients know every member of each store cluster: with the Elasticsearch member its .env
    names first (ELASTICSEARCH_HOST) stopped, the services stay healthy behind the load balancer, a ticket
    written through the VIP is indexed, and a search finds it."""
    site = reset_phase3
    px = admin_api()
    first = site.phase.with_component("elasticsearch")[0]
    node = px.find_vmid(first.vmid) or first.node
    base = vip_base(site.phase)
    s = load_secrets(site.inventory.secrets_file)
    token, why = login(base, s.get("app.admin_email").value, s.get("app.admin_password").value)
    assert token is not None, why
    word = f"esloss{secrets.token_hex(4)}"
    px.stop(node, first.vmid)  # an HA resource: the stop is the HA manager's, a moment later
    try:
        deadline = time.monotonic() + 60
        while px.status(node, first.vmid).get("status") != "stopped" and time.monotonic() < deadline:
            time.sleep(0.5)
        assert px.status(node, first.vmid).get("status") == "stopped", "the member did not stop in 60 s"
        seen: list[tuple[int, object]] = []  # every write after the stop; the last STEADY ones indexed
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (len(seen) >= STEADY and all(
                status == 201 and body["propagation"]["elasticsearch"] == "ok"  # type: ignore[index]
                for status, body in seen[-STEADY:])):
            seen.append(request("POST", f"{base}/api/tickets", {"title": f"{word} {len(seen)}"}, token))
            time.sleep(0.5)
        assert len(seen) >= STEADY and all(status == 201 for status, _ in seen[-STEADY:]), seen[-8:]
        assert all(body["propagation"]["elasticsearch"] == "ok" for _, body in seen[-STEADY:]), seen[-STEADY:]  # type: ignore[index]
        status, found = request("GET", f"{base}/api/tickets?q={word}", None, token)
        assert status == 200 and found["source"] == "elasticsearch", (status, found)
        assert found["total"] >= STEADY, found  # every ticket indexed while the member was down is found
    finally:
        px.start(node, first.vmid)
    site.dirty = not _healthy_within(site, 300)  # healed by itself: nothing for `up` to undo
