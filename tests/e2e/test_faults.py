"""Faults survived, against the sandbox's fault injection (`pvesim fault`) and the session's real guest.

Every rule is scoped to this session's container (`--vmid`: its API paths, or its tasks) and
tagged with the test's own owner, so engineers, benches and demos sharing the sandbox do not trip over
each other's faults; the `faults` fixture clears that owner's rules, and only those, afterwards.
Tests that stop or break the container leave it converged again (a finalizer starting it and
waiting for the gateway, or `reset_phase0`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from psa_provision import proxmox
from psa_provision.apply import apply
from psa_provision.changes import Command, Plan, PutFile, Sensitive, Service
from psa_provision.errors import InputError, ProxmoxError, TaskError
from psa_provision.inventory import load_inventory

from .conftest import PVESIM, Site, sandbox_credentials, wait_gateway_healthy

pytestmark = [pytest.mark.sandbox, pytest.mark.phase0]

Fault = Callable[..., None]
WAIT_S = 60.0


def fault(*args: str) -> None:
    subprocess.run([str(PVESIM), "fault", *args], check=True, capture_output=True, timeout=60)


SCOPED_KINDS = ("task-fail", "delay", "http-error", "drop")


@pytest.fixture
def faults(request: pytest.FixtureRequest) -> Iterator[Fault]:
    """`pvesim fault ...` with the rule tagged as this test's; its rules (only its) are cleared when the
    test ends, whatever happened."""
    owner = f"e2e-{os.getpid()}-{request.node.name}"

    def add(kind: str, *args: str) -> None:
        fault(kind, *args, *(("--owner", owner) if kind in SCOPED_KINDS else ()))

    yield add
    fault("clear", "--owner", owner)


def client(site: Site, notes: list[str], **changes: object) -> proxmox.ProxmoxClient:
    """A client of the session's inventory (settings changed by `changes`) announcing into `notes`."""
    settings = dataclasses.replace(proxmox.settings_from_inventory(site.inventory), **changes)  # type: ignore[arg-type]
    return proxmox.connect_settings(settings, notes.append)


def status(px: proxmox.ProxmoxClient, site: Site) -> str:
    return str(px.status(site.container.node, site.container.vmid).get("status"))


@pytest.fixture
def running_again(phase0: Site) -> Iterator[Site]:
    """For a test that stops the container: afterwards it runs and the gateway is healthy again."""
    yield phase0
    px = proxmox.connect(phase0.inventory)
    if status(px, phase0) != "running":
        px.start(phase0.container.node, phase0.container.vmid)
    wait_gateway_healthy(phase0)


def lxc(site: Site, script: str) -> subprocess.CompletedProcess[str]:
    """Run a script inside the container from the host (not over SSH)."""
    return subprocess.run(["lxc-attach", "-P", "/var/lib/lxc", "-n", str(site.container.vmid), "--",
                           "bash", "-c", script], capture_output=True, text=True, timeout=60, check=False)


def wait_in_guest(site: Site, test: str, what: str) -> None:
    """Poll `test` inside the container until it succeeds (deadline WAIT_S)."""
    deadline = time.monotonic() + WAIT_S
    while lxc(site, test).returncode != 0:
        if time.monotonic() >= deadline:
            raise AssertionError(f"waited {WAIT_S:.0f} s for {what}")
        time.sleep(0.2)


def ok_tasks(px: proxmox.ProxmoxClient, site: Site, kind: str, since: float) -> list[str]:
    tasks = px.request("GET", f"/nodes/{site.container.node}/tasks",
                       {"vmid": site.container.vmid, "typefilter": kind, "source": "all",
                        "since": int(since) - 1}) or []
    return [str(t["upid"]) for t in tasks if t.get("status") == "OK"]


# -- Proxmox: tasks that end in error ---------------------------------------------------------------
def test_failed_start_task_shows_its_log_and_the_next_up_converges(running_again: Site,
                                                                    faults: Fault) -> None:
    site = running_again
    node, vmid = site.container.node, site.container.vmid
    px = client(site, [])
    px.stop(node, vmid)
    faults("task-fail", "--type", "vzstart", "--vmid", str(vmid),
           "--message", "injected: no space left on device")
    with pytest.raises(TaskError) as info:
        px.start(node, vmid)
    assert f"vzstart on {node} failed: injected: no space left on device" in info.value.message
    assert "TASK ERROR: injected: no space left on device" in info.value.message  # the task's own log
    assert status(px, site) == "stopped"
    run = site.cli("up", "phase0", "--yes")
    assert run.code == 0, run.output[-4000:]
    assert f"starting container {vmid}" in run.stderr
    assert status(px, site) == "running"


def test_failed_create_leaves_no_container_and_a_second_create_works(phase0: Site, faults: Fault) -> None:
    spare = phase0.container.vmid + 700  # a throwaway guest of this session only
    node = phase0.container.node
    px = client(phase0, [])
    assert px.find_vmid(spare) is None, f"vmid {spare} is taken: remove it first"
    params: dict[str, object] = {
        "vmid": spare, "ostemplate": phase0.inventory.template_volid, "hostname": f"psa-fault-{spare}",
        "memory": 256, "cores": 1, "unprivileged": 1, "tags": "psa-provision",
        "rootfs": f"{phase0.container.rootfs_storage}:1"}
    faults("task-fail", "--type", "vzcreate", "--vmid", str(spare), "--message", "injected: storage full")
    try:
        with pytest.raises(TaskError) as info:
            px.perform(proxmox.Write("create", node, spare, params))
        assert f"vzcreate on {node} failed: injected: storage full" in info.value.message
        assert "TASK ERROR: injected: storage full" in info.value.message
        assert px.find_vmid(spare) is None  # no half container blocks the next run (PVE removes it too)
        px.perform(proxmox.Write("create", node, spare, params))
        assert px.find_vmid(spare) == node
    finally:
        if px.find_vmid(spare) is not None:
            px.delete(node, spare)


# -- Proxmox: lost answers -----------------------------------------------------------------------------
def test_5xx_during_up_is_retried_and_each_retry_is_shown(phase0: Site, faults: Fault) -> None:
    node, vmid = phase0.container.node, phase0.container.vmid
    # the container's state is read from .../pending (its config with the pending values apart)
    faults("http-error", "--status", "503", "--count", "2", "--vmid", str(vmid),
           "--path", rf"/lxc/{vmid}/pending$")
    run = phase0.cli("up", "phase0", "--yes")
    assert run.code == 0, run.output[-4000:]
    shown = [line for line in run.stderr.splitlines()
             if f"Proxmox API GET /nodes/{node}/lxc/{vmid}/pending: 503" in line]
    assert len(shown) == 2 and "retry 1/3" in shown[0] and "retry 2/3" in shown[1], run.stderr[-3000:]
    assert run.summary()[2] == 0


def test_a_dropped_start_is_read_back_then_sent_again(running_again: Site, faults: Fault) -> None:
    site = running_again
    node, vmid = site.container.node, site.container.vmid
    notes: list[str] = []
    px = client(site, notes)
    px.stop(node, vmid)
    asked = time.time()
    faults("drop", "--vmid", str(vmid), "--path", rf"/lxc/{vmid}/status/start$")
    px.start(node, vmid)
    assert status(px, site) == "running"
    assert len(notes) == 1 and "connection lost; retry 1/3" in notes[0], notes
    assert len(ok_tasks(px, site, "vzstart", asked)) == 1


def test_a_timed_out_start_is_not_started_twice(running_again: Site, faults: Fault) -> None:
    site = running_again
    node, vmid = site.container.node, site.container.vmid
    notes: list[str] = []
    px = client(site, notes, http_timeout=2.0)
    px.stop(node, vmid)
    asked = time.time()
    faults("delay", "--seconds", "2.3", "--vmid", str(vmid), "--path", rf"/lxc/{vmid}/status/start$")
    px.start(node, vmid)
    assert status(px, site) == "running"
    assert any("no answer (timeout)" in n for n in notes), notes
    # whether the late original or our second POST started it: exactly one start did the work
    deadline = time.monotonic() + WAIT_S
    while px.request("GET", f"/nodes/{node}/tasks", {"vmid": vmid, "source": "active"}):
        assert time.monotonic() < deadline, "the late start task did not end"
        time.sleep(0.5)
    assert len(ok_tasks(px, site, "vzstart", asked)) == 1


def test_a_timed_out_config_put_is_read_back(phase0: Site, faults: Fault) -> None:
    node, vmid = phase0.container.node, phase0.container.vmid
    notes: list[str] = []
    px = client(phase0, notes, http_timeout=2.0)
    before = px.get_container(node, vmid) or {}
    original = str(before.get("description", ""))
    wanted = f"{original} (fault test)".strip()
    faults("delay", "--seconds", "4", "--vmid", str(vmid), "--path", rf"/lxc/{vmid}/config$")
    try:
        px.perform(proxmox.Write("config", node, vmid,
                                 {"description": wanted, "digest": str(before["digest"])}))
        assert (px.get_container(node, vmid) or {}).get("description") == wanted
        assert any("PUT" in n and "no answer (timeout)" in n for n in notes), notes
    finally:
        px.perform(proxmox.Write("config", node, vmid, {"description": original}))


def test_an_expired_ticket_logs_in_again(phase0: Site, faults: Fault) -> None:
    creds = sandbox_credentials()
    notes: list[str] = []
    px = client(phase0, notes, token_name=None, token_secret=None, password=str(creds["password"]))
    assert status(px, phase0) == "running"
    faults("expire-tickets")
    assert status(px, phase0) == "running"
    assert notes == ["Proxmox API ticket of root@pam expired: logged in again"]
    config = px.get_container(phase0.container.node, phase0.container.vmid) or {}
    px.perform(proxmox.Write("config", phase0.container.node, phase0.container.vmid,  # a write: the new
                             {"description": str(config.get("description", ""))}))  # CSRF token works


# -- TLS -----------------------------------------------------------------------------------------------
def sandbox_fingerprint(site: Site) -> str:
    settings = proxmox.settings_from_inventory(site.inventory)
    pem = ssl.get_server_certificate((settings.host, settings.port))
    return proxmox.pretty_fingerprint(hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest())


def test_a_wrong_ca_is_refused_naming_the_fingerprint_seen(phase0: Site, tmp_path: Path) -> None:
    other_ca = Path("/etc/ssl/certs/ca-certificates.crt")  # trusts much, but not the sandbox's CA
    with pytest.raises(ProxmoxError) as info:
        client(phase0, [], ca_file=str(other_ca))
    assert "TLS verification of" in info.value.message
    assert sandbox_fingerprint(phase0) in info.value.message


def test_a_wrong_fingerprint_is_refused_naming_the_one_seen(phase0: Site) -> None:
    with pytest.raises(ProxmoxError) as info:
        client(phase0, [], ca_file=None, fingerprint="AB:" * 31 + "AB")
    assert f"the server presents {sandbox_fingerprint(phase0)}" in info.value.message


# -- SSH and the container -----------------------------------------------------------------------------
# The first run starts a long sleep, names it in a file (written whole, then moved into place) and
# waits: it is cut off whenever the killer gets to it, there is no time window to hit. The run after
# the reconnect finds the counter at 1 and finishes at once.
DROP_SCRIPT = """n=$(cat /root/psa-drop-runs 2>/dev/null || echo 0); echo $((n + 1)) > /root/psa-drop-runs
if [ "$n" = 0 ]; then
  sleep 600 &
  echo $! > /run/psa-drop-{token}.tmp && mv /run/psa-drop-{token}.tmp /run/psa-drop-{token}
  wait
fi
echo "finished after $(cat /root/psa-drop-runs) runs"
"""
# from the host: kill the sshd session process that is an ancestor of the first run's sleep (only our
# connection), then the sleep, so that the cut-off run ends too
KILL_SESSION = """sleeper=$(cat PIDFILE); p=$sleeper
while [ -n "$p" ] && [ "$p" -gt 1 ]; do
  case "$(tr '\\0' ' ' < /proc/$p/cmdline)" in "sshd: root@notty"*) kill -9 "$p"; break;; esac
  p=$(awk '{print $4}' /proc/$p/stat)
done
[ -n "$p" ] && [ "$p" -gt 1 ] && kill "$sleeper"
"""


def test_ssh_drop_mid_command_reconnects_and_runs_the_step_again(phase0: Site) -> None:
    token = f"{time.monotonic_ns()}"
    pidfile = f"/run/psa-drop-{token}"
    lxc(phase0, "rm -f /root/psa-drop-runs")
    killed: list[subprocess.CompletedProcess[str]] = []

    def drop() -> None:
        wait_in_guest(phase0, f"test -s {pidfile}", "the step to run")
        killed.append(lxc(phase0, KILL_SESSION.replace("PIDFILE", pidfile)))

    conn = phase0.ssh()
    killer = threading.Thread(target=drop, daemon=True)
    killer.start()
    try:
        result = conn.run(DROP_SCRIPT.format(token=token), timeout=120)
    finally:
        conn.close()
        killer.join(WAIT_S)
    lxc(phase0, f"kill $(cat {pidfile}) 2>/dev/null; rm -f /root/psa-drop-runs {pidfile}")
    assert killed and killed[0].returncode == 0, killed
    assert result.stdout.strip() == "finished after 2 runs"


# The first run marks itself in /root (kept across the crash) and /run (gone with it) and sleeps until
# the guest is killed under it; the run after the restart finds the mark and completes.
REVIVE_SCRIPT = """rm -f /root/psa-revive-done
if [ ! -e /root/psa-revive-started ]; then
  touch /root/psa-revive-started /run/psa-revive-running
  sleep 600
fi
echo done > /root/psa-revive-done
"""


def test_container_stopped_during_a_step_is_started_and_the_step_retried(reset_phase0: Site) -> None:
    site = reset_phase0
    host, vmid = site.container.hostname, site.container.vmid
    lxc(site, "rm -f /root/psa-revive-done /root/psa-revive-started")

    def crash() -> None:
        wait_in_guest(site, "test -e /run/psa-revive-running", "the step to run")
        fault("kill-guest", str(vmid))

    px = proxmox.connect(site.inventory)
    conn = site.ssh()
    plan = Plan([Command(host, "fault-test", "a step the container dies in", script=REVIVE_SCRIPT)])
    killer = threading.Thread(target=crash, daemon=True)
    killer.start()
    try:
        summary = apply(plan, {host: conn}, px)
    finally:
        conn.close()
        killer.join(WAIT_S)
        lxc(site, "rm -f /root/psa-revive-started")
    assert summary.error is None, summary.error
    assert status(px, site) == "running"
    assert lxc(site, "cat /root/psa-revive-done").stdout.strip() == "done"


# -- a service refusing its config -----------------------------------------------------------------------
def test_a_config_the_service_refuses_is_put_back(reset_phase0: Site, tmp_path: Path) -> None:
    site = reset_phase0
    host = site.container.hostname
    bad = site.inventory_path.read_text().replace("tuning: {}", "tuning: {redis: {maxmemory: lots}}", 1)
    assert bad != site.inventory_path.read_text()
    copy = site.inventory_path.with_name("fault-bad-maxmemory.yml")
    copy.write_text(bad)
    try:
        with pytest.raises(InputError, match="maxmemory"):  # the inventory refuses "lots" before any run
            load_inventory(copy)
    finally:
        copy.unlink()
    # a value the loader cannot judge reaches the service: the same apply path, a directive redis refuses
    conn = site.ssh()
    try:
        conf = conn.run("cat /etc/redis/redis.conf").stdout
        owner = conn.run("stat -c '%U %G %a' /etc/redis/redis.conf").stdout.split()
        plan = Plan([
            PutFile(host, "redis", "redis.conf", path="/etc/redis/redis.conf",
                    content=Sensitive(conf + "maxmemory lots\n"), mode=int(owner[2], 8), owner=owner[0],
                    group=owner[1]),
            Service(host, "redis", "restart redis", name="redis-server", action="restart")])
        summary = apply(plan, {host: conn}, None)
        assert summary.error is not None
        text = summary.error.message
        assert "journalctl -u redis-server" in text and "maxmemory" in text, text  # redis's own words
        assert text.endswith("restored the previous /etc/redis/redis.conf; redis-server is active again"), \
            text
        assert conn.run("systemctl is-active redis-server", check=False).stdout.strip() == "active"
        assert conn.run("cat /etc/redis/redis.conf").stdout == conf
    finally:
        conn.close()
