"""Waiting on Proxmox and guests: a container running, services healthy, tasks an interrupted run left."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from psa_provision.access import lock_diagnosis
from psa_provision.errors import GuestError, ProxmoxError
from psa_provision.journal import Journal
from psa_provision.output import StepProgress
from psa_provision.phases import ContainerSpec, Phase
from psa_provision.preflight import ContainerState
from psa_provision.proxmox import ProxmoxClient
from psa_provision.services.app import APP_USER
from psa_provision.services.app.health import health_script
from psa_provision.ssh import Connection

RUNNING_TIMEOUT = 120.0

STOPPED_TIMEOUT = 120.0  # PVE's CRM and LRM act every 10 s: a requested stop is seen within a round or two

SSH_TIMEOUT = 180.0

HEALTH_TIMEOUT = 600.0


def wait_running(px: ProxmoxClient, spec: ContainerSpec, progress: StepProgress,
                 timeout: float = RUNNING_TIMEOUT) -> None:
    """Poll the container status until `running` (deadline: timeout seconds)."""
    progress.message(f"waiting for container {spec.vmid} to run")
    _wait_status(px, spec, "running", timeout, hint=f"check `pct start {spec.vmid}` on node {spec.node}")


def wait_stopped(px: ProxmoxClient, spec: ContainerSpec, timeout: float = STOPPED_TIMEOUT) -> None:
    """Poll the container status until `stopped`: an HA resource's stop is a request (a `hastop` task
    that only records it) which the HA manager carries out in one of its later rounds."""
    _wait_status(px, spec, "stopped", timeout,
                 hint=f"`ha-manager status` on node {spec.node} shows what the HA manager does with it")


def _wait_status(px: ProxmoxClient, spec: ContainerSpec, want: str, timeout: float, *, hint: str) -> None:
    deadline = time.monotonic() + timeout
    node = px.find_vmid(spec.vmid) or spec.node  # the HA manager may have recovered it elsewhere
    while True:
        status = px.status(node, spec.vmid).get("status")
        if status == want:
            return
        if time.monotonic() >= deadline:
            raise ProxmoxError(f"container {spec.vmid} is still {status} after {timeout:.0f} s", hint=hint)
        time.sleep(1.0)


def wait_healthy(conn: Connection, phase: Phase, spec: ContainerSpec, progress: StepProgress,
                 timeout: float = HEALTH_TIMEOUT) -> None:
    """Poll GET /health of every app service on the container (curl inside) until all answer 200."""
    services = phase.services_on(spec.vmid)
    if not services:
        return
    ports = {str(s.port): name for name, s in services.items()}
    script = health_script(phase, spec)
    deadline = time.monotonic() + timeout
    while True:
        codes = dict(line.split() for line in conn.run(script).stdout.splitlines() if len(line.split()) == 2)
        sick = [f"{ports[p]} (:{p} -> {codes.get(p, 'no answer')})" for p in ports if codes.get(p) != "200"]
        if not sick:
            return
        progress.message(f"waiting for /health of {', '.join(sick)}")
        if time.monotonic() >= deadline:
            raise GuestError(f"{spec.hostname}: services not healthy after {timeout:.0f} s: "
                             f"{', '.join(sick)}",
                             hint=f"pm2 logs on the guest (runuser -u {APP_USER} -- pm2 logs --lines 50)")
        time.sleep(2.0)


def finish_open_tasks(px: ProxmoxClient, journal: Journal, states: list[ContainerState],
                      note: Callable[[str], None]) -> list[dict[str, Any]]:
    """Wait for the tasks an interrupted run left running (journal, or the API for a locked container).

    A container whose config still says `lock: create` is being built by such a task: creating it
    again would fail and deleting it would lose the work, so the rerun waits for that task. Returns
    the tasks waited for (when any, the container states must be read again).
    """
    tasks = {str(t["upid"]): t for t in journal.open_tasks()}
    for state in states:
        lock = (state.config or {}).get("lock")
        if not lock or any(str(t.get("vmid")) == str(state.spec.vmid) for t in tasks.values()):
            continue
        active = px.tasks(state.spec.node, vmid=state.spec.vmid, source="active")
        vmid = state.spec.vmid
        if not active:
            raise lock_diagnosis(px, state.spec.node, vmid, str(lock))
        for task in active:
            tasks[str(task["upid"])] = {"upid": task["upid"], "step": task.get("type"), "vmid": vmid}
    for upid, task in tasks.items():
        note(f"waiting for task {upid} ({task.get('step')}) left running by an earlier, interrupted run")
        try:
            status = px.wait_task(upid.split(":")[1], upid)
        except ProxmoxError as exc:
            journal.task_ended(upid, "failed")
            note(f"that task failed ({exc.message.splitlines()[0]}): this run redoes its step")
            continue
        journal.task_ended(upid, "done", exitstatus=status.get("exitstatus"))
    return list(tasks.values())
