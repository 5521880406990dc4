"""Phase 0 end to end against the running sandbox (`pvesim up`).

One session fixture provisions phase 0 ONCE, through the real CLI in a subprocess, from a
clean start: `init` on a temp copy of the packaged sandbox inventory, `destroy phase0 --yes` (removes
only a container this tool created), then a cold `up phase0 --yes`. Tests then look at the guest
over SSH, at Proxmox over the API, and at the app over HTTP from this machine.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from psa_provision import privileges, proxmox, sandbox
from psa_provision.inventory import Inventory, load_inventory
from psa_provision.packaged import PHASES_DIR
from psa_provision.phases import ContainerSpec, Phase, load_phase
from psa_provision.ssh import Connection

REPO_ROOT = Path(__file__).resolve().parents[2]  # where the CLI runs (it reads nothing from here)
PVESIM = Path(sys.executable).with_name("pvesim")
CLI = [str(Path(sys.executable).with_name("psa-provision"))]
UP_TIMEOUT = 3600
_FAILED: list[str] = []


@dataclass
class Run:
    """One CLI run: exit code, output, wall time."""

    args: list[str]
    code: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def summary(self) -> tuple[int, int, int]:
        m = re.search(r"^(\d+) changed, (\d+) unchanged, (\d+) failed$", self.stdout, re.M)
        assert m, f"no summary line in:\n{self.output[-3000:]}"
        return int(m[1]), int(m[2]), int(m[3])


@dataclass
class Site:
    """The provisioned phase 0 of this session."""

    inventory_path: Path
    inventory: Inventory
    phase: Phase
    container: ContainerSpec
    first_up: Run
    cold: bool

    def cli(self, *args: str, timeout: float = UP_TIMEOUT) -> Run:
        return run_cli(self.inventory_path, *args, timeout=timeout)

    def ssh(self) -> Connection:
        return Connection(self.container.ip, self.inventory.ssh.user, self.inventory.ssh.key_file,
                          self.inventory.ssh.jump_host)

    def secret(self, key: str) -> str:
        run = self.cli("secrets", "show", key, timeout=60)
        assert run.code == 0, run.output
        return run.stdout.strip()


def run_cli(inventory: Path, *args: str, timeout: float = UP_TIMEOUT) -> Run:
    argv = [*CLI, "-i", str(inventory), *args]
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT,
                          stdin=subprocess.DEVNULL, check=False)
    return Run(argv, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)


def sandbox_credentials() -> dict[str, object]:
    """`pvesim credentials --json`, or a failure saying the sandbox is not up."""
    proc = subprocess.run([str(PVESIM), "credentials", "--json"], capture_output=True, text=True, check=False,
                          timeout=60)
    if proc.returncode != 0:
        pytest.fail(f"the sandbox is not running (pvesim credentials: {proc.stderr.strip()}); "
                    "run `pvesim up`")
    data = json.loads(proc.stdout)
    assert isinstance(data, dict)
    return data


VMID = int(os.environ.get("PSA_E2E_VMID", "200"))


def write_inventory(workdir: Path, creds: dict[str, object]) -> Path:
    """A copy of the packaged sandbox inventory in workdir: the packaged phases (with PSA_E2E_VMID=N a
    private copy where phase 0's container is N at 10.0.20.(N-100), psa-e2e-N), and the token that holds
    exactly the README's least-privilege role on exactly the README's paths (least_privilege_token)."""
    phases = (PHASES_DIR if VMID == sandbox.PHASE0_VMID
              else sandbox.private_phases(workdir, VMID, f"psa-e2e-{VMID}"))
    inventory = sandbox.write_inventory(workdir, phases, creds)
    token, secret = least_privilege_token(creds, workdir)
    text = re.sub(r"(?m)^(\s*token_id:) .*$", rf"\1 {token}", inventory.read_text())
    inventory.write_text(re.sub(r"(?m)^(\s*token_secret_file:) .*$", rf"\1 {secret}", text))
    return inventory


def admin_api() -> proxmox.ProxmoxClient:
    """The sandbox's administrator token (Administrator on /), for what tests do besides the tool:
    snapshots to reset to, faults, roles and tokens."""
    creds = sandbox_credentials()
    return proxmox.connect_settings(proxmox.ApiSettings(
        host=str(creds["host"]), port=int(str(creds["port"])), user="root@pam", token_name="psa-provision",
        token_secret=str(creds["token_secret"]), ca_file=str(creds["ca_file"]), http_timeout=30.0,
        task_timeout=600.0))


LEAST_PRIVILEGE_TOKEN = "psa-e2e"
_LEAST_PRIVILEGE: list[tuple[str, Path]] = []


def clear_vmids(phase: Phase, keep: set[int] | None = None) -> None:
    """Every guest holding one of the phase's vmids (but those in `keep`) gone: its HA resource, then
    the container."""
    px = admin_api()
    managed = {str(r.get("sid")) for r in px.request("GET", "/cluster/ha/resources") or []}
    for spec in phase.containers:
        if keep and spec.vmid in keep:
            continue
        node = px.find_vmid(spec.vmid)
        if f"ct:{spec.vmid}" in managed:
            px.request("DELETE", f"/cluster/ha/resources/ct:{spec.vmid}")
        if node is None:
            continue
        if px.status(node, spec.vmid).get("status") == "running":
            px.stop(node, spec.vmid)
        px.delete(node, spec.vmid)


def least_privilege_token(creds: dict[str, object], workdir: Path) -> tuple[str, Path]:
    """(token id, secret file) of a privilege-separated token that holds the README's role, exactly
    privileges.ROLE_PRIVILEGES, granted on exactly privileges.ROLE_GRANTS, made through the API as an
    admin would with the README's pveum commands. The datacenter firewall is switched on once, as the
    README asks the admin to (the role has no Sys.Modify). Made once per test session."""
    if _LEAST_PRIVILEGE:
        return _LEAST_PRIVILEGE[0]
    px = admin_api()
    privs = ",".join(privileges.ROLE_PRIVILEGES)
    if any(r.get("roleid") == privileges.ROLE for r in px.request("GET", "/access/roles") or []):
        px.request("PUT", f"/access/roles/{privileges.ROLE}", {"privs": privs})
    else:
        px.request("POST", "/access/roles", {"roleid": privileges.ROLE, "privs": privs})
    tokens = {t.get("tokenid") for t in px.request("GET", "/access/users/root@pam/token") or []}
    if LEAST_PRIVILEGE_TOKEN in tokens:
        px.request("DELETE", f"/access/users/root@pam/token/{LEAST_PRIVILEGE_TOKEN}")
    made = px.request("POST", f"/access/users/root@pam/token/{LEAST_PRIVILEGE_TOKEN}", {"privsep": 1})
    full = f"root@pam!{LEAST_PRIVILEGE_TOKEN}"
    for grant in privileges.ROLE_GRANTS:
        px.request("PUT", "/access/acl", {"path": grant.path, "roles": privileges.ROLE, "tokens": full,
                                          "propagate": int(grant.propagate)})
    if str((px.request("GET", "/cluster/firewall/options") or {}).get("enable")) != "1":
        px.request("PUT", "/cluster/firewall/options", {"enable": 1})
    secret = workdir / "least-privilege-token"
    secret.write_text(str(made["value"]) + "\n")
    secret.chmod(0o600)
    _LEAST_PRIVILEGE.append((full, secret))
    return full, secret


HOSTILE = " '\"$;\\`$(id)%x"  # space, both quotes, $, ;, backslash, backtick, command substitution
HOSTILE_KEYS = (("postgresql", "app_password"), ("redis", "password"), ("rabbitmq", "admin_password"),
                ("rabbitmq", "app_password"), ("app", "admin_password"))


def make_passwords_hostile(path: Path) -> None:
    """Give every password characters a shell, SQL, YAML or .env would trip on (issue 6: nothing from
    the inventory reaches a shell unquoted): the whole phase-0 session then runs with them."""
    import yaml

    data = yaml.safe_load(path.read_text())
    for section, key in HOSTILE_KEYS:
        data[section][key] = f"{data[section][key][:16]}{HOSTILE}"
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(data, f)
    tmp.replace(path)


@pytest.fixture(scope="session")
def phase0(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """Phase 0 provisioned once from a clean start by `psa-provision up phase0 --yes`.

    PSA_E2E_WORKDIR=DIR keeps inventory, secrets and key there (to look at the guest afterwards);
    with PSA_E2E_KEEP=1 too (same DIR as an earlier run, same SSH key) the destroy is skipped and
    the first `up` is a warm one.
    """
    if _FAILED:  # a failed session fixture is retried per test by pytest: do not provision again
        pytest.fail(_FAILED[0])
    try:
        yield from _provision(tmp_path_factory)
    except BaseException as exc:
        _FAILED.append(f"phase 0 provisioning failed earlier in this session: {str(exc)[:3000]}")
        raise


def _provision(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    given = os.environ.get("PSA_E2E_WORKDIR")
    keep = os.environ.get("PSA_E2E_KEEP") == "1" and bool(given)
    workdir = Path(given) if given else tmp_path_factory.mktemp("e2e-phase0")
    workdir.mkdir(parents=True, exist_ok=True)
    inventory = write_inventory(workdir, sandbox_credentials())
    steps = [("init",)] if keep else [("init",), ("destroy", "phase0", "--yes")]
    for args in steps:
        run = run_cli(inventory, *args, timeout=600)
        assert run.code == 0, f"{' '.join(args)} failed:\n{run.output}"
    if not keep:
        make_passwords_hostile(workdir / "sandbox.secrets.yml")
    first = run_cli(inventory, "up", "phase0", "--yes")
    kind = "warm" if keep else "cold"
    sys.stderr.write(f"\n[e2e] {kind} `up phase0`: exit {first.code} in {first.seconds:.0f} s\n")
    assert first.code == 0, f"{kind} up failed:\n{first.output[-6000:]}"
    inv = load_inventory(inventory)
    phase = load_phase("phase0", inv.phases_dir)
    yield Site(inventory, inv, phase, phase.container(VMID), first, cold=not keep)


@pytest.fixture(scope="session")
def guest(phase0: Site) -> Iterator[Connection]:
    conn = phase0.ssh()
    yield conn
    conn.close()


def q(*words: str) -> str:
    return " ".join(shlex.quote(w) for w in words)



CONVERGED_SNAPSHOT = "e2e_converged"  # a PVE configid: letters, digits, _


def wait_gateway_healthy(site: Site, deadline_s: float = 180.0) -> None:
    """Poll the gateway's aggregated /health from this machine until 200 (or fail saying so)."""
    wait_healthy(site.container.ip, deadline_s)


def wait_healthy(ip: str, deadline_s: float = 180.0) -> None:
    """Poll http://IP:3000/health (the gateway's aggregated health) until 200, or fail saying so."""
    import urllib.error
    import urllib.request

    url = f"http://{ip}:3000/health"
    deadline = time.monotonic() + deadline_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200:
                    return
                last = f"HTTP {resp.status}"
        except (OSError, urllib.error.URLError) as exc:
            last = str(exc)
        time.sleep(1.0)
    pytest.fail(f"gateway {url} not healthy after {deadline_s:.0f} s: {last}")


def take_converged_snapshot(site: Site, why: str = "e2e session") -> str:
    """(Re)take the Proxmox snapshot of the converged phase-0 container that reset_phase0 rolls back to."""
    px = admin_api()
    node, vmid = site.container.node, site.container.vmid
    names = {str(s.get("name")) for s in px.request("GET", f"/nodes/{node}/lxc/{vmid}/snapshot") or []}
    if CONVERGED_SNAPSHOT in names:
        px.delete_snapshot(node, vmid, CONVERGED_SNAPSHOT)  # waits for the task
    px.snapshot(node, vmid, CONVERGED_SNAPSHOT, f"converged phase 0 ({why})")
    return CONVERGED_SNAPSHOT


@pytest.fixture(scope="session")
def converged_snapshot(phase0: Site) -> str:
    """A Proxmox snapshot of the converged phase-0 container, taken once per session.

    Destructive tests roll back to it (fixture `reset_phase0`) instead of provisioning again.
    """
    return take_converged_snapshot(phase0)


@pytest.fixture
def reset_phase0(phase0: Site, converged_snapshot: str) -> Iterator[Site]:
    """For a test that breaks container 200: afterwards roll back to the converged snapshot,
    start the container and wait until the gateway is healthy again.

    Without the snapshot (a test that destroys container 200, test_resume, failed before taking it
    again) `up phase0` converges the container and the snapshot is taken anew, so that one failure
    stays one failure instead of failing every later test with it.
    """
    yield phase0
    px = admin_api()  # rollback: VM.Snapshot.Rollback is not in the tool's role
    node, vmid = phase0.container.node, phase0.container.vmid
    names = {str(s.get("name")) for s in px.request("GET", f"/nodes/{node}/lxc/{vmid}/snapshot") or []} \
        if px.find_vmid(vmid) is not None else set()
    if converged_snapshot not in names:
        run = phase0.cli("up", "phase0", "--yes")
        assert run.code == 0, f"no converged snapshot, and up phase0 failed:\n{run.output[-4000:]}"
        take_converged_snapshot(phase0, "e2e session, taken again by reset_phase0")
    else:
        rollback = proxmox.Write("rollback", node, vmid, {"snapname": converged_snapshot})
        px.perform(rollback)  # each call waits for its task
        if px.status(node, vmid).get("status") != "running":
            px.start(node, vmid)
    wait_gateway_healthy(phase0)


PHASE3_ORDER = {"test_migrate_phase3.py": 0, "test_phase3.py": 1, "test_drills.py": 2}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `phase3` run after every other e2e test: `migrate phase3` from the session's phase 2
    first (test_phase2.py leaves it serving), then phase 3's own tests on what it built, the drills last.
    Tests marked `session_end` delete the session's containers (phase 3's too): they run last."""
    def key(item: pytest.Item) -> tuple[int, int]:
        if item.get_closest_marker("session_end") is not None:
            return (2, 0)
        if item.get_closest_marker("phase3") is not None:
            return (1, PHASE3_ORDER.get(item.path.name, 3))
        return (0, 0)
    items.sort(key=key)
