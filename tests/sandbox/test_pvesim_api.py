"""pvesim's API with plain proxmoxer against the running sandbox: auth, CSRF, privileges, schema rejections,
a full container life cycle with SSH, task status/log, and placement on several nodes. vmids 9000-9009."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paramiko
import pytest
import requests
from proxmoxer import ProxmoxAPI
from proxmoxer.core import AuthenticationError, ResourceException

if TYPE_CHECKING:  # fixtures' types from this directory's conftest.py
    from conftest import KeyPair, Purger, TaskWaiter

pytestmark = pytest.mark.sandbox

TEMPLATE = "debian-12-standard_12.7-1_amd64.tar.zst"
VMID, IP, HOSTNAME, MEMORY = 9000, "10.0.20.90", "pvesim-api-9000", 384
PLACED = {"pve2": 9001, "pve3": 9002}
SSH_DEADLINE = 120.0
# the guest's memory limit: cgroup v2 (unified host) or v1 (legacy or hybrid host)
MEMORY_LIMIT = "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes"




@pytest.fixture(scope="module")
def container(proxmox: ProxmoxAPI, wait_task: TaskWaiter, purge: Purger, template: str,
              ed25519_keypair: KeyPair) -> Iterator[dict[str, Any]]:
    """CT 9000 on pve1 created (not started) with the session's SSH key; removed afterwards."""
    purge([VMID])
    started = time.monotonic()
    upid = proxmox.nodes("pve1").lxc.post(
        vmid=VMID, ostemplate=template, hostname=HOSTNAME, memory=MEMORY, swap=128, cores=1,
        rootfs="local-lvm:4", unprivileged=1, nameserver="10.0.20.1", features="nesting=1",
        net0=f"name=eth0,bridge=vmbr20,ip={IP}/24,gw=10.0.20.1", password="not-the-key-1",
        **{"ssh-public-keys": ed25519_keypair.public_line})
    status = wait_task("pve1", upid)
    print(f"create took {time.monotonic() - started:.1f}s")
    yield {"upid": upid, "status": status}
    purge([VMID])


def ssh(key: KeyPair) -> paramiko.SSHClient:
    """SSH as root with the injected key, polling until sshd accepts it (deadline SSH_DEADLINE)."""
    deadline, last = time.monotonic() + SSH_DEADLINE, "no attempt"
    while time.monotonic() < deadline:
        client = paramiko.SSHClient()
        # a guest created seconds ago on the sandbox bridge: its host key cannot be known in advance
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # noqa: S507
        try:
            client.connect(IP, username="root", pkey=key.pkey, timeout=5, allow_agent=False,
                           look_for_keys=False)
            return client
        except (OSError, paramiko.SSHException) as exc:
            last = f"{type(exc).__name__}: {exc}"
            client.close()
            time.sleep(0.5)
    raise AssertionError(f"SSH root@{IP} not accepted within {SSH_DEADLINE}s: {last}")


def run(client: paramiko.SSHClient, command: str) -> str:
    """Run a command in the guest; fail on non-zero exit."""
    _, stdout, stderr = client.exec_command(command, timeout=60)
    out = stdout.read().decode()
    assert stdout.channel.recv_exit_status() == 0, f"{command}: {stderr.read().decode()}"
    return out


# --- auth ------------------------------------------------------------------------------------

def test_token_and_ticket_auth(proxmox: ProxmoxAPI, proxmox_ticket: ProxmoxAPI,
                               pvesim_credentials: dict[str, Any]) -> None:
    assert proxmox.version.get()["release"] == "9.2"
    assert [n["node"] for n in proxmox_ticket.nodes.get()] == pvesim_credentials["nodes"]
    with pytest.raises(AuthenticationError):
        ProxmoxAPI(pvesim_credentials["host"], port=pvesim_credentials["port"], user="root@pam",
                   password="wrong-password", verify_ssl=pvesim_credentials["ca_file"])


def test_csrf_is_required_for_writes_with_a_ticket(pvesim_credentials: dict[str, Any]) -> None:
    url, ca = pvesim_credentials["url"] + "/api2/json", pvesim_credentials["ca_file"]
    login = requests.post(f"{url}/access/ticket", verify=ca, timeout=30,
                          data={"username": "root@pam", "password": pvesim_credentials["password"]})
    assert login.status_code == 200
    data = login.json()["data"]
    cookies = {"PVEAuthCookie": data["ticket"]}
    assert requests.get(f"{url}/version", cookies=cookies, verify=ca, timeout=30).status_code == 200
    target = f"{url}/nodes/pve1/lxc/9009/status/start"
    without = requests.post(target, cookies=cookies, verify=ca, timeout=30)
    assert without.status_code == 401
    assert "invalid csrf token" in without.reason.lower()
    with_csrf = requests.post(target, cookies=cookies, verify=ca, timeout=30,
                              headers={"CSRFPreventionToken": data["CSRFPreventionToken"]})
    assert with_csrf.status_code == 500  # past auth and CSRF: CT 9009 does not exist
    assert "9009.conf' does not exist" in with_csrf.reason


def test_readonly_token_reads_but_cannot_write(proxmox_readonly: ProxmoxAPI) -> None:
    assert proxmox_readonly.cluster.resources.get(type="node")
    with pytest.raises(ResourceException) as err:
        proxmox_readonly.nodes("pve1").aplinfo.post(storage="local", template=TEMPLATE)
    assert err.value.status_code == 403
    assert "Datastore.AllocateTemplate" in str(err.value)


@pytest.mark.parametrize(("params", "name"), [
    ({"colour": "blue"}, "colour"),
    ({"net0": "name=eth0,bridge=vmbr20,ip=10.0.20.300/24"}, "net0"),
    ({"memory": "lots"}, "memory"),
])
def test_schema_rejections_name_the_parameter(proxmox: ProxmoxAPI, params: dict[str, str], name: str) -> None:
    with pytest.raises(ResourceException) as err:
        proxmox.nodes("pve1").lxc.post(vmid=9009, ostemplate=f"local:vztmpl/{TEMPLATE}", **params)
    assert err.value.status_code == 400
    assert name in (err.value.errors or {}), err.value.errors


def test_read_endpoints_have_pve_shapes(proxmox: ProxmoxAPI, pvesim_credentials: dict[str, Any]) -> None:
    nodes = pvesim_credentials["nodes"]
    cluster = proxmox.cluster.status.get()
    assert cluster[0]["type"] == "cluster" and cluster[0]["quorate"] == 1
    assert [c["name"] for c in cluster[1:]] == nodes
    bridges = {b["iface"]: b for b in proxmox.nodes(nodes[-1]).network.get(type="bridge")}
    assert bridges["vmbr20"]["cidr"] == "10.0.20.1/24" and bridges["vmbr30"]["cidr"] == "10.0.30.1/24"
    assert all(b["active"] == 1 and b["type"] == "bridge" for b in bridges.values())
    storages = {s["storage"]: s for s in proxmox.nodes("pve1").storage.get()}
    assert storages["local-lvm"]["type"] == "lvmthin" and "rootdir" in storages["local-lvm"]["content"]
    assert "vztmpl" in storages["local"]["content"]
    assert proxmox.nodes("pve1").storage("local-lvm").status.get()["total"] > 0
    status = proxmox.nodes("pve2").status.get()
    assert status["memory"]["total"] > 0 and status["cpuinfo"]["cpus"] >= 1
    assert {r["node"] for r in proxmox.cluster.resources.get(type="node")} == set(nodes)
    assert int(proxmox.cluster.nextid.get()) >= 100


# --- life cycle ------------------------------------------------------------------------------

def test_create_task_status_and_log(proxmox: ProxmoxAPI, container: dict[str, Any]) -> None:
    upid = container["upid"]
    assert upid.startswith("UPID:pve1:") and f":vzcreate:{VMID}:root@pam!psa-provision:" in upid
    assert container["status"]["exitstatus"] == "OK", container["status"]
    log = proxmox.nodes("pve1").tasks(upid).log.get(limit=1000)
    assert log[-1]["t"] == "TASK OK"
    assert [e["n"] for e in log] == list(range(1, len(log) + 1))
    first = proxmox.nodes("pve1").tasks(upid).log.get(start=0, limit=1)
    assert first == log[:1]
    conf = proxmox.nodes("pve1").lxc(VMID).config.get()
    assert conf["hostname"] == HOSTNAME and conf["memory"] == MEMORY
    assert conf["rootfs"] == f"local-lvm:vm-{VMID}-disk-0,size=4G"
    assert "ssh-public-keys" not in conf and "password" not in conf


def test_start_and_ssh_sees_hostname_ip_memory(proxmox: ProxmoxAPI, wait_task: TaskWaiter,
                                               container: dict[str, Any], ed25519_keypair: KeyPair) -> None:
    started = time.monotonic()
    assert wait_task("pve1", proxmox.nodes("pve1").lxc(VMID).status.start.post())["exitstatus"] == "OK"
    client = ssh(ed25519_keypair)
    print(f"start until SSH took {time.monotonic() - started:.1f}s")
    try:
        assert run(client, "hostname").strip() == HOSTNAME
        assert f"inet {IP}/24" in run(client, "ip -4 addr show dev eth0")
        assert int(run(client, MEMORY_LIMIT)) == MEMORY * 2**20
    finally:
        client.close()
    current = proxmox.nodes("pve1").lxc(VMID).status.current.get()
    assert current["status"] == "running" and current["maxmem"] == MEMORY * 2**20
    assert any(i.get("inet") == f"{IP}/24" for i in proxmox.nodes("pve1").lxc(VMID).interfaces.get())


def test_config_change_live_and_pending(proxmox: ProxmoxAPI, container: dict[str, Any],
                                        ed25519_keypair: KeyPair) -> None:
    ct = proxmox.nodes("pve1").lxc(VMID)
    digest = ct.config.get()["digest"]
    ct.config.put(memory=512, searchdomain="sandbox.test", digest=digest)
    with pytest.raises(ResourceException) as err:
        ct.config.put(cores=2, digest=digest)
    assert "detected modified configuration" in str(err.value)
    pending = {e["key"]: e for e in ct.pending.get()}
    assert pending["searchdomain"]["pending"] == "sandbox.test" and "pending" not in pending["memory"]
    client = ssh(ed25519_keypair)
    try:
        assert int(run(client, MEMORY_LIMIT)) == 512 * 2**20
        assert "sandbox.test" not in run(client, "cat /etc/resolv.conf")  # pending until a restart, as in PVE
    finally:
        client.close()
    ct.config.put(revert="searchdomain")
    assert "searchdomain" not in {e["key"] for e in ct.pending.get()}


def test_snapshot_then_rollback_restores_a_file(proxmox: ProxmoxAPI, wait_task: TaskWaiter,
                                                container: dict[str, Any], ed25519_keypair: KeyPair) -> None:
    ct = proxmox.nodes("pve1").lxc(VMID)
    client = ssh(ed25519_keypair)
    run(client, "echo before > /root/marker && sync")
    client.close()
    assert wait_task("pve1", ct.snapshot.post(snapname="before", description="marker"))["exitstatus"] == "OK"
    assert [s["name"] for s in ct.snapshot.get()] == ["before", "current"]
    client = ssh(ed25519_keypair)
    run(client, "echo after > /root/marker && sync")
    client.close()
    assert wait_task("pve1", ct.snapshot("before").rollback.post(start=1))["exitstatus"] == "OK"
    client = ssh(ed25519_keypair)
    try:
        assert run(client, "cat /root/marker") == "before\n"
    finally:
        client.close()
    assert wait_task("pve1", ct.snapshot("before").delete())["exitstatus"] == "OK"


def test_running_container_cannot_be_destroyed_then_stop_and_delete(
        proxmox: ProxmoxAPI, wait_task: TaskWaiter, container: dict[str, Any]) -> None:
    ct = proxmox.nodes("pve1").lxc(VMID)
    with pytest.raises(ResourceException) as err:
        ct.delete()
    assert "container is running" in str(err.value)
    assert wait_task("pve1", ct.status.stop.post())["exitstatus"] == "OK"
    assert ct.status.current.get()["status"] == "stopped"
    assert wait_task("pve1", ct.delete(purge=1))["exitstatus"] == "OK"
    assert VMID not in [r["vmid"] for r in proxmox.cluster.resources.get(type="vm")]


# --- several nodes ---------------------------------------------------------------------------

def test_containers_live_on_the_node_named(proxmox: ProxmoxAPI, wait_task: TaskWaiter, purge: Purger,
                                           template: str) -> None:
    purge(list(PLACED.values()))
    try:
        for node, vmid in PLACED.items():
            upid = proxmox.nodes(node).lxc.post(vmid=vmid, ostemplate=template, hostname=f"placed-{vmid}",
                                                rootfs="local-lvm:2", unprivileged=1, memory=128)
            assert wait_task(node, upid)["exitstatus"] == "OK"
        placed = {r["vmid"]: r["node"] for r in proxmox.cluster.resources.get(type="vm")}
        assert {v: placed.get(v) for v in PLACED.values()} == {v: n for n, v in PLACED.items()}
        with pytest.raises(ResourceException) as err:
            proxmox.nodes("pve1").lxc(PLACED["pve2"]).config.get()
        assert err.value.status_code == 500
        with pytest.raises(ResourceException) as err:
            proxmox.cluster.nextid.get(vmid=PLACED["pve3"])
        assert err.value.status_code == 400
    finally:
        purge(list(PLACED.values()))


# --- operations: idempotent up, faults, access log -------------------------------------------

def pvesim(*args: str) -> str:
    """Run the pvesim CLI (same interpreter as the tests); fail on non-zero exit."""
    proc = subprocess.run([sys.executable, "-m", "pvesim", *args], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_second_up_changes_nothing(pvesim_credentials: dict[str, Any]) -> None:
    before = json.loads(pvesim("status"))["api"]["pid"]
    creds_before = Path(pvesim_credentials["state_dir"], "credentials.json").read_text()
    out = pvesim("up")
    assert "started the API daemon" not in out and "created the sandbox CA" not in out
    assert json.loads(pvesim("status"))["api"]["pid"] == before
    assert Path(pvesim_credentials["state_dir"], "credentials.json").read_text() == creds_before


@pytest.fixture
def faults(request: pytest.FixtureRequest) -> Iterator[str]:
    """This test's owner tag for its fault rules; its rules (only its) are cleared afterwards, so a
    failing test leaves none behind and a bench or demo sharing the sandbox keeps its own."""
    owner = f"sandbox-{os.getpid()}-{request.node.name}"
    yield owner
    pvesim("fault", "clear", "--owner", owner)


@pytest.fixture
def own_token(proxmox: ProxmoxAPI) -> Iterator[tuple[str, str]]:
    """(token id, secret) of a root@pam token made for one test (privsep 0), removed afterwards: faults
    scoped to it reach no one else using the sandbox's shared tokens."""
    name = f"sandbox-{uuid.uuid4().hex[:8]}"
    made = proxmox.access.users("root@pam").token(name).post(privsep=0)
    yield made["full-tokenid"], made["value"]
    proxmox.access.users("root@pam").token(name).delete()


@pytest.fixture
def own_proxmox(pvesim_credentials: dict[str, Any], own_token: tuple[str, str]) -> ProxmoxAPI:
    """proxmoxer with `own_token`."""
    creds, (tokenid, secret) = pvesim_credentials, own_token
    user, _, name = tokenid.partition("!")
    return ProxmoxAPI(creds["host"], port=creds["port"], backend="https", verify_ssl=creds["ca_file"],
                      timeout=30, user=user, token_name=name, token_value=secret)


def test_injected_http_error_and_dropped_connection(own_proxmox: ProxmoxAPI, own_token: tuple[str, str],
                                                     faults: str) -> None:
    proxmox, scope = own_proxmox, ("--user", own_token[0], "--owner", faults)
    pvesim("fault", "http-error", "--status", "503", "--path", "^/api2/json/version$",
           "--message", "maintenance", *scope)
    with pytest.raises(ResourceException) as err:
        proxmox.version.get()
    assert err.value.status_code == 503
    assert proxmox.version.get()["release"] == "9.2"  # consumed: one use only
    pvesim("fault", "drop", "--path", "^/api2/json/nodes$", *scope)
    with pytest.raises(requests.exceptions.ConnectionError):
        proxmox.nodes.get()
    assert proxmox.nodes.get()


def test_injected_delay_hits_the_client_timeout(pvesim_credentials: dict[str, Any],
                                                own_token: tuple[str, str], faults: str) -> None:
    creds = pvesim_credentials
    url = f"{creds['url']}/api2/json/version"
    headers = {"Authorization": f"PVEAPIToken={own_token[0]}={own_token[1]}"}
    pvesim("fault", "delay", "--seconds", "3", "--path", "^/api2/json/version$", "--user", own_token[0],
           "--owner", faults)
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(url, headers=headers, verify=creds["ca_file"], timeout=0.5)
    assert requests.get(url, headers=headers, verify=creds["ca_file"], timeout=30).status_code == 200


def test_injected_task_failure(proxmox: ProxmoxAPI, wait_task: TaskWaiter, purge: Purger, template: str,
                               faults: str) -> None:
    purge([9009])
    pvesim("fault", "task-fail", "--type", "vzcreate", "--message", "storage went away", "--vmid", "9009",
           "--owner", faults)
    upid = proxmox.nodes("pve1").lxc.post(vmid=9009, ostemplate=template, rootfs="local-lvm:2",
                                          unprivileged=1)
    status = wait_task("pve1", upid)
    assert status["exitstatus"] == "storage went away"
    assert proxmox.nodes("pve1").tasks(upid).log.get()[-1]["t"] == "TASK ERROR: storage went away"
    assert 9009 not in [r["vmid"] for r in proxmox.cluster.resources.get(type="vm")]


def test_killed_guest_reads_stopped(proxmox: ProxmoxAPI, wait_task: TaskWaiter, purge: Purger,
                                    template: str) -> None:
    purge([9003])
    try:
        upid = proxmox.nodes("pve1").lxc.post(vmid=9003, ostemplate=template, rootfs="local-lvm:2",
                                              unprivileged=1, start=1, memory=128)
        assert wait_task("pve1", upid)["exitstatus"] == "OK"
        assert proxmox.nodes("pve1").lxc(9003).status.current.get()["status"] == "running"
        pvesim("fault", "kill-guest", "9003")
        assert proxmox.nodes("pve1").lxc(9003).status.current.get()["status"] == "stopped"
    finally:
        purge([9003])


def test_expired_tickets_are_refused_then_a_new_login_works(pvesim_credentials: dict[str, Any]) -> None:
    creds = pvesim_credentials
    api = ProxmoxAPI(creds["host"], port=creds["port"], user=creds["user"], password=creds["password"],
                     verify_ssl=creds["ca_file"])
    assert api.version.get()
    pvesim("fault", "expire-tickets")
    with pytest.raises(ResourceException) as err:
        api.version.get()
    assert err.value.status_code == 401
    again = ProxmoxAPI(creds["host"], port=creds["port"], user=creds["user"], password=creds["password"],
                       verify_ssl=creds["ca_file"])
    assert again.version.get()


def test_access_log_records_requests_with_secrets_masked(proxmox_ticket: ProxmoxAPI,
                                                         pvesim_credentials: dict[str, Any]) -> None:
    proxmox_ticket.nodes("pve1").status.get()
    lines = Path(pvesim_credentials["access_log"]).read_text().splitlines()
    entries = [json.loads(line) for line in lines[-2000:]]
    logins = [e for e in entries if e["path"] == "/api2/json/access/ticket" and e["status"] == 200]
    assert logins and all(e["params"]["password"] == "***" for e in logins)
    assert pvesim_credentials["password"] not in "\n".join(lines)
    assert pvesim_credentials["token_secret"] not in "\n".join(lines)
    status = [e for e in entries if e["path"] == "/api2/json/nodes/pve1/status"]
    assert status[-1]["user"] == "root@pam" and status[-1]["method"] == "GET"
