"""pvesim's HA stack against the running sandbox: two tiny containers on pve2 and pve3 as HA resources
with a negative resource-affinity rule; pve3 loses power (`pvesim fault node-down`), shows offline,
refuses calls, and its resource is recovered on pve1 (never next to its pair on pve2); pve3 comes back.
Also `pvesim present-as 8`. vmids 9080-9081.

Taking pve3 down stops EVERY container on pve3 for the test's length: run it when nothing else uses
pve3 (the fault is tagged with this test's owner and cleared afterwards, even on failure).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from proxmoxer import ProxmoxAPI
from proxmoxer.core import ResourceException

if TYPE_CHECKING:  # fixtures' types from this directory's conftest.py
    from conftest import Purger, TaskWaiter

pytestmark = pytest.mark.sandbox

PLACED = {9080: "pve2", 9081: "pve3"}
SIDS = [f"ct:{v}" for v in PLACED]
RULE = "sandbox-ha-apart"
FENCE_DELAY = 3  # seconds; real Proxmox VE fences after about two minutes
DEADLINE = 90.0


def pvesim(*args: str) -> str:
    """Run the pvesim CLI (same interpreter as the tests); fail on non-zero exit."""
    proc = subprocess.run([sys.executable, "-m", "pvesim", *args], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def until(what: str, check: Callable[[], Any], deadline: float = DEADLINE) -> Any:
    """Poll `check` until it returns something true; fail naming `what` after the deadline."""
    end = time.monotonic() + deadline
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > end:
            pytest.fail(f"timed out after {deadline:.0f}s waiting for {what}")
        time.sleep(0.5)


def _forget_ha(proxmox: ProxmoxAPI) -> None:
    """Remove this test's HA resources (and with them its rule), so purge can stop and delete."""
    known = {r["sid"] for r in proxmox.cluster.ha.resources.get()}
    for sid in SIDS:
        if sid in known:
            proxmox.cluster.ha.resources(sid).delete()


@pytest.fixture
def owner(request: pytest.FixtureRequest) -> Iterator[str]:
    """This test's fault owner; its faults (the down node) are cleared afterwards."""
    tag = f"sandbox-{os.getpid()}-{request.node.name}"
    yield tag
    pvesim("fault", "clear", "--owner", tag)


@pytest.fixture
def pair(proxmox: ProxmoxAPI, wait_task: TaskWaiter, purge: Purger, template: str) -> Iterator[None]:
    """CT 9080 on pve2 and CT 9081 on pve3, HA resources (started) kept apart by a negative rule."""
    _forget_ha(proxmox)
    purge(list(PLACED))
    try:
        for vmid, node in PLACED.items():
            upid = proxmox.nodes(node).lxc.post(vmid=vmid, ostemplate=template,
                                                hostname=f"ha-{vmid}", rootfs="local-lvm:2", memory=128,
                                                swap=0, cores=1, unprivileged=1)
            assert wait_task(node, upid)["exitstatus"] == "OK"
            proxmox.cluster.ha.resources.post(sid=f"ct:{vmid}", state="started", max_restart=1)
        proxmox.cluster.ha.rules.post(rule=RULE, type="resource-affinity", affinity="negative",
                                      resources=",".join(SIDS), comment="sandbox test")
        yield
    finally:
        _forget_ha(proxmox)
        purge(list(PLACED))


def _where(proxmox: ProxmoxAPI) -> dict[int, tuple[str, str]]:
    """vmid -> (node, status) of the test's containers, from /cluster/resources."""
    return {r["vmid"]: (r["node"], r["status"]) for r in proxmox.cluster.resources.get(type="vm")
            if r["vmid"] in PLACED}


def _services(proxmox: ProxmoxAPI) -> dict[str, dict[str, Any]]:
    return {e["sid"]: e for e in proxmox.cluster.ha.status.current.get() if e["type"] == "service"}


def test_node_down_recovers_ha_resources_apart_then_node_up(proxmox: ProxmoxAPI, pair: None,
                                                            owner: str) -> None:
    until("the HA manager to start both resources where they are",
          lambda: _where(proxmox) == {9080: ("pve2", "running"), 9081: ("pve3", "running")})
    (rule,) = proxmox.cluster.ha.rules.get(resource="ct:9081")
    assert (rule["rule"], rule["affinity"], "errors" in rule) == (RULE, "negative", False)
    assert proxmox.nodes("pve2").lxc(9080).status.current.get()["ha"]["managed"] == 1

    pvesim("fault", "node-down", "pve3", "--fence-delay", str(FENCE_DELAY), "--owner", owner)
    online = {e["name"]: e["online"] for e in proxmox.cluster.status.get() if e["type"] == "node"}
    assert online == {"pve1": 1, "pve2": 1, "pve3": 0}
    assert {n["node"]: n["status"] for n in proxmox.nodes.get()}["pve3"] == "offline"
    with pytest.raises(ResourceException) as refused:
        proxmox.nodes("pve3").lxc.get()
    assert refused.value.status_code == 595 and "No route to host" in str(refused.value)

    # fenced, then recovered on pve1: pve2 holds its pair, the rule keeps them apart
    until("ct:9081 recovered and running on pve1", lambda: _where(proxmox).get(9081) == ("pve1", "running"))
    assert _where(proxmox)[9080] == ("pve2", "running")
    assert _services(proxmox)["ct:9081"]["status"] == "ct:9081 (pve1, started)"
    manager = proxmox.cluster.ha.status.manager_status.get()["manager_status"]
    assert manager["node_status"]["pve3"] == "unknown"
    assert manager["service_status"]["ct:9081"]["node"] == "pve1"

    pvesim("fault", "node-up", "pve3")
    online = {e["name"]: e["online"] for e in proxmox.cluster.status.get() if e["type"] == "node"}
    assert online["pve3"] == 1 and proxmox.nodes("pve3").lxc.get() is not None
    time.sleep(2)  # two HA manager rounds: nothing moves back (resources stay where HA recovered them)
    assert _where(proxmox)[9081] == ("pve1", "running")


def test_ha_stop_is_a_request_the_manager_carries_out(proxmox: ProxmoxAPI, wait_task: TaskWaiter,
                                                      pair: None) -> None:
    until("both resources running", lambda: all(s == "running" for _, s in _where(proxmox).values())
          and len(_where(proxmox)) == 2)
    upid = proxmox.nodes("pve2").lxc(9080).status.stop.post()
    task = wait_task("pve2", upid)
    assert (task["type"], task["exitstatus"]) == ("hastop", "OK")
    assert proxmox.cluster.ha.resources("ct:9080").get()["state"] == "stopped"
    until("ct:9080 stopped by the HA manager", lambda: _where(proxmox)[9080] == ("pve2", "stopped"))


def test_present_as_pve8_offers_groups_instead_of_rules(proxmox: ProxmoxAPI) -> None:
    with pytest.raises(ResourceException, match="ha groups have been migrated to rules"):
        proxmox.cluster.ha.groups.get()
    pvesim("present-as", "8")
    try:
        assert proxmox.version.get()["release"] == "8.4"
        with pytest.raises(ResourceException) as missing:
            proxmox.cluster.ha.rules.get()
        assert missing.value.status_code == 501
        proxmox.cluster.ha.groups.post(group="sandbox-spread", nodes="pve1,pve2,pve3", restricted=1)
        assert proxmox.cluster.ha.groups("sandbox-spread").get()["nodes"] == "pve1,pve2,pve3"
        proxmox.cluster.ha.groups("sandbox-spread").delete()
    finally:
        pvesim("present-as", "9")
    assert proxmox.version.get()["release"] == "9.2"
