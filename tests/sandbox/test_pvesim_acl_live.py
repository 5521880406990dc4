"""pvesim's permission model and issue 16's Proxmox behaviours over HTTPS with proxmoxer: a custom role,
a privilege-separated token and ACL entries made through the API, propagate flags, the root@pam-only
feature rule, rule create that unshifts, destroy that removes ACLs, backup locks, pending hostname.
vmids 9030-9034; the user psa-acl-test@pve and the role PsaAclTest are removed afterwards."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from proxmoxer import ProxmoxAPI
from proxmoxer.core import ResourceException

if TYPE_CHECKING:
    from conftest import Purger, TaskWaiter

pytestmark = pytest.mark.sandbox

TEMPLATE = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"
NODE, USER, ROLE, TOKEN = "pve1", "psa-acl-test@pve", "PsaAclTest", "ci"
CT, PRIV_CT = 9030, 9031
OWNER = f"sandbox-acl-{os.getpid()}"  # this run's fault tag: `fault clear --owner` leaves others' alone
LEAST = ("VM.Allocate,VM.Audit,VM.PowerMgmt,VM.Config.Disk,VM.Config.CPU,VM.Config.Memory,VM.Config.Network,"
         "VM.Config.Options,Datastore.AllocateSpace,Datastore.Audit,SDN.Use,Sys.Audit")




def _drop_identity(api: ProxmoxAPI) -> None:
    for call in (lambda: api.access.users(USER).token(TOKEN).delete(),
                 lambda: api.access.roles(ROLE).delete()):
        with contextlib.suppress(ResourceException):
            call()


@pytest.fixture(scope="module")
def deployer(proxmox: ProxmoxAPI, pvesim_credentials: dict[str, Any]) -> Iterator[ProxmoxAPI]:
    """A client for USER!ci, a privilege-separated token holding ROLE on / (as its user does)."""
    _drop_identity(proxmox)
    proxmox.access.roles.post(roleid=ROLE, privs=LEAST)
    if USER not in [u["userid"] for u in proxmox.access.users.get()]:
        proxmox.access.users.post(userid=USER)
    made = proxmox.access.users(USER).token(TOKEN).post(privsep=1)
    assert made["full-tokenid"] == f"{USER}!{TOKEN}" and made["info"]["privsep"] == 1
    proxmox.access.acl.put(path="/", roles=ROLE, users=USER)
    proxmox.access.acl.put(path="/", roles=ROLE, tokens=f"{USER}!{TOKEN}")
    creds = pvesim_credentials
    yield ProxmoxAPI(creds["host"], port=creds["port"], backend="https", verify_ssl=creds["ca_file"],
                     user=USER, token_name=TOKEN, token_value=made["value"])
    proxmox.access.acl.put(path="/", roles=ROLE, users=USER, delete=1)
    _drop_identity(proxmox)


@pytest.fixture
def fresh(purge: Purger, template: str) -> Iterator[None]:  # template: created from it
    purge([CT, PRIV_CT])
    yield
    subprocess.run([sys.executable, "-m", "pvesim", "fault", "clear", "--owner", OWNER], check=False)
    purge([CT, PRIV_CT])


def _create(api: ProxmoxAPI, vmid: int = CT, **extra: Any) -> str:
    net0 = f"name=eth0,bridge=vmbr20,ip=10.0.20.{vmid - 8800}/24"
    upid: str = api.nodes(NODE).lxc.post(vmid=vmid, ostemplate=TEMPLATE, rootfs="local-lvm:2", memory=256,
                                         swap=0, hostname=f"acl-{vmid}", net0=net0, **extra)
    return upid


def test_token_privileges_and_propagate_flags(deployer: ProxmoxAPI, proxmox: ProxmoxAPI) -> None:
    perms = deployer.access.permissions.get(path="/vms/9030")["/vms/9030"]
    assert perms["VM.Allocate"] == 1 and "Sys.Modify" not in perms
    proxmox.access.acl.put(path="/vms/9030", roles="PVEAuditor", tokens=f"{USER}!{TOKEN}", propagate=0)
    try:
        perms = deployer.access.permissions.get(path="/vms/9030")["/vms/9030"]
        assert perms == {"VM.Audit": 0, "Sys.Audit": 0, "Datastore.Audit": 0}  # PVEAuditor there ∩ the user's
    finally:
        proxmox.access.acl.put(path="/vms/9030", roles="PVEAuditor", tokens=f"{USER}!{TOKEN}", delete=1)
    current = proxmox.cluster.firewall.options.get().get("enable", 0)  # were it let through: no change
    with pytest.raises(ResourceException) as denied:
        deployer.cluster.firewall.options.put(enable=current)
    assert denied.value.status_code == 403 and "(/, Sys.Modify)" in str(denied.value)


def test_least_privilege_create_and_the_root_only_rules(deployer: ProxmoxAPI, proxmox: ProxmoxAPI,
                                                         fresh: None, wait_task: TaskWaiter) -> None:
    with pytest.raises(ResourceException) as privileged:
        _create(deployer, PRIV_CT, unprivileged=0)
    assert privileged.value.status_code == 403 and "(/, Sys.Modify)" in str(privileged.value)
    with pytest.raises(ResourceException) as keyctl:  # Administrator's token is not root@pam either
        _create(proxmox, PRIV_CT, features="nesting=1,keyctl=1")
    assert "changing feature flags (except nesting) is only allowed for root@pam" in str(keyctl.value)
    assert wait_task(NODE, _create(deployer, features="nesting=1"))["exitstatus"] == "OK"
    assert deployer.nodes(NODE).lxc(CT).config.get()["unprivileged"] == 1


def test_privileged_container_has_no_unprivileged_key(proxmox_ticket: ProxmoxAPI, fresh: None,
                                                      wait_task: TaskWaiter) -> None:
    assert wait_task(NODE, _create(proxmox_ticket, PRIV_CT, unprivileged=0))["exitstatus"] == "OK"
    assert "unprivileged" not in proxmox_ticket.nodes(NODE).lxc(PRIV_CT).config.get()


def test_rules_land_on_top_and_destroy_removes_acls(proxmox: ProxmoxAPI, fresh: None,
                                                    wait_task: TaskWaiter) -> None:
    assert wait_task(NODE, _create(proxmox))["exitstatus"] == "OK"
    fw = proxmox.nodes(NODE).lxc(CT).firewall.rules
    for port in ("1001", "1002", "1003"):
        fw.post(type="in", action="ACCEPT", proto="tcp", dport=port, enable=1, pos=5)
    assert [r["dport"] for r in fw.get()] == ["1003", "1002", "1001"]
    fw(0).put(moveto=3)
    assert [r["dport"] for r in fw.get()] == ["1002", "1001", "1003"]
    proxmox.access.acl.put(path=f"/vms/{CT}", roles="PVEAuditor", tokens="root@pam!readonly")
    assert wait_task(NODE, proxmox.nodes(NODE).lxc(CT).delete(purge=1))["exitstatus"] == "OK"
    assert not [e for e in proxmox.access.acl.get() if e["path"] == f"/vms/{CT}"]


def test_backup_lock_fails_start_inside_the_task(proxmox: ProxmoxAPI, fresh: None,
                                                 wait_task: TaskWaiter) -> None:
    assert wait_task(NODE, _create(proxmox))["exitstatus"] == "OK"
    subprocess.run([sys.executable, "-m", "pvesim", "fault", "backup-lock", str(CT), "--multi",
                    "--owner", OWNER], check=True)
    assert proxmox.nodes(NODE).tasks.get(source="active", vmid=CT) == []
    assert [t for t in proxmox.nodes(NODE).tasks.get(source="active", typefilter="vzdump") if t["id"] == ""]
    upid = proxmox.nodes(NODE).lxc(CT).status.start.post()  # accepted: the lock is checked in the task
    assert wait_task(NODE, upid)["exitstatus"] == "CT is locked (backup)"
    subprocess.run([sys.executable, "-m", "pvesim", "fault", "clear", "--owner", OWNER], check=True)
    assert "lock" not in proxmox.nodes(NODE).lxc(CT).config.get()


def test_hostname_reaches_a_running_guest_at_its_next_start(proxmox: ProxmoxAPI, fresh: None,
                                                            wait_task: TaskWaiter) -> None:
    assert wait_task(NODE, _create(proxmox, start=1))["exitstatus"] == "OK"
    ct = proxmox.nodes(NODE).lxc(CT)
    ct.config.put(hostname="acl-renamed")
    assert ct.config.get(current=1)["hostname"] == "acl-renamed"
    hostname = ["lxc-attach", "-n", str(CT), "--", "cat", "/etc/hostname"]
    def guest_hostname() -> str:
        return subprocess.run(hostname, capture_output=True, text=True, check=True).stdout.strip()

    assert guest_hostname() == f"acl-{CT}"
    assert wait_task(NODE, ct.status.reboot.post())["exitstatus"] == "OK"
    assert guest_hostname() == "acl-renamed"
