"""Shared sandbox fixtures: pvesim credentials, proxmoxer clients (token, ticket, read-only), an SSH key pair,
and a task waiter. Everything here needs `pvesim up` (scripts/test runs it first)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from proxmoxer import ProxmoxAPI

API_TIMEOUT = 30  # seconds per HTTP call; task waits are separate


@pytest.fixture(scope="session")
def pvesim_credentials() -> dict[str, Any]:
    """What `pvesim credentials --json` prints (url, ca_file, nodes, tokens, user/password, ...)."""
    proc = subprocess.run([sys.executable, "-m", "pvesim", "credentials", "--json"], capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        pytest.fail(f"pvesim is not up (run `pvesim up`): {proc.stderr.strip()}")
    creds: dict[str, Any] = json.loads(proc.stdout)
    return creds


def _client(creds: dict[str, Any], **auth: Any) -> ProxmoxAPI:
    return ProxmoxAPI(creds["host"], port=creds["port"], backend="https", verify_ssl=creds["ca_file"],
                      timeout=API_TIMEOUT, **auth)


def _token(creds: dict[str, Any], prefix: str = "") -> dict[str, str]:
    user, _, name = creds[f"{prefix}token_id"].partition("!")
    return {"user": user, "token_name": name, "token_value": creds[f"{prefix}token_secret"]}


@pytest.fixture(scope="session")
def proxmox(pvesim_credentials: dict[str, Any]) -> ProxmoxAPI:
    """proxmoxer with the full-privilege API token."""
    return _client(pvesim_credentials, **_token(pvesim_credentials))


@pytest.fixture
def proxmox_ticket(pvesim_credentials: dict[str, Any]) -> ProxmoxAPI:
    """proxmoxer logged in with user/password (ticket + CSRF); a fresh login per test, since a fault
    test may expire every ticket issued before it."""
    creds = pvesim_credentials
    return _client(creds, user=creds["user"], password=creds["password"])


@pytest.fixture(scope="session")
def proxmox_readonly(pvesim_credentials: dict[str, Any]) -> ProxmoxAPI:
    """proxmoxer with the read-only (PVEAuditor) token."""
    return _client(pvesim_credentials, **_token(pvesim_credentials, "readonly_"))


@pytest.fixture(scope="session")
def proxmox_restricted(pvesim_credentials: dict[str, Any]) -> ProxmoxAPI:
    """proxmoxer with the token lacking VM.Allocate and Datastore.AllocateTemplate."""
    return _client(pvesim_credentials, **_token(pvesim_credentials, "restricted_"))


@dataclass(frozen=True)
class KeyPair:
    """An ed25519 key pair: file for ssh/fabric, paramiko key, and the public line for ssh-public-keys."""

    private_file: Path
    pkey: paramiko.Ed25519Key
    public_line: str


@pytest.fixture(scope="session")
def ed25519_keypair(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    """A fresh key pair for this test session (never reused, never committed)."""
    key = Ed25519PrivateKey.generate()
    path = tmp_path_factory.mktemp("ssh") / "id_ed25519"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    line = f"{public.decode()} pvesim-sandbox-test"
    path.with_suffix(".pub").write_text(line + "\n")
    return KeyPair(path, paramiko.Ed25519Key.from_private_key_file(str(path)), line)


TaskWaiter = Callable[..., dict[str, Any]]


@pytest.fixture(scope="session")
def wait_task(proxmox: ProxmoxAPI) -> TaskWaiter:
    """wait_task(node, upid, timeout=600) -> final task status; fails the test if it does not stop in time."""

    def wait(node: str, upid: str, timeout: float = 600) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status: dict[str, Any] = proxmox.nodes(node).tasks(upid).status.get()
            if status["status"] == "stopped":
                return status
            if time.monotonic() > deadline:
                pytest.fail(f"task {upid} still running after {timeout:.0f}s")
            time.sleep(0.5)

    return wait


Purger = Callable[[list[int]], None]


@pytest.fixture(scope="session")
def purge(proxmox: ProxmoxAPI, wait_task: TaskWaiter) -> Purger:
    """purge(vmids): remove test containers wherever they are (stop first), so a failed run leaves nothing."""

    def run(vmids: list[int]) -> None:
        for res in proxmox.cluster.resources.get(type="vm"):
            if res["vmid"] in vmids:
                ct = proxmox.nodes(res["node"]).lxc(res["vmid"])
                if ct.status.current.get()["status"] == "running":  # now, not pvestatd's last sample
                    wait_task(res["node"], ct.status.stop.post())
                wait_task(res["node"], ct.delete(purge=1))

    return run


TEMPLATE = "debian-12-standard_12.7-1_amd64.tar.zst"


@pytest.fixture(scope="session")
def template(proxmox: ProxmoxAPI, wait_task: TaskWaiter) -> str:
    """The Debian 12 template's volid in `local`, downloaded (= built) through aplinfo if missing: on a
    fresh machine no `up` has fetched it yet when the first test creates a container."""
    volid = f"local:vztmpl/{TEMPLATE}"
    present = proxmox.nodes("pve1").storage("local").content.get(content="vztmpl")
    if volid not in [c["volid"] for c in present]:
        assert TEMPLATE in [t["template"] for t in proxmox.nodes("pve1").aplinfo.get()]
        upid = proxmox.nodes("pve1").aplinfo.post(storage="local", template=TEMPLATE)
        assert wait_task("pve1", upid, timeout=1800)["exitstatus"] == "OK"
    return volid


RRD_MODULE = "test_pvesim_rrd_live.py"
RRD_VMID, RRD_IP, RRD_MEMORY = 9070, "10.0.20.247", 256


@dataclass(frozen=True)
class RrdContainer:
    ct: Any  # proxmoxer's nodes("pve1").lxc(vmid)
    started: int  # the minute it started in (epoch seconds)
    vmid: int = RRD_VMID
    memory_mb: int = RRD_MEMORY


@pytest.fixture(scope="session")
def rrd_container(proxmox: ProxmoxAPI, wait_task: TaskWaiter, purge: Purger,
                  template: str) -> Iterator[RrdContainer]:
    """CT 9070 on pve1, started, and the minute it started in; removed at the session's end. A whole run
    starts it with the first sandbox test (pytest_collection_modifyitems), so its rrddata rows (one per
    closed minute, a counter's rate from the second) are there when the rrd tests run, last."""
    purge([RRD_VMID])
    upid = proxmox.nodes("pve1").lxc.post(
        vmid=RRD_VMID, ostemplate=template, hostname=f"pvesim-rrd-{RRD_VMID}", memory=RRD_MEMORY,
        swap=0, cores=1, rootfs="local-lvm:2", unprivileged=1, password="rrd-test-only-1",
        net0=f"name=eth0,bridge=vmbr20,ip={RRD_IP}/24,gw=10.0.20.1")
    assert wait_task("pve1", upid)["exitstatus"] == "OK"
    ct = proxmox.nodes("pve1").lxc(RRD_VMID)
    started = int(time.time()) // 60 * 60
    assert wait_task("pve1", ct.status.start.post())["exitstatus"] == "OK"
    yield RrdContainer(ct, started)
    purge([RRD_VMID])


FRESH_ROOT_MODULE = "test_fresh_root.py"
FRESH_ROOT = Path(__file__).resolve().parents[2] / "bench" / "fresh-root"


@dataclass
class FreshRootRun:
    """bench/fresh-root running in the background; `finish` waits for it: (exit code, its output)."""

    proc: subprocess.Popen[bytes]
    log: Path

    def finish(self, timeout: float) -> tuple[int, str]:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        return code, self.log.read_text(errors="replace")


@pytest.fixture(scope="session")
def fresh_root_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FreshRootRun]:
    """bench/fresh-root started in the background. It needs no running sandbox and touches none of it
    (its root is a chroot in /var/tmp), so a whole run starts it with the first sandbox test
    (pytest_collection_modifyitems) and its test, run near the end, mostly only waits for it."""
    log = tmp_path_factory.mktemp("fresh-root") / "fresh-root.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(FRESH_ROOT)], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    run = FreshRootRun(proc, log)
    yield run
    if proc.poll() is None:  # its test did not run to the end (a failure or an interrupt)
        proc.terminate()
        run.finish(timeout=60)


# (module, session fixture): when the module's tests run with other sandbox tests, they move after them
# and the first sandbox test sets the fixture going, so its slow work overlaps theirs
EARLY_STARTS = ((FRESH_ROOT_MODULE, "fresh_root_run"), (RRD_MODULE, "rrd_container"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """When the fresh-root or rrd tests are selected with others: they move after every other sandbox test
    (fresh root, then rrd), and the first sandbox test starts what they wait for (EARLY_STARTS): the
    fresh-root build, and the rrd tests' container, whose minutes of samples pass meanwhile."""
    places = [i for i, item in enumerate(items) if "sandbox" in item.path.parts]
    sandbox = [items[i] for i in places]
    early = [(module, fixture) for module, fixture in EARLY_STARTS
             if any(item.path.name == module for item in sandbox)]
    modules = [module for module, _ in early]
    if not early or all(item.path.name in modules for item in sandbox):
        return
    ordered = ([item for item in sandbox if item.path.name not in modules]
               + [item for module in modules for item in sandbox if item.path.name == module])
    for i, item in zip(places, ordered, strict=True):
        items[i] = item
    first = ordered[0]
    if isinstance(first, pytest.Function):
        for _, fixture in reversed(early):
            if fixture not in first.fixturenames:
                first.fixturenames.insert(0, fixture)
