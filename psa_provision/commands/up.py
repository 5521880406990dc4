"""`up`: converge a phase: container(s), guest configuration, app, then wait until healthy.

Containers go up side by side in two waves (waves.py); each applies its own plan, then the app
containers start their apps and wait for /health. The journal and the phase lock make a rerun resume.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

from psa_provision import waves
from psa_provision.apply import JournaledTask, Summary, apply
from psa_provision.changes import ApiCall, Plan
from psa_provision.commands.plan import earlier_containers
from psa_provision.cost import Cost
from psa_provision.facts_ahead import FactsAhead, gather_facts_and_health
from psa_provision.journal import Journal, PhaseLock, migration_grants
from psa_provision.migration import handover
from psa_provision.migration.hold import Hold, conversion_hold
from psa_provision.migration.steps import refuse_moved_away
from psa_provision.output import Output, StepProgress
from psa_provision.planner import container_changes, guest_plan
from psa_provision.preflight import ContainerState, container_states, preflight
from psa_provision.proxmox import ProxmoxClient, connect
from psa_provision.reads import FirewallNow, firewall_now
from psa_provision.refusals import refuse_clusters
from psa_provision.seams import kill_point
from psa_provision.services.app import APP_HOME, APP_USER
from psa_provision.services.haproxy.config import front_address
from psa_provision.site import Site, connections, forget_host_key, load_site
from psa_provision.ssh import Connection, wait_for_ssh
from psa_provision.timing import WATCH, StepTimer
from psa_provision.waits import SSH_TIMEOUT, finish_open_tasks, wait_healthy, wait_running


@dataclass
class UpResult:
    """What `up` did: counts, the changes applied, and its cost (seconds, Proxmox API calls)."""

    summary: Summary
    plan: Plan = field(default_factory=Plan)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    api_calls: int = 0
    cost: Cost = field(default_factory=Cost)


def load(inventory: Path, phase: str) -> Site:
    """The site to converge; refused for a phase with clusters or whose data has moved on."""
    site = load_site(inventory, phase)
    refuse_clusters(site.phase, "up")
    refuse_moved_away(site, "up")
    return site


def up(site: Site, out: Output, *, force: bool = False) -> UpResult:
    """Converge the phase: container(s), guest configuration, app, then wait until healthy."""
    started = time.monotonic()
    journal = Journal.for_phase(site.inventory_path, site.phase.name)
    with (PhaseLock.for_phase(site.inventory_path, site.phase.name).held(), connections(site) as conns,
          FactsAhead(site, conns, health=True) as ahead):
        ahead.start_known()
        with WATCH.timed("proxmox"):
            px = connect(site.inventory)
            checked = preflight(px, site, download=True, note=out.note, seen=ahead.start, force=force)
            states = checked.states
        journal.record("run-start", phase=site.phase.name, command="up")
        waited = finish_open_tasks(px, journal, states, out.note)
        if waited:
            ahead.drop_all()
            for state in states:  # created by the killed run, which may have died before forgetting
                if any(f":vzcreate:{state.spec.vmid}:" in str(t["upid"]) for t in waited):
                    forget_host_key(site.inventory, state.spec)
            states = container_states(px, [s.spec for s in states], moved_ok=site.phase.high_availability)
        hold = conversion_hold(site, states)
        if hold.note:
            out.note(hold.note)
        result = UpResult(Summary())
        for text in earlier_containers(site, checked.resources):
            out.note(text)
        handover.before_up(px, site.inventory_path, site.inventory.phases_dir, site.phase, out.note)
        walls = firewall_now(px, site.phase, [s.spec for s in states if s.config is not None],
                             checked.datacenter_firewall)  # nothing written to it since preflight
        with out.steps() as progress:
            failures = _up_all(site, px, states, walls, conns, ahead, progress, journal, result, hold,
                               force=force)
            if not failures:  # HA resources name containers that exist, running (a high_availability phase)
                _apply(Plan(waves.ha_changes(px, site.phase)), conns, px, journal, progress, result)
        result.summary.failed += len(failures)
        cost = result.cost
        cost.measure(started, px)
        result.seconds, result.api_calls = cost.seconds, cost.api_calls
        journal.record("run-end", phase=site.phase.name, changed=result.summary.changed,
                       unchanged=result.summary.unchanged, failed=result.summary.failed,
                       seconds=cost.seconds, api_calls=cost.api_calls, ssh_connections=cost.ssh_connections,
                       guest_commands=cost.guest_commands, timings=cost.timings)
    if failures:
        raise failures[0].error
    return result


def _up_all(site: Site, px: ProxmoxClient, states: list[ContainerState], walls: dict[int, FirewallNow],
            conns: dict[str, Connection], ahead: FactsAhead, progress: StepProgress, journal: Journal,
            result: UpResult, hold: Hold, *, force: bool) -> list[waves.Failure]:
    """Every container in parallel (stores, then app containers); each keeps its own counts."""
    parts: dict[int, UpResult] = {}

    def work(state: ContainerState) -> waves.Finish:
        part = parts[state.spec.vmid] = UpResult(Summary())
        host = state.spec.hostname
        started = time.monotonic()
        wall = walls.get(state.spec.vmid)
        rest = _up_container(site, px, state, wall, conns, ahead, progress, journal, part, hold, force=force)
        journal.record("container", host=host, part="own", seconds=round(time.monotonic() - started, 1))

        def finish() -> None:  # the container's time in each wave, for bench/run's phase1 figure
            started = time.monotonic()
            rest()
            journal.record("container", host=host, part="apps", seconds=round(time.monotonic() - started, 1))

        return finish

    failures = waves.run_all(states, work, note=progress.output.note)
    for state in states:  # phase order, whatever order the threads finished in
        part = parts.get(state.spec.vmid)
        if part is not None:
            result.summary.add(dataclasses.replace(part.summary, error=None))
            result.plan.add(part.plan.changes)
    return failures


def _up_container(site: Site, px: ProxmoxClient, state: ContainerState, wall: FirewallNow | None,
                  conns: dict[str, Connection], ahead: FactsAhead, progress: StepProgress, journal: Journal,
                  result: UpResult, hold: Hold, *, force: bool) -> waves.Finish:
    """Everything this container can do on its own; returns the rest (changes that need the other
    containers: PM2 apps started or reloaded, then /health), which waves.py runs in its second wave.
    `wall`: its firewall as read before the run's first write, used when nothing changed it since.
    A container `hold` holds gets its base only and no wait for /health (`migrate` converges its apps)."""
    spec = state.spec
    cplan = Plan(container_changes(site, state, force=force))
    early = ahead.take(spec.hostname, usable=state.running and not cplan.actions)
    _apply(cplan, conns, px, journal, progress, result)
    restart = any(isinstance(c, ApiCall) and c.effect == "restart" and c.action != "reboot"
                  for c in cplan.actions)
    created = any(isinstance(c, ApiCall) and c.effect in ("create", "recreate") for c in cplan.actions)
    if created:
        forget_host_key(site.inventory, spec)  # a new container has a new SSH host key
    running = state.running and not created
    if running and restart:
        progress.message(f"rebooting container {spec.vmid} so its new settings take effect")
        px.reboot(spec.node, spec.vmid)
        result.summary.changed += 1
    elif not running:
        progress.message(f"starting container {spec.vmid}")
        step = f"container: start container {spec.vmid}"
        kill_point(step)
        with WATCH.timed("proxmox"):
            px.start(spec.node, spec.vmid, track=JournaledTask(journal, step))
        result.summary.changed += 1
    if cplan.actions or not state.running:  # preflight just saw it running and nothing changed since
        with WATCH.timed("proxmox"):
            wait_running(px, spec, progress)
    config = px.container_config(spec.node, spec.vmid) if cplan.actions else state.config
    fw = waves.firewall_changes(px, site.phase, spec, config, None if cplan.actions else wall)
    _apply(Plan(fw), conns, px, journal, progress, result)
    conn = conns[spec.hostname]
    if early is not None:
        facts, healthy = early
    else:
        progress.message(f"waiting for SSH on {conn.user}@{conn.host}")
        with WATCH.timed("waiting"):
            wait_for_ssh(conn, SSH_TIMEOUT)
        progress.message(f"gathering facts on {spec.hostname}")
        with WATCH.timed("facts"):
            facts, healthy = gather_facts_and_health(conn, site.phase, spec, site.secrets)
    gplan = guest_plan(site, hold.spec(spec), facts)
    _apply(Plan([c for c in gplan.changes if not c.needs_peers]), conns, px, journal, progress, result)

    def finish() -> None:
        _apply(Plan([c for c in gplan.changes if c.needs_peers]), conns, px, journal, progress, result)
        held = migration_grants(site.inventory_path, site.phase.name).get("hold_app")  # migrate holds PM2
        if waves.is_app(spec) and not held and not hold.holds(spec):
            kill_point("app: wait for /health")
            if not (healthy and state.running and not cplan.actions and not gplan.actions):
                with WATCH.timed("waiting"):  # else: healthy in the facts batch, nothing changed since
                    wait_healthy(conn, site.phase, spec, progress)

    return finish


def _apply(plan_: Plan, conns: dict[str, Connection], px: ProxmoxClient, journal: Journal,
           progress: StepProgress, result: UpResult) -> None:
    result.plan.add(plan_.changes)
    summary = apply(plan_, conns, px, journal, StepTimer(progress, WATCH), pm2_user=APP_USER,
                    pm2_home=APP_HOME)
    result.summary.add(summary)
    if summary.error is not None:
        raise summary.error


def endpoints(site: Site) -> list[tuple[str, str]]:
    """Where things are after `up`: (what, where) rows."""
    rows = []
    for spec in site.phase.containers:
        rows.append((f"container {spec.vmid} {spec.hostname}", f"ssh {site.inventory.ssh.user}@{spec.ip}"))
    front = front_address(site.phase)
    for name, svc in sorted(site.phase.services.items(), key=lambda kv: kv[1].port):
        on = len(svc.containers)
        host = front if front is not None and on > 1 else site.phase.container(svc.container).ip
        count = f"x{svc.instances}" if on == 1 else f"x{svc.instances} on {on} containers"
        rows.append((f"{name} ({count})", f"http://{host}:{svc.port}/health"))
    return rows
