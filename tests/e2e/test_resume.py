"""A killed `up phase0` is finished by the next `up`: SIGKILL at named steps, API and guest ones.

First `destroy phase0` is killed while its delete task runs and rerun (it waits for that task).
Then one chain from the destroyed container: each run gets PSA_KILL_AT=<next chosen step> (test hook
psa_provision/testing/kill.py, open with PSA_TEST_HOOKS=1) and SIGKILLs itself there, the next run
resumes; a last run without the hook finishes. The result must equal a clean run: one container, every
task waited for, `verify phase0` passes and a further `up` says `0 changed`. This costs one cold `up`
plus a few seconds per kill.

Kill points are drawn at random (seed printed; PSA_RESUME_SEED=<n> repeats a draw) among the
candidates below, always including the create task still running (the rerun must find the
container locked `lock: create` and wait for the journaled UPID rather than create it again).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest

from psa_provision import proxmox
from psa_provision.journal import Journal
from psa_provision.seams import ENABLE_ENV

from .conftest import CLI, REPO_ROOT, Run, Site, take_converged_snapshot, wait_gateway_healthy

pytestmark = [pytest.mark.sandbox, pytest.mark.phase0]

# (PSA_KILL_AT glob, PSA_KILL_DELAY seconds: > 0 kills in the middle of the step), in plan order
CREATE_RUNNING = ("container: create container * (task running)", 0.0)
CANDIDATES = [
    ("container: start container *", 0.0),
    ("container: start container * (task running)", 0.0),
    ("base: create /etc/apt/apt.conf.d/01psa-proxy", 0.0),
    ("postgresql: install postgresql-15", 3.0),
    ("postgresql: create role psa_app", 0.0),
    ("redis: install redis-server*", 2.0),
    ("rabbitmq: install rabbitmq-server", 3.0),
    ("rabbitmq: create user admin", 0.0),
    ("elasticsearch: install elasticsearch", 3.0),
    ("nodejs: npm install -g pm2@5", 2.0),
    ("app: ship app bundle *", 0.0),
    ("app: npm ci && npm run build (as psa)", 4.0),
    ("app: pm2 start ecosystem.config.js*", 1.0),
    ("app: wait for /health", 0.0),
]
EXTRA_POINTS = 3
RUN_TIMEOUT = 1800


@dataclass
class Point:
    glob: str
    delay: float
    killed: bool = False
    seconds: float = 0.0


def choose_points() -> tuple[int, list[Point]]:
    seed = int(os.environ.get("PSA_RESUME_SEED") or random.SystemRandom().randrange(10**6))
    drawn = sorted(random.Random(seed).sample(range(len(CANDIDATES)), EXTRA_POINTS))
    return seed, [Point(*CREATE_RUNNING)] + [Point(*CANDIDATES[i]) for i in drawn]


def run_up(site: Site, point: Point | None) -> Run:
    return run_cli_env(site, point, "up", "phase0", "--yes")


def run_cli_env(site: Site, point: Point | None, *args: str) -> Run:
    """The CLI in a subprocess, with the kill hook set for `point` (None: no hook)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PSA_KILL_AT", "PSA_KILL_DELAY")}
    if point is not None:
        env |= {ENABLE_ENV: "1", "PSA_KILL_AT": point.glob, "PSA_KILL_DELAY": str(point.delay)}
    argv = [*CLI, "-i", str(site.inventory_path), *args]
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=RUN_TIMEOUT, cwd=REPO_ROOT,
                          stdin=subprocess.DEVNULL, env=env, check=False)
    return Run(argv, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)


def test_killed_up_is_finished_by_the_next_up(phase0: Site) -> None:
    seed, points = choose_points()
    sys.stderr.write(f"\n[resume] seed {seed} (PSA_RESUME_SEED={seed} repeats it), kill points:\n"
                     + "".join(f"  {p.glob} (+{p.delay:.0f} s)\n" for p in points))
    spec = phase0.container
    interrupted = run_cli_env(phase0, Point("container: delete container * (task running)", 0.0),
                         "destroy", "phase0", "--yes")
    assert interrupted.code == -signal.SIGKILL, f"destroy was not killed:\n{interrupted.output[-3000:]}"
    destroyed = run_cli_env(phase0, None, "destroy", "phase0", "--yes")  # waits for the journaled delete
    assert destroyed.code == 0, destroyed.output
    assert proxmox.connect(phase0.inventory).find_vmid(spec.vmid) is None, destroyed.output
    journal = Journal.for_phase(phase0.inventory_path, "phase0")
    first_record = len(journal.entries())

    for point in points:
        run = run_up(phase0, point)
        point.seconds = run.seconds
        point.killed = run.code == -signal.SIGKILL
        sys.stderr.write(f"[resume] {point.glob}: {'killed' if point.killed else f'exit {run.code}'} "
                         f"after {run.seconds:.0f} s\n")
        assert point.killed or run.code == 0, f"up with PSA_KILL_AT={point.glob}:\n{run.output[-4000:]}"
        if point.glob == CREATE_RUNNING[0]:
            assert point.killed, f"the create task kill point was not reached:\n{run.output[-3000:]}"
            config = proxmox.connect(phase0.inventory).get_container(spec.node, spec.vmid)
            assert config is not None, "the killed run left no container config behind"

    final = run_up(phase0, None)
    assert final.code == 0, f"the resuming up failed:\n{final.output[-6000:]}"
    killed = [p.glob for p in points if p.killed]
    assert len(killed) >= EXTRA_POINTS, f"only {len(killed)} kill points were reached: {killed}"

    records = journal.entries()[first_record:]
    creates = [r for r in records if r.get("event") == "task" and r.get("state") == "running"
               and str(r.get("step", "")).startswith("container: create container")]
    assert len(creates) == 1, f"the container was created {len(creates)} times: {creates}"
    upid = creates[0]["upid"]
    ends = [r for r in records
            if r.get("event") == "task" and r.get("upid") == upid and r.get("state") != "running"]
    assert ends and ends[0]["state"] == "done" and ends[0]["run"] != creates[0]["run"], \
        f"the create task {upid} was not waited for by the rerun: {ends}"
    assert journal.open_tasks() == [], f"tasks nobody waited for: {journal.open_tasks()}"

    px = proxmox.connect(phase0.inventory)
    guests = [g for g in px.cluster_guests() if int(g.get("vmid", -1)) == spec.vmid]
    assert len(guests) == 1, guests
    active = px.request("GET", f"/nodes/{spec.node}/tasks", {"vmid": spec.vmid, "source": "active"})
    assert not active, f"tasks still running for {spec.vmid}: {active}"

    verify = phase0.cli("verify", "phase0", timeout=900)
    assert verify.code == 0, f"verify after the resumed runs:\n{verify.output[-4000:]}"
    again = phase0.cli("up", "phase0", "--yes")
    assert again.code == 0 and again.summary()[0] == 0, again.output[-4000:]
    # and it survives a reboot as a clean run does: PM2 resurrects the apps it saved (a run killed
    # between `pm2 start` and `pm2 save` once left them running but unsaved, CI 2026-11-27)
    px.reboot(spec.node, spec.vmid)
    wait_gateway_healthy(phase0)
    take_converged_snapshot(phase0, "e2e session, after test_resume")  # destroy took the first one


@pytest.fixture(autouse=True)
def _no_kill_hook_leaks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PSA_KILL_AT", raising=False)
    monkeypatch.delenv("PSA_KILL_DELAY", raising=False)
