"""vzdump, backup content and restore through App.handle, over a backend whose containers are plain
directories: the API layer's checks, task logs and config handling, with real tar archives.
The real LXC backend is exercised by tests/sandbox/test_pvesim_vzdump_live.py."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from test_pvesim_api_logic import Client

from pvesim import auth, dumptar, handlers  # noqa: F401
from pvesim.backend import BackendError, Log, RuntimeStatus
from pvesim.paths import StateDir
from pvesim.server import App

TEMPLATE = "debian-12-standard_12.7-1_amd64.tar.zst"


class DirBackend:
    """Each container a directory tree; archives and restores made by dumptar (owner 0)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.running: set[int] = set()
        self.snaps: set[tuple[int, str]] = set()

    def rootfs(self, vmid: int) -> Path:
        return self.root / str(vmid)

    def create(self, vmid: int, conf: Mapping[str, str], template: Path, keys: str | None, log: Log) -> None:
        (self.rootfs(vmid) / "sbin").mkdir(parents=True)
        (self.rootfs(vmid) / "etc").mkdir()

    def update(self, vmid: int, conf: Mapping[str, str], log: Log) -> None:
        pass

    def start(self, vmid: int, log: Log) -> None:
        self.running.add(vmid)

    def stop(self, vmid: int, log: Log) -> None:
        self.running.discard(vmid)

    def shutdown(self, vmid: int, timeout: int, log: Log) -> None:
        self.running.discard(vmid)

    def destroy(self, vmid: int, log: Log) -> None:
        import shutil

        shutil.rmtree(self.rootfs(vmid))

    def is_running(self, vmid: int) -> bool:
        return self.status(vmid).status == "running"

    def status(self, vmid: int) -> RuntimeStatus:
        if not self.exists(vmid):
            raise BackendError(f"CT {vmid} does not exist")
        return RuntimeStatus("running" if vmid in self.running else "stopped")

    def interfaces(self, vmid: int) -> list[dict[str, str]]:
        return []

    def snapshot(self, vmid: int, name: str, log: Log) -> None:
        self.snaps.add((vmid, name))

    def rollback(self, vmid: int, name: str, log: Log) -> None:
        pass

    def delete_snapshot(self, vmid: int, name: str, log: Log) -> None:
        self.snaps.discard((vmid, name))

    def resize(self, vmid: int, disk: str, size_bytes: int, log: Log) -> None:
        pass

    def exists(self, vmid: int) -> bool:
        return self.rootfs(vmid).is_dir()

    def suspend_copy(self, vmid: int, conf: Mapping[str, str], target: Path, excludes: list[str],
                     log: Log) -> None:
        raise BackendError("not used here")

    def archive(self, vmid: int, conf: Mapping[str, str], mode: str, tmpdir: Path, target: Path,
                compress: list[str] | None, excludes: list[str], log: Log) -> None:
        assert mode == "snapshot" and (vmid, "vzdump") in self.snaps
        dumptar.write(dumptar.create_command(self.rootfs(vmid), tmpdir, 0, excludes), compress, target, log)

    def restore(self, vmid: int, conf: Mapping[str, str], archive: Path, log: Log) -> None:
        self.rootfs(vmid).mkdir(parents=True)
        try:
            dumptar.extract(archive, self.rootfs(vmid), 0, log)
        except dumptar.TarError as e:
            raise BackendError(str(e)) from e


@pytest.fixture
def secrets() -> dict[str, Any]:
    return auth.new_secrets()


@pytest.fixture
def app(tmp_path: Path, secrets: dict[str, Any]) -> Iterator[App]:
    state = StateDir(tmp_path / "state")
    state.template_cache.mkdir(parents=True)
    (state.template_cache / TEMPLATE).write_bytes(b"not really a tarball")
    yield App(state, ["pve1", "pve2"], DirBackend(tmp_path / "cts"), auth.Auth(secrets))


class Api(Client):
    """The API-logic tests' client, with the task's log next to its status."""

    def task_log(self, method: str, url: str, **params: Any) -> tuple[dict[str, Any], list[str]]:
        upid = self.ok(method, url, **params)
        deadline = time.monotonic() + 20
        while (rec := self.app.tasks.status(upid)) is not None and rec["status"] == "running":
            assert time.monotonic() < deadline, upid
            time.sleep(0.01)
        assert rec is not None
        return rec, self.app.tasks.log(upid)


@pytest.fixture
def api(app: App, secrets: dict[str, Any]) -> Api:
    secret = secrets["tokens"]["psa-provision"]
    return Api(app, {"authorization": f"PVEAPIToken=root@pam!psa-provision={secret}"})


def _container(api: Api, vmid: int = 9100) -> None:
    rec, _ = api.task_log("POST", "/nodes/pve1/lxc", vmid=vmid, ostemplate=f"local:vztmpl/{TEMPLATE}",
                      rootfs="local-lvm:2", hostname="web", memory=256, description="the web server",
                      net0="name=eth0,bridge=vmbr20,ip=10.0.20.60/24,gw=10.0.20.1")
    assert rec["exitstatus"] == "OK"
    backend: DirBackend = api.app.backend  # type: ignore[assignment]
    (backend.rootfs(vmid) / "root").mkdir()
    (backend.rootfs(vmid) / "root/marker").write_text("kept\n")
    backend.running.add(vmid)


def _backup(api: Api, vmid: int = 9100, **extra: Any) -> tuple[dict[str, Any], list[str]]:
    return api.task_log("POST", "/nodes/pve1/vzdump", vmid=str(vmid), mode="snapshot", storage="local",
                    compress="zstd", **extra)


def test_vzdump_task_log_archive_and_content(api: Api) -> None:
    _container(api)
    rec, log = _backup(api, **{"notes-template": "{{guestname}} ({{vmid}})"})
    assert rec["exitstatus"] == "OK" and rec["type"] == "vzdump" and rec["id"] == "9100"
    assert log[0] == ("INFO: starting new backup job: vzdump 9100 --mode snapshot --storage local "
                      "--compress zstd --notes-template '{{guestname}} ({{vmid}})' --node pve1")
    expected = ["INFO: Starting Backup of VM 9100 (lxc)", "INFO: status = running", "INFO: CT Name: web",
                "INFO: including mount point rootfs ('/') in backup", "INFO: backup mode: snapshot",
                "INFO: ionice priority: 7", "INFO: create storage snapshot 'vzdump'",
                "INFO: adding notes to backup", "INFO: cleanup temporary 'vzdump' snapshot",
                "INFO: Backup job finished successfully", "TASK OK"]
    assert [line for line in log if line in expected] == expected
    assert any(line.startswith("INFO: creating vzdump archive '") and line.endswith(".tar.zst'")
               for line in log)
    assert any(line.startswith("INFO: Total bytes written: ") for line in log)
    assert any(line.startswith("INFO: Finished Backup of VM 9100 (00:00:") for line in log)
    config = api.ok("GET", "/nodes/pve1/lxc/9100/config")
    assert "lock" not in config and "parent" not in config  # unlocked, snapshot gone
    rows = api.ok("GET", "/nodes/pve1/storage/local/content", content="backup")
    assert len(rows) == 1
    row = rows[0]
    assert row["volid"].startswith("local:backup/vzdump-lxc-9100-") and row["volid"].endswith(".tar.zst")
    assert (row["format"], row["subtype"], row["vmid"]) == ("tar.zst", "lxc", 9100)
    assert row["notes"] == "web (9100)"
    dumpdir = api.app.state.backup_dir
    logfile = dumpdir / (row["volid"].split("/", 1)[1].removesuffix(".tar.zst") + ".log")
    assert "INFO: Starting Backup of VM 9100 (lxc)" in logfile.read_text()
    conf = api.ok("GET", "/nodes/pve1/vzdump/extractconfig", volume=row["volid"])
    assert "hostname: web" in conf and "lock" not in conf and conf.startswith("#the web server\n")


def test_vzdump_refuses_a_storage_without_backup_content(api: Api) -> None:
    _container(api)
    rec, _ = api.task_log("POST", "/nodes/pve1/vzdump", vmid="9100", storage="local-lvm")
    assert rec["exitstatus"] == ("could not get storage information for 'local-lvm': can't use storage "
                                 "'local-lvm' for backups - wrong content type")


def test_vzdump_of_a_locked_container_fails_the_job(api: Api) -> None:
    _container(api)
    status, body = api("POST", "/nodes/pve1/vzdump", vmid="9100", bogus="1")
    assert status == 400 and "bogus" in body["errors"]
    conf_path = api.app.state.lxc_conf("pve1", 9100)
    conf_path.write_text("lock: migrate\n" + conf_path.read_text())
    rec, log = _backup(api)
    assert rec["exitstatus"] == "job errors"
    assert "ERROR: Backup of VM 9100 failed - CT is locked (migrate)" in log
    assert "INFO: Backup job finished with errors" in log


def test_restore_into_a_new_vmid_and_refusals(api: Api) -> None:
    _container(api)
    _backup(api)
    volid = api.ok("GET", "/nodes/pve1/storage/local/content", content="backup")[0]["volid"]
    status, body = api("POST", "/nodes/pve1/lxc", vmid=9100, ostemplate=volid, restore=1, storage="local-lvm")
    assert status == 500 and body["message"] == "CT 9100 already exists on node 'pve1'"
    rec, log = api.task_log("POST", "/nodes/pve1/lxc", vmid=9101, ostemplate=volid, restore=1,
                        storage="local-lvm", memory=512)
    assert rec["exitstatus"] == "OK" and rec["type"] == "vzrestore", log
    assert log[:1] == [f"recovering backed-up configuration from '{volid}'"]
    assert f"restoring '{volid}' now.." in log and "merging backed-up and given configuration.." in log
    config = api.ok("GET", "/nodes/pve1/lxc/9101/config")
    assert (config["hostname"], config["memory"], config["description"]) == ("web", 512, "the web server")
    assert config["rootfs"] == "local-lvm:vm-9101-disk-0,size=2G"
    original = api.ok("GET", "/nodes/pve1/lxc/9100/config")
    assert config["net0"] == original["net0"]  # MAC kept unless unique=1
    backend: DirBackend = api.app.backend  # type: ignore[assignment]
    assert (backend.rootfs(9101) / "root/marker").read_text() == "kept\n"
    rec, _ = api.task_log("POST", "/nodes/pve1/lxc", vmid=9102, ostemplate=volid, restore=1,
                          storage="local-lvm", unique=1)
    assert api.ok("GET", "/nodes/pve1/lxc/9102/config")["net0"] != original["net0"]
    # a net0 given without hwaddr, no unique (as `psa-provision restore` asks): that address, a new MAC
    given = "name=eth0,bridge=vmbr20,ip=10.0.20.61/24,gw=10.0.20.1"
    rec, _ = api.task_log("POST", "/nodes/pve1/lxc", vmid=9103, ostemplate=volid, restore=1,
                          storage="local-lvm", net0=given)
    net0 = api.ok("GET", "/nodes/pve1/lxc/9103/config")["net0"]
    assert "ip=10.0.20.61/24" in net0.split(",") and "hwaddr=" in net0
    assert net0.split("hwaddr=")[1][:17] != original["net0"].split("hwaddr=")[1][:17]


def test_truncated_archive_fails_the_restore_and_leaves_nothing(api: Api) -> None:
    _container(api)
    backend: DirBackend = api.app.backend  # type: ignore[assignment]
    (backend.rootfs(9100) / "big").write_bytes(os.urandom(2 * 1024**2))  # the cut falls in the data
    _backup(api)
    volid = api.ok("GET", "/nodes/pve1/storage/local/content", content="backup")[0]["volid"]
    path = api.app.state.backup_dir / volid.split("/", 1)[1]
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    rec, _ = api.task_log("POST", "/nodes/pve1/lxc", vmid=9103, ostemplate=volid, restore=1,
                      storage="local-lvm")
    assert rec["exitstatus"].startswith("unable to restore CT 9103 - command 'tar xpf - --zstd")
    assert rec["exitstatus"].endswith("failed: exit code 2")
    assert not api.app.state.lxc_conf("pve1", 9103).exists() and not backend.exists(9103)


def test_delete_backup_respects_protection(api: Api) -> None:
    _container(api)
    _backup(api, protected=1)
    volid = api.ok("GET", "/nodes/pve1/storage/local/content", content="backup")[0]["volid"]
    url = f"/nodes/pve1/storage/local/content/{quote(volid, safe='')}"
    rec, _ = api.task_log("DELETE", url)
    assert rec["exitstatus"].startswith("cannot remove protected archive")
    api.ok("PUT", url, protected=0)
    rec, log = api.task_log("DELETE", url)
    assert rec["exitstatus"] == "OK" and rec["type"] == "imgdel" and f"Removed volume '{volid}'" in log
    assert api.ok("GET", "/nodes/pve1/storage/local/content", content="backup") == []
    assert list(api.app.state.backup_dir.iterdir()) == []
