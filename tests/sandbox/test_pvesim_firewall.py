"""The Proxmox firewall for containers, for real: rules through the API, enforced on the guests' traffic.

Three containers: a database on vmbr30 listening on tcp/5432, an app container and an other container on
vmbr20. With the datacenter and the database's firewall on and one rule (tcp/5432 from the app's
address), the app connects and the other container does not; without the rule neither does; with the
guest's firewall off both do again.
The datacenter firewall is cluster-wide: the module switches it on only when it finds it off, and then
off again at the end; it never switches off one that another run may depend on (see the datacenter test).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from proxmoxer import ProxmoxAPI
from proxmoxer.core import ResourceException

if TYPE_CHECKING:
    from conftest import TaskWaiter

pytestmark = pytest.mark.sandbox

NODE = "pve1"
DB = (9110, "vmbr30", "10.0.30.210", "10.0.30.1")
APP = (9111, "vmbr20", "10.0.20.211", "10.0.20.1")
OTHER = (9112, "vmbr20", "10.0.20.212", "10.0.20.1")
# a one-line PostgreSQL stand-in: answers "pg-ok" to every connection (perl is in the template)
LISTENER = ("perl -MIO::Socket::INET -e '$s = IO::Socket::INET->new(LocalPort => 5432, Listen => 5, "
            "ReuseAddr => 1) or die $!; while ($c = $s->accept) { print $c \"pg-ok\\n\"; close $c }'")
CONNECT_TIMEOUT = 3  # seconds: a dropped SYN is never answered


def _attach(vmid: int, script: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a shell script inside the container as root."""
    return subprocess.run(["lxc-attach", "-n", str(vmid), "--", "bash", "-c", script], capture_output=True,
                          text=True, timeout=timeout, check=False)


def _reaches_db(vmid: int, address: str = DB[2]) -> bool:
    """Whether the container gets the listener's answer from address:5432 within the connect timeout."""
    script = (f"timeout {CONNECT_TIMEOUT} bash -c 'exec 3<>/dev/tcp/{address}/5432 && read -r line <&3 "
              "&& echo \"$line\"'")
    return _attach(vmid, script).stdout.strip() == "pg-ok"


def _wait_for(what: str, check: Any, deadline_s: float = 60) -> None:
    """Poll `check()` until it is true; fail naming `what` after the deadline."""
    deadline = time.monotonic() + deadline_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {deadline_s:.0f}s waiting for {what}")
        time.sleep(0.5)


def _destroy(proxmox: ProxmoxAPI, wait_task: TaskWaiter, vmid: int) -> None:
    """Stop and destroy a container if it exists (leftovers of an interrupted run too)."""
    existing = {int(c["vmid"]) for c in proxmox.nodes(NODE).lxc.get()}
    if vmid in existing:
        wait_task(NODE, proxmox.nodes(NODE).lxc(vmid).delete(force=1, purge=1), timeout=180)


@pytest.fixture(scope="module")
def containers(proxmox: ProxmoxAPI, wait_task: TaskWaiter, template: str) -> Iterator[None]:
    """DB, APP and OTHER created and running (net0 with firewall=1), the listener up; all destroyed after."""
    for vmid, *_ in (DB, APP, OTHER):
        _destroy(proxmox, wait_task, vmid)
    try:
        for vmid, bridge, ip, gw in (DB, APP, OTHER):
            upid = proxmox.nodes(NODE).lxc.post(
                vmid=vmid, ostemplate=template, hostname=f"fwtest-{vmid}", memory=256, swap=0, cores=1,
                unprivileged=1, rootfs="local-lvm:2", start=1,
                net0=f"name=eth0,bridge={bridge},ip={ip}/24,gw={gw},firewall=1")
            status = wait_task(NODE, upid, timeout=300)
            assert status["exitstatus"] == "OK", status
        for vmid, *_ in (DB, APP, OTHER):
            _wait_for(f"systemd in CT {vmid}", lambda v=vmid: _attach(v, "systemctl is-system-running")
                      .stdout.strip() in ("running", "degraded"))
        for vmid in (DB[0], APP[0]):
            started = _attach(vmid, f"setsid -f {LISTENER} </dev/null >/dev/null 2>&1")
            assert started.returncode == 0, started.stderr
            _wait_for(f"the listener on CT {vmid} tcp/5432",
                      lambda v=vmid: ":5432" in _attach(v, "ss -ltn").stdout)
        yield
    finally:
        for vmid, *_ in (DB, APP, OTHER):
            _destroy(proxmox, wait_task, vmid)


@pytest.fixture(scope="module")
def datacenter_firewall(proxmox: ProxmoxAPI) -> Iterator[bool]:
    """The datacenter firewall on for the module; True when it was off before (the module switched it on
    and switches it off again at the end), False when it was on (left on: another run may depend on it)."""
    found_on = str(proxmox.cluster.firewall.options.get().get("enable", 0)) == "1"
    if found_on:
        yield False
        return
    proxmox.cluster.firewall.options.put(enable=1)
    try:
        yield True
    finally:
        proxmox.cluster.firewall.options.put(enable=0)


def test_rule_lets_the_app_reach_postgres_and_no_one_else(
        proxmox: ProxmoxAPI, containers: None, datacenter_firewall: bool) -> None:
    fw = proxmox.nodes(NODE).lxc(DB[0]).firewall
    assert _reaches_db(APP[0]) and _reaches_db(OTHER[0]), "before the firewall, both containers connect"

    fw.rules.post(type="in", action="ACCEPT", source=APP[2], proto="tcp", dport="5432", enable=1,
                  comment="app -> postgres")
    fw.rules.post(type="in", action="ACCEPT", macro="SSH", enable=1, pos=1)  # create ignores pos: on top
    fw.options.put(enable=1, policy_in="DROP", ipfilter=1)  # ipfilter: only its own address leaves the DB
    assert [(r["pos"], r.get("macro"), r.get("source")) for r in fw.rules.get()] == [
        (0, "SSH", None), (1, None, APP[2])]
    assert _reaches_db(APP[0]), "the app container has a rule for tcp/5432"
    assert not _reaches_db(OTHER[0]), "a container without a rule must not reach PostgreSQL"

    digest = fw.rules.get()[1]["digest"]
    fw.rules(1).delete(digest=digest)
    assert not _reaches_db(APP[0]), "without its rule the app is blocked too"

    fw.options.put(enable=0)
    assert _reaches_db(APP[0]) and _reaches_db(OTHER[0]), "with the guest's firewall off both connect"


def test_firewall_files_and_validation(proxmox: ProxmoxAPI, containers: None) -> None:
    fw = proxmox.nodes(NODE).lxc(DB[0]).firewall
    before = fw.rules.get()
    fw.rules.post(type="in", action="ACCEPT", macro="postgresql", source=APP[2], enable=1)
    rule = fw.rules(0).get()
    assert (rule["macro"], rule["enable"], rule["ipversion"]) == ("PostgreSQL", 1, 4)
    text = (subprocess.run(["cat", f"/var/lib/pvesim/etc/pve/firewall/{DB[0]}.fw"], capture_output=True,
                           text=True, check=True).stdout)
    assert f"IN PostgreSQL(ACCEPT) -source {APP[2]}" in text

    with pytest.raises(ResourceException) as bad_port:
        fw.rules.post(type="in", action="ACCEPT", dport="5432")
    assert bad_port.value.status_code == 400 and "dport" in str(bad_port.value.errors)
    with pytest.raises(ResourceException) as bad_policy:
        fw.options.put(policy_in="MAYBE")
    assert bad_policy.value.status_code == 400
    with pytest.raises(ResourceException) as stale:
        fw.rules(0).put(comment="x", digest="0" * 40)
    assert stale.value.status_code == 500 and "modified" in str(stale.value.content)
    fw.rules(0).delete()
    assert len(fw.rules.get()) == len(before), "the rule is gone, the others stay"


def test_readonly_token_cannot_change_rules(proxmox_readonly: ProxmoxAPI, containers: None) -> None:
    fw = proxmox_readonly.nodes(NODE).lxc(DB[0]).firewall
    assert isinstance(fw.rules.get(), list)
    with pytest.raises(ResourceException) as denied:
        fw.rules.post(type="in", action="DROP")
    assert denied.value.status_code == 403 and "VM.Config.Network" in str(denied.value.content)


def test_guests_on_one_bridge_are_filtered_too(proxmox: ProxmoxAPI, containers: None,
                                               datacenter_firewall: bool) -> None:
    """APP and OTHER share vmbr20 (bridged, not routed): APP's firewall still decides, per net[n] flag."""
    ct = proxmox.nodes(NODE).lxc(APP[0])
    assert _reaches_db(OTHER[0], APP[2]), "before the firewall, OTHER reaches APP"
    ct.firewall.options.put(enable=1)  # policy_in defaults to DROP
    try:
        assert not _reaches_db(OTHER[0], APP[2]), "APP's firewall drops OTHER on the same bridge"
        net0 = ct.config.get()["net0"]
        ct.config.put(net0=net0.replace("firewall=1", "firewall=0"))
        assert _reaches_db(OTHER[0], APP[2]), "with firewall=0 on net0 nothing is filtered there"
        ct.config.put(net0=net0)
    finally:
        ct.firewall.options.put(enable=0)


def test_no_guest_firewall_is_active_while_the_datacenters_is_off(
        proxmox: ProxmoxAPI, containers: None, datacenter_firewall: bool) -> None:
    """Switching the cluster-wide firewall off and on again is only done when this module switched it on
    (it was off: no other run depended on it), or when PSA_SANDBOX_EXCLUSIVE=1 says nothing else uses
    the sandbox; otherwise a phase 1 run or demo sharing the sandbox would lose its guests' filtering."""
    if not datacenter_firewall and os.environ.get("PSA_SANDBOX_EXCLUSIVE") != "1":
        pytest.skip("the datacenter firewall was on before this run: another run may depend on it "
                    "(PSA_SANDBOX_EXCLUSIVE=1 when nothing else uses the sandbox)")
    ct = proxmox.nodes(NODE).lxc(APP[0])
    ct.firewall.options.put(enable=1)  # policy_in defaults to DROP
    try:
        assert not _reaches_db(OTHER[0], APP[2]), "APP's firewall drops OTHER on the same bridge"
        proxmox.cluster.firewall.options.put(enable=0)
        try:
            assert _reaches_db(OTHER[0], APP[2]), "no guest firewall is active while the datacenter's is off"
        finally:
            proxmox.cluster.firewall.options.put(enable=1)
        assert not _reaches_db(OTHER[0], APP[2]), "the datacenter firewall back on"
    finally:
        ct.firewall.options.put(enable=0)


SPOOFED = "10.0.30.211"  # an address DB takes without it being in its config


def _reaches_app_from(address: str) -> bool:
    """Whether DB, sending from `address`, gets APP's listener answer within the connect timeout."""
    script = (f"timeout {CONNECT_TIMEOUT} perl -MIO::Socket::INET -e '$c = IO::Socket::INET->new("
              f"PeerAddr => \"{APP[2]}:5432\", LocalAddr => \"{address}\") or exit 1; print scalar <$c>'")
    return _attach(DB[0], script).stdout.strip() == "pg-ok"


def test_ipfilter_drops_what_a_guest_sends_from_an_address_not_its_own(
        proxmox: ProxmoxAPI, containers: None, datacenter_firewall: bool) -> None:
    fw = proxmox.nodes(NODE).lxc(DB[0]).firewall
    added = _attach(DB[0], f"ip addr add {SPOOFED}/24 dev eth0")
    assert added.returncode == 0, added.stderr
    try:
        fw.options.put(enable=1, policy_in="ACCEPT", ipfilter=0)
        assert _reaches_app_from(SPOOFED), "without ipfilter the extra address works"
        fw.options.put(ipfilter=1)
        assert not _reaches_app_from(SPOOFED), "ipfilter drops traffic from an address not in net0"
        assert _reaches_app_from(DB[2]), "its own address still works"
    finally:
        fw.options.put(enable=0, delete="ipfilter,policy_in")
        _attach(DB[0], f"ip addr del {SPOOFED}/24 dev eth0")
