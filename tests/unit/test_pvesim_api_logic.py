"""The API pipeline (auth, CSRF, validation, permissions, handlers, tasks) over a small in-memory backend.

The real LXC backend is exercised by tests/sandbox/test_pvesim_api.py; here only the API layer's
own logic is under test, through App.handle (no sockets).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from pvesim import acl, auth, handlers  # noqa: F401
from pvesim.backend import BackendError, Log, RuntimeStatus
from pvesim.paths import StateDir
from pvesim.server import App

TEMPLATE = "debian-12-standard_12.7-1_amd64.tar.zst"


class MemoryBackend:
    """Containers as dicts: enough to see what the API layer asks for."""

    def __init__(self) -> None:
        self.cts: dict[int, dict[str, Any]] = {}
        self.snaps: dict[tuple[int, str], str] = {}
        self.calls: list[tuple[str, int]] = []

    def create(self, vmid: int, conf: Mapping[str, str], template: Path, keys: str | None, log: Log) -> None:
        log(f"extracting archive '{template}'")
        self.cts[vmid] = {"conf": dict(conf), "running": False, "file": "original", "keys": keys}

    def update(self, vmid: int, conf: Mapping[str, str], log: Log) -> None:
        self.calls.append(("update", vmid))
        self.cts[vmid]["conf"] = dict(conf)

    def start(self, vmid: int, log: Log) -> None:
        self.calls.append(("start", vmid))
        self.cts[vmid]["running"] = True

    def stop(self, vmid: int, log: Log) -> None:
        self.cts[vmid]["running"] = False

    def shutdown(self, vmid: int, timeout: int, log: Log) -> None:
        self.cts[vmid]["running"] = False

    def destroy(self, vmid: int, log: Log) -> None:
        del self.cts[vmid]

    def is_running(self, vmid: int) -> bool:
        return self.status(vmid).status == "running"

    def status(self, vmid: int) -> RuntimeStatus:
        ct = self.cts.get(vmid)
        if ct is None:
            raise BackendError(f"CT {vmid} does not exist")
        return RuntimeStatus("running" if ct["running"] else "stopped", pid=4242 if ct["running"] else None)

    def interfaces(self, vmid: int) -> list[dict[str, str]]:
        return [{"name": "eth0", "hwaddr": "bc:24:11:00:00:01", "inet": "10.0.20.50/24"}]

    def snapshot(self, vmid: int, name: str, log: Log) -> None:
        self.snaps[(vmid, name)] = self.cts[vmid]["file"]

    def rollback(self, vmid: int, name: str, log: Log) -> None:
        self.cts[vmid].update(running=False, file=self.snaps[(vmid, name)])

    def delete_snapshot(self, vmid: int, name: str, log: Log) -> None:
        del self.snaps[(vmid, name)]

    def resize(self, vmid: int, disk: str, size_bytes: int, log: Log) -> None:
        self.cts[vmid]["size"] = size_bytes

    def exists(self, vmid: int) -> bool:
        return vmid in self.cts


class Client:
    """Calls App.handle the way the HTTP layer does and returns (status, body)."""

    def __init__(self, app: App, headers: dict[str, str]) -> None:
        self.app, self.headers = app, headers

    def __call__(self, method: str, url: str, **params: Any) -> tuple[int, dict[str, Any]]:
        status, _reason, body, _user = self.app.handle(method, url, params, dict(self.headers))
        return status, body

    def ok(self, method: str, url: str, **params: Any) -> Any:
        status, body = self(method, url, **params)
        assert status == 200, body
        return body["data"]

    def task(self, method: str, url: str, **params: Any) -> dict[str, Any]:
        upid = self.ok(method, url, **params)
        deadline = time.monotonic() + 10
        while True:
            rec = self.app.tasks.status(upid)
            assert rec is not None, upid
            if rec["status"] != "running":
                return rec
            assert time.monotonic() < deadline, f"task {upid} still running after 10s"
            time.sleep(0.01)


@pytest.fixture
def secrets() -> dict[str, Any]:
    return auth.new_secrets()


@pytest.fixture
def app(tmp_path: Path, secrets: dict[str, Any]) -> Iterator[App]:
    state = StateDir(tmp_path)
    state.template_cache.mkdir(parents=True)
    (state.template_cache / TEMPLATE).write_bytes(b"not really a tarball")
    yield App(state, ["pve1", "pve2"], MemoryBackend(), auth.Auth(secrets))


def token(app: App, secrets: dict[str, Any], name: str = "psa-provision") -> Client:
    return Client(app, {"authorization": f"PVEAPIToken=root@pam!{name}={secrets['tokens'][name]}"})


@pytest.fixture
def api(app: App, secrets: dict[str, Any]) -> Client:
    return token(app, secrets)


def create(api: Client, vmid: int = 9000, node: str = "pve1", **extra: Any) -> dict[str, Any]:
    return api.task("POST", f"/nodes/{node}/lxc", vmid=vmid, ostemplate=f"local:vztmpl/{TEMPLATE}",
                    rootfs="local-lvm:8", unprivileged=1, hostname=f"ct{vmid}",
                    net0="name=eth0,bridge=vmbr20,ip=10.0.20.50/24,gw=10.0.20.1", **extra)


def test_ticket_login_and_csrf(app: App, secrets: dict[str, Any]) -> None:
    anon = Client(app, {})
    assert anon("GET", "/version")[0] == 401
    assert anon("POST", "/access/ticket", username="root@pam", password="nope")[0] == 401
    login = anon.ok("POST", "/access/ticket", username="root@pam", password=secrets["password"])
    assert login["username"] == "root@pam" and login["ticket"].startswith("PVE:root@pam:")
    cookie = {"cookie": f"PVEAuthCookie={login['ticket']}"}
    assert Client(app, cookie).ok("GET", "/version")["release"] == "9.2"
    status, body = Client(app, cookie)("POST", "/nodes/pve1/lxc/9000/status/start")
    assert (status, body["message"]) == (401, "Permission denied - invalid csrf token")
    with_csrf = Client(app, {**cookie, "csrfpreventiontoken": login["CSRFPreventionToken"]})
    assert with_csrf("POST", "/nodes/pve1/lxc/9000/status/start")[0] == 500  # past auth: no such CT
    app.faults.expire_tickets()
    assert Client(app, cookie)("GET", "/version")[0] == 401
    fresh = anon.ok("POST", "/access/ticket", username="root@pam", password=secrets["password"])
    assert Client(app, {"cookie": f"PVEAuthCookie={fresh['ticket']}"}).ok("GET", "/version")


def test_unknown_paths_and_methods_are_501(api: Client) -> None:
    assert api("GET", "/nodes/pve1/qemu-nope")[0] == 501
    assert api("PATCH", "/version")[0] == 501


def test_schema_rejection_names_the_parameter(api: Client) -> None:
    status, body = api("POST", "/nodes/pve1/lxc", vmid=9000, ostemplate="local:vztmpl/x", memory="lots",
                       net0="name=eth0,ip=300.1.1.1/24", colour="blue")
    assert status == 400
    assert set(body["errors"]) == {"memory", "net0", "colour"}


def test_readonly_and_restricted_tokens(app: App, secrets: dict[str, Any], api: Client) -> None:
    create(api)
    ro = token(app, secrets, "readonly")
    assert ro.ok("GET", "/nodes/pve1/lxc/9000/config")["hostname"] == "ct9000"
    status, body = ro("POST", "/nodes/pve1/lxc/9000/status/start")
    assert (status, body["message"]) == (403, "Permission check failed (/vms/9000, VM.PowerMgmt)")
    restricted = token(app, secrets, "restricted")
    status, body = restricted("POST", "/nodes/pve1/lxc", vmid=9001, ostemplate=f"local:vztmpl/{TEMPLATE}",
                              rootfs="local-lvm:8", unprivileged=1)
    # API2/LXC.pm create_vm: without VM.Allocate on /vms/<vmid> or the pool, a bare raise_perm_exc()
    assert (status, body["message"]) == (403, "Permission check failed")
    assert restricted("POST", "/nodes/pve1/aplinfo", storage="local", template=TEMPLATE)[0] == 403
    assert restricted.task("POST", "/nodes/pve1/lxc/9000/status/start")["exitstatus"] == "OK"


def test_create_writes_pve_config_and_never_returns_keys(app: App, api: Client) -> None:
    extra: dict[str, Any] = {"ssh-public-keys": "ssh-ed25519 AAAA test", "password": "s3cret-pw"}
    rec = create(api, start=1, **extra)
    assert rec["exitstatus"] == "OK" and rec["type"] == "vzcreate" and rec["id"] == "9000"
    conf = api.ok("GET", "/nodes/pve1/lxc/9000/config")
    assert conf["rootfs"] == "local-lvm:vm-9000-disk-0,size=8G"
    assert conf["net0"].startswith("name=eth0,bridge=vmbr20,gw=10.0.20.1,hwaddr=BC:24:11:")
    assert conf["net0"].endswith(",ip=10.0.20.50/24,type=veth")
    assert "ssh-public-keys" not in conf and "password" not in conf and "lock" not in conf
    assert len(conf["digest"]) == 40
    assert app.backend.cts[9000]["keys"] == "ssh-ed25519 AAAA test"  # type: ignore[attr-defined]
    assert "s3cret-pw" not in app.state.lxc_conf("pve1", 9000).read_text()
    assert api.ok("GET", "/nodes/pve1/lxc/9000/status/current")["status"] == "running"
    status, body = api("POST", "/nodes/pve2/lxc", vmid=9000, ostemplate=f"local:vztmpl/{TEMPLATE}")
    assert (status, body["message"]) == (500, "CT 9000 already exists on node 'pve1'")
    status, body = api("GET", "/nodes/pve2/lxc/9000/config")
    assert body["message"] == "Configuration file 'nodes/pve2/lxc/9000.conf' does not exist"


def test_live_and_pending_changes(app: App, api: Client) -> None:
    create(api, start=1)
    digest = api.ok("GET", "/nodes/pve1/lxc/9000/config")["digest"]
    api.ok("PUT", "/nodes/pve1/lxc/9000/config", memory=1024, hostname="renamed", nameserver="10.0.20.1",
           digest=digest)
    status, body = api("PUT", "/nodes/pve1/lxc/9000/config", cores=2, digest=digest)
    assert status == 500 and "detected modified configuration" in body["message"]
    pending = {e["key"]: e for e in api.ok("GET", "/nodes/pve1/lxc/9000/pending")}
    assert pending["memory"] == {"key": "memory", "value": "1024"}
    assert pending["hostname"] == {"key": "hostname", "value": "renamed"}  # fast-plugged, as in pve-container
    assert pending["nameserver"] == {"key": "nameserver", "pending": "10.0.20.1"}
    assert "nameserver" not in api.ok("GET", "/nodes/pve1/lxc/9000/config", current=1)
    assert api.ok("GET", "/nodes/pve1/lxc/9000/config")["nameserver"] == "10.0.20.1"
    api.task("POST", "/nodes/pve1/lxc/9000/status/reboot")
    assert api.ok("GET", "/nodes/pve1/lxc/9000/pending") == [
        {"key": k, "value": v} for k, v in sorted(app.backend.cts[9000]["conf"].items())  # type: ignore[attr-defined]
    ]
    assert app.backend.cts[9000]["conf"]["nameserver"] == "10.0.20.1"  # type: ignore[attr-defined]


def test_snapshot_rollback_and_delete(app: App, api: Client) -> None:
    backend: MemoryBackend = app.backend  # type: ignore[assignment]
    create(api)
    rec = api.task("POST", "/nodes/pve1/lxc/9000/snapshot", snapname="s1", description="before")
    assert rec["exitstatus"] == "OK"
    again = api.task("POST", "/nodes/pve1/lxc/9000/snapshot", snapname="s1")
    assert again["exitstatus"] == "snapshot name 's1' already used"  # found by the task, as in PVE
    assert api("POST", "/nodes/pve1/lxc/9000/snapshot", snapname="current")[0] == 500
    assert api.task("POST", "/nodes/pve1/lxc/9000/snapshot/nope/rollback")["exitstatus"] == (
        "snapshot 'nope' does not exist")
    backend.cts[9000]["file"] = "changed"
    api.ok("PUT", "/nodes/pve1/lxc/9000/config", memory=2048)
    snaps = api.ok("GET", "/nodes/pve1/lxc/9000/snapshot")
    assert [s["name"] for s in snaps] == ["s1", "current"] and snaps[1]["parent"] == "s1"
    assert api.ok("GET", "/nodes/pve1/lxc/9000/snapshot/s1/config")["memory"] == "512"
    assert api.task("POST", "/nodes/pve1/lxc/9000/snapshot/s1/rollback")["exitstatus"] == "OK"
    assert backend.cts[9000]["file"] == "original"
    assert api.ok("GET", "/nodes/pve1/lxc/9000/config")["memory"] == 512
    api.task("DELETE", "/nodes/pve1/lxc/9000/snapshot/s1")
    assert [s["name"] for s in api.ok("GET", "/nodes/pve1/lxc/9000/snapshot")] == ["current"]
    assert "parent" not in api.ok("GET", "/nodes/pve1/lxc/9000/config")


def test_destroy_refuses_running_container(app: App, api: Client) -> None:
    create(api, start=1)
    status, body = api("DELETE", "/nodes/pve1/lxc/9000")
    assert (status, body["message"]) == (500, "unable to destroy CT 9000 - container is running")
    api.task("POST", "/nodes/pve1/lxc/9000/status/stop")
    assert api.task("DELETE", "/nodes/pve1/lxc/9000", purge=1)["exitstatus"] == "OK"
    assert not app.state.lxc_conf("pve1", 9000).exists()
    assert api.ok("GET", "/cluster/nextid", vmid=9000) == "9000"  # PVE sends the number as a string


def test_cluster_resources_place_containers_on_their_nodes(api: Client) -> None:
    create(api, 9000, "pve1")
    create(api, 9001, "pve2")
    vms = {r["vmid"]: r["node"] for r in api.ok("GET", "/cluster/resources", type="vm")}
    assert vms == {9000: "pve1", 9001: "pve2"}
    status, body = api("GET", "/cluster/nextid", vmid=9001)
    assert (status, body["errors"]) == (400, {"vmid": "VM 9001 already exists"})
    assert api.ok("GET", "/cluster/nextid") == "100"
    vols = api.ok("GET", "/nodes/pve2/storage/local-lvm/content")
    assert [v["volid"] for v in vols] == ["local-lvm:vm-9001-disk-0"]


def test_cluster_resources_status_is_the_last_sample_the_nodes_list_now(app: App, api: Client) -> None:
    """pve-manager answers /cluster/resources from pvestatd's last broadcast (every 10 s): a container
    not sampled yet is `unknown` with no name, one started since its sample still `stopped`; the node's
    own list (vmstatus) says what is true now. Lock and tags come from the config at once."""
    from pvesim.rrd_sampler import sampler_for

    create(api, 9000, "pve1")

    def row() -> dict[str, Any]:
        (entry,) = api.ok("GET", "/cluster/resources", type="vm")
        return dict(entry)

    assert (row()["status"], "name" in row()) == ("unknown", False)
    sampler_for(app).sample()
    assert (row()["status"], row()["name"]) == ("stopped", "ct9000")
    api.task("POST", "/nodes/pve1/lxc/9000/status/start")
    assert row()["status"] == "stopped"
    assert [(c["vmid"], c["status"]) for c in api.ok("GET", "/nodes/pve1/lxc")] == [(9000, "running")]
    api.ok("PUT", "/nodes/pve1/lxc/9000/config", tags="psa")
    assert (row()["status"], row()["tags"]) == ("stopped", "psa")
    sampler_for(app).sample()
    assert row()["status"] == "running"
    api.task("POST", "/nodes/pve1/lxc/9000/status/stop")
    api.task("DELETE", "/nodes/pve1/lxc/9000")
    sampler_for(app).sample()
    assert api.ok("GET", "/cluster/resources", type="vm") == []


def test_task_failure_fault_and_log_paging(app: App, api: Client) -> None:
    app.faults.add({"kind": "task-fail", "count": 1, "type": "vzcreate", "message": "disk on fire"})
    rec = create(api)
    assert rec["exitstatus"] == "disk on fire"
    assert not app.state.lxc_conf("pve1", 9000).exists()  # a failed create leaves nothing behind
    log = api("GET", f"/nodes/pve1/tasks/{rec['upid']}/log", start=0, limit=1)[1]
    assert log["total"] >= 1 and log["data"] == [{"n": 1, "t": log["data"][0]["t"]}]
    full = api.ok("GET", f"/nodes/pve1/tasks/{rec['upid']}/log")
    assert full[-1]["t"] == "TASK ERROR: disk on fire"
    assert create(api)["exitstatus"] == "OK"  # the rule was consumed
    status = api.ok("GET", f"/nodes/pve1/tasks/{rec['upid']}/status")
    assert status["status"] == "stopped" and status["exitstatus"] == "disk on fire"
    errors = api.ok("GET", "/nodes/pve1/tasks", errors=1)
    assert [t["upid"] for t in errors] == [rec["upid"]]


def test_tasks_left_running_read_as_unexpected_status(app: App, secrets: dict[str, Any]) -> None:
    meta = app.state.tasks / "UPID:pve1:00000001:00000001:00000001:vzstart:9000:root@pam:.json"
    meta.write_text(json.dumps({"upid": meta.stem, "node": "pve1", "pid": 1, "pstart": 1, "starttime": 1,
                                "type": "vzstart", "id": "9000", "user": "root@pam", "status": "running"}))
    restarted = App(app.state, app.nodes, app.backend, auth.Auth(secrets))
    rec = restarted.tasks.status(meta.stem)
    assert rec is not None and (rec["status"], rec["exitstatus"]) == ("stopped", "unexpected status")


def test_access_log_masks_secrets(app: App, api: Client, secrets: dict[str, Any]) -> None:
    Client(app, {}).ok("POST", "/access/ticket", username="root@pam", password=secrets["password"])
    params = {"username": "root@pam", "password": secrets["password"], "ssh-public-keys": "ssh-ed25519 AAAA"}
    app.access.record("POST", "/api2/json/access/ticket", params, 200, None, 0.01)
    text = app.state.access_log.read_text()
    assert secrets["password"] not in text and "AAAA" not in text
    entry = json.loads(text.splitlines()[-1])
    assert entry["params"] == {"username": "root@pam", "password": "***", "ssh-public-keys": "***"}


def test_permissions_dump(app: App, secrets: dict[str, Any], api: Client) -> None:
    ro = token(app, secrets, "readonly")
    mine = ro.ok("GET", "/access/permissions", path="/vms/9000")
    assert mine == {"/vms/9000": dict.fromkeys(sorted(acl.BUILTIN_ROLES["PVEAuditor"]), 1)}
    assert "VM.Allocate" not in api.ok("GET", "/access/permissions", userid="root@pam!restricted")["/"]
    assert ro("GET", "/access/permissions", userid="root@pam")[0] == 200  # auditors hold Sys.Audit


def test_resize_grows_and_refuses_to_shrink(app: App, api: Client) -> None:
    create(api)
    assert api.task("PUT", "/nodes/pve1/lxc/9000/resize", disk="rootfs", size="+2G")["exitstatus"] == "OK"
    assert api.ok("GET", "/nodes/pve1/lxc/9000/config")["rootfs"] == "local-lvm:vm-9000-disk-0,size=10G"
    assert app.backend.cts[9000]["size"] == 10 * 1024**3  # type: ignore[attr-defined]
    status, body = api("PUT", "/nodes/pve1/lxc/9000/resize", disk="rootfs", size="4G")
    assert (status, body["message"]) == (500, "unable to shrink disk size")


def test_interfaces_carry_pve8_fields(api: Client) -> None:
    create(api, start=1)
    eth0 = api.ok("GET", "/nodes/pve1/lxc/9000/interfaces")[0]
    assert eth0["hardware-address"] == eth0["hwaddr"]
    assert eth0["ip-addresses"] == [{"ip-address": "10.0.20.50", "ip-address-type": "ipv4", "prefix": 24}]


def test_onboot_containers_start_after_a_host_boot(app: App, api: Client) -> None:
    from pvesim.handlers_lxc import start_onboot

    create(api, 9000, startup="order=2", onboot=1)
    create(api, 9001, onboot=0)
    create(api, 9002, startup="order=1", onboot=1)
    [upid] = start_onboot(app)
    rec = app.tasks.wait(upid, timeout=10)
    assert rec is not None and rec["exitstatus"] == "OK" and rec["type"] == "startall"
    assert [line for line in app.tasks.log(upid) if line.startswith("Starting")] == [
        "Starting CT 9002", "Starting CT 9000"]
    running = {v for v, ct in app.backend.cts.items() if ct["running"]}  # type: ignore[attr-defined]
    assert running == {9000, 9002}
    assert start_onboot(app) == []  # nothing left to start


def test_destroy_unreferenced_disks_frees_the_volumes_no_config_names(app: App, api: Client) -> None:
    # what an interrupted destroy leaves: a volume of the vmid that no config names any more
    create(api, 9000)
    create(api, 9001)
    storage = app.state.rootdir_storage
    for name in ("vm-9000-disk-1", "vm-9001-disk-1", "vm-90000-disk-0"):
        (storage / name / "etc").mkdir(parents=True)
    assert api.task("DELETE", "/nodes/pve1/lxc/9001", purge=1)["exitstatus"] == "OK"
    assert (storage / "vm-9001-disk-1").is_dir()  # without the flag, as PVE: only what the config names
    rec = api.task("DELETE", "/nodes/pve1/lxc/9000", purge=1, **{"destroy-unreferenced-disks": 1})
    assert rec["exitstatus"] == "OK"
    assert not (storage / "vm-9000-disk-1").exists()
    assert (storage / "vm-90000-disk-0").is_dir()  # another vmid's
