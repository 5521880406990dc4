"""vzdump and restore on the real LXC backend: a file written in CT 9060 comes back in CT 9061 restored
from its backup; a restore over an existing vmid is refused; a truncated archive fails its restore task
and leaves no container behind."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest
from proxmoxer import ProxmoxAPI
from proxmoxer.core import ResourceException

from pvesim.paths import LXC_PATH, StateDir

if TYPE_CHECKING:  # fixtures' types from this directory's conftest.py
    from conftest import Purger, TaskWaiter

pytestmark = pytest.mark.sandbox

SOURCE, RESTORED, BROKEN = 9060, 9061, 9062
MARKER = "backed up by vzdump"


def attach(vmid: int, command: str) -> str:
    """Run a shell command inside a running container as its root."""
    result = subprocess.run(["lxc-attach", "-P", str(LXC_PATH), "-n", str(vmid), "--", "sh", "-c", command],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, f"{command}: {result.stderr}"
    return result.stdout


def _delete_backups(proxmox: ProxmoxAPI, wait_task: TaskWaiter) -> None:
    local = proxmox.nodes("pve1").storage("local")
    for row in local.content.get(content="backup"):
        if row.get("vmid") in (SOURCE, BROKEN):
            wait_task("pve1", local.content(quote(row["volid"], safe="")).delete())


@pytest.fixture(scope="module")
def backup(proxmox: ProxmoxAPI, wait_task: TaskWaiter, purge: Purger,
           template: str) -> Iterator[dict[str, Any]]:
    """CT 9060 running with a marker file, backed up (snapshot mode, zstd) into `local`."""
    purge([SOURCE, RESTORED, BROKEN])
    _delete_backups(proxmox, wait_task)
    node = proxmox.nodes("pve1")
    upid = node.lxc.post(vmid=SOURCE, ostemplate=template, hostname="vzdump-source", memory=256, swap=0,
                         rootfs="local-lvm:2", unprivileged=1,
                         net0="name=eth0,bridge=vmbr20,ip=10.0.20.160/24,gw=10.0.20.1")
    assert wait_task("pve1", upid)["exitstatus"] == "OK"
    assert wait_task("pve1", node.lxc(SOURCE).status.start.post())["exitstatus"] == "OK"
    attach(SOURCE, f"echo '{MARKER}' > /root/marker && sync")
    upid = node.vzdump.post(vmid=SOURCE, mode="snapshot", storage="local", compress="zstd",
                            **{"notes-template": "{{guestname}}"})
    status = wait_task("pve1", upid)
    log = [entry["t"] for entry in node.tasks(upid).log.get(limit=1000)]
    rows = node.storage("local").content.get(content="backup", vmid=SOURCE)
    yield {"status": status, "log": log, "rows": rows}
    purge([SOURCE, RESTORED, BROKEN])
    _delete_backups(proxmox, wait_task)


def test_vzdump_task_and_backup_content(backup: dict[str, Any]) -> None:
    assert backup["status"]["exitstatus"] == "OK", backup["log"]
    log = backup["log"]
    assert log[0].startswith(f"INFO: starting new backup job: vzdump {SOURCE} --mode snapshot")
    for line in (f"INFO: Starting Backup of VM {SOURCE} (lxc)", "INFO: status = running",
                 "INFO: CT Name: vzdump-source", "INFO: including mount point rootfs ('/') in backup",
                 "INFO: create storage snapshot 'vzdump'", "INFO: Backup job finished successfully"):
        assert line in log, log
    assert any(line.startswith("INFO: Total bytes written: ") for line in log), log
    [row] = backup["rows"]
    assert row["volid"].startswith(f"local:backup/vzdump-lxc-{SOURCE}-") and row["format"] == "tar.zst"
    assert (row["subtype"], row["vmid"], row["notes"]) == ("lxc", SOURCE, "vzdump-source")
    assert row["size"] > 10 * 1024**2


def test_restore_into_a_new_vmid_boots_with_the_file(proxmox: ProxmoxAPI, wait_task: TaskWaiter,
                                                     backup: dict[str, Any]) -> None:
    node = proxmox.nodes("pve1")
    volid = backup["rows"][0]["volid"]
    upid = node.lxc.post(vmid=RESTORED, ostemplate=volid, restore=1, storage="local-lvm", unique=1)
    status = wait_task("pve1", upid)
    assert status["exitstatus"] == "OK", [e["t"] for e in node.tasks(upid).log.get(limit=1000)]
    config = node.lxc(RESTORED).config.get()
    assert config["hostname"] == "vzdump-source" and config["unprivileged"] == 1
    assert config["rootfs"].startswith(f"local-lvm:vm-{RESTORED}-disk-0")
    assert config["net0"] != node.lxc(SOURCE).config.get()["net0"]  # unique=1: a new MAC
    # the restored CT keeps the source's IP address: the source steps aside before it starts
    assert wait_task("pve1", node.lxc(SOURCE).status.stop.post())["exitstatus"] == "OK"
    assert wait_task("pve1", node.lxc(RESTORED).status.start.post())["exitstatus"] == "OK"
    assert attach(RESTORED, "cat /root/marker") == MARKER + "\n"
    assert attach(RESTORED, "stat -c %u:%g /root/marker") == "0:0\n"  # the guest's root, in its namespace
    host_file = StateDir().volume(RESTORED) / "root" / "marker"
    assert (host_file.stat().st_uid, host_file.stat().st_gid) == (100000, 100000)


def test_restore_into_an_occupied_vmid_is_refused(proxmox: ProxmoxAPI, backup: dict[str, Any]) -> None:
    with pytest.raises(ResourceException) as caught:
        proxmox.nodes("pve1").lxc.post(vmid=SOURCE, ostemplate=backup["rows"][0]["volid"], restore=1,
                                       storage="local-lvm")
    assert caught.value.status_code == 500
    assert f"CT {SOURCE} already exists on node 'pve1'" in str(caught.value)


def test_truncated_archive_fails_the_restore(proxmox: ProxmoxAPI, wait_task: TaskWaiter,
                                             backup: dict[str, Any]) -> None:
    dumpdir = StateDir().backup_dir
    good = dumpdir / backup["rows"][0]["volid"].split("/", 1)[1]
    cut = dumpdir / f"vzdump-lxc-{BROKEN}-2000_01_01-00_00_00.tar.zst"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    node = proxmox.nodes("pve1")
    upid = node.lxc.post(vmid=BROKEN, ostemplate=f"local:backup/{cut.name}", restore=1, storage="local-lvm")
    status = wait_task("pve1", upid)
    # pve-container runs tar inside the container's user mapping for an unprivileged CT
    # (Create.pm restore_archive: @$userns_cmd, 'tar', 'xpf', '-', ...), so the failed command names it.
    userns = "lxc-usernsexec -m u:0:100000:65536 -m g:0:100000:65536 --"
    assert status["exitstatus"].startswith(
        f"unable to restore CT {BROKEN} - command '{userns} tar xpf - "), status
    assert status["exitstatus"].endswith("failed: exit code 2")
    assert BROKEN not in [r["vmid"] for r in proxmox.cluster.resources.get(type="vm")]
    assert not StateDir().volume(BROKEN).exists()
