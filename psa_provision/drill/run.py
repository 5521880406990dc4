"""One drill: writes through the VIP, the fault, the member restored, the cluster healed, the store read.

The fault is what losing a member is on Proxmox VE: the container stopped through the API. For an HA
resource that stop is a request to the HA manager (pve-container's vm_stop hands it to `ha-manager
crm-command stop`), which hard-stops the container and keeps it stopped (request state `stopped`):
the member is gone, as after a crash, and stays gone until the drill starts it again (a start is the
HA request `started`). `node` stops every container of the node that holds the PostgreSQL leader; on
the sandbox, with test hooks open, it is pvesim's node-down fault instead (power lost, the node
offline, the HA manager recovering its resources elsewhere), undone by node-up.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from psa_provision.drill.kinds import Kind
from psa_provision.drill.measure import Attempt, Measured, confirmed_lost, measure
from psa_provision.drill.redis_writer import RedisRun, RedisWriter, writer_host
from psa_provision.drill.writer import TicketWriter
from psa_provision.errors import InputError, ProvisionError
from psa_provision.phases import ContainerSpec, Phase
from psa_provision.proxmox import ProxmoxClient, connect
from psa_provision.seams import node_fault
from psa_provision.sensitive import Sensitive
from psa_provision.services.app import tickets as app_tickets
from psa_provision.services.app.tickets import TicketEvent
from psa_provision.services.keepalived import config as keepalived_config
from psa_provision.services.keepalived import vip as keepalived_vip
from psa_provision.services.patroni import health as patroni_health
from psa_provision.services.patroni import members as patroni_members
from psa_provision.services.redis import SECRET as REDIS_SECRET
from psa_provision.services.redis import writes as redis_writes
from psa_provision.site import Site, ssh_connection

BASELINE_S = 5.0  # writes before the fault, and after healing
HEAL_TIMEOUT_S = 600.0
MAX_FAILING_NAMED = 12  # health lines named in an error or a note
MAX_SECONDS = 900.0  # the writer stops by itself after this, whatever happens
RATE = 5.0
REDIS_RATE = 5.0  # Redis writes a second, with and without WAIT in turn
BILLING_DRAIN_S = 60.0  # at most this long for billing to record the confirmed events before counting
BILLING_POLL_S = 5.0
STEADY_S = 10.0  # acknowledged writes and no failure this long: the platform rode the fault out
HOLD_POLL_S = 1.0


@dataclass(frozen=True)
class Fault:
    """What the drill takes down: the containers, or a whole node through the sandbox's fault."""

    target: str
    containers: tuple[ContainerSpec, ...]
    node: str | None = None


def vip_base(phase: Phase) -> str:
    """http://VIP:gateway-port, from the load balancers' `vip:` in the phase file."""
    vips = {c.vip for c in phase.with_component("keepalived") if c.vip}
    if len(vips) != 1:
        raise InputError(f"{phase.name}: no single VIP on its load balancers: `drill` writes through it",
                         hint="drills are for phase 3 (phases with `cluster:` members and a VIP)")
    address = next(iter(vips)).split("/")[0]
    return f"http://{address}:{phase.services['api-gateway'].port}"


def _run_on(site: Site, spec: ContainerSpec, script: str, stdin: Sensitive | str | None = None) -> str | None:
    """A script's stdout on one container, None when it cannot be reached or fails."""
    try:
        conn = ssh_connection(site.inventory, spec)
        try:
            result = conn.run(script, stdin=stdin, check=False, timeout=30)
        finally:
            conn.close()
    except ProvisionError:
        return None
    return result.stdout if result.ok else None


def postgres_leader(site: Site) -> ContainerSpec:
    """The Patroni leader, as the first member that answers `patronictl list` says."""
    members = patroni_members(site.phase)
    for spec in members:
        out = _run_on(site, spec, patroni_health.LIST)
        if out is None:
            continue
        head = patroni_health.leader(patroni_health.parse_list(out))
        found = [m for m in members if head is not None and m.hostname == head.name]
        if found:
            return found[0]
    raise ProvisionError("no Patroni member names a leader", hint="psa-provision health phase3")


def redis_primary(site: Site) -> ContainerSpec:
    """The Redis primary, as the first Sentinel that answers names it (Sentinels ask for the password)."""
    members = site.phase.with_component("redis")
    password = Sensitive.join(site.secrets.get(REDIS_SECRET), "\n")
    for spec in members:
        out = _run_on(site, spec, redis_writes.ASK_PRIMARY, password)
        address = (out or "").split()[:1]
        found = [m for m in members if address and m.ip == address[0]]
        if found:
            return found[0]
    raise ProvisionError("no Sentinel names the Redis primary", hint="psa-provision health phase3")


def vip_holder(site: Site, base: str) -> ContainerSpec:
    """The load balancer holding the VIP."""
    lbs = site.phase.with_component("keepalived")
    outputs = {c.hostname: _run_on(site, c, keepalived_vip.ADDRESSES) or "" for c in lbs}
    vip = keepalived_config.vip(site.phase)
    held = keepalived_vip.sole_holder(outputs, vip)
    if held is None:
        raise ProvisionError(keepalived_vip.problem(outputs, vip) or f"the VIP of {base} is nowhere")
    return next(c for c in lbs if c.hostname == held)


def choose(site: Site, kind: Kind, base: str) -> Fault:
    """What `kind` takes down on the live phase."""
    phase = site.phase
    if kind.name == "postgresql-primary":
        spec = postgres_leader(site)
        return Fault(f"{spec.hostname} (Patroni leader)", (spec,))
    if kind.name == "redis-primary":
        spec = redis_primary(site)
        return Fault(f"{spec.hostname} (Redis primary)", (spec,))
    if kind.name == "rabbitmq-node":
        members = [c for c in phase.with_component("rabbitmq") if c.cluster]
        spec = members[1] if len(members) > 1 else members[0]
        return Fault(f"{spec.hostname} (RabbitMQ member)", (spec,))
    if kind.name == "lb-active":
        spec = vip_holder(site, base)
        return Fault(f"{spec.hostname} (holds the VIP)", (spec,))
    if kind.name == "app-container":
        spec = phase.container(phase.services["tickets"].container)
        return Fault(f"{spec.hostname} (tickets)", (spec,))
    node = postgres_leader(site).node
    on_node = tuple(c for c in phase.containers if c.node == node)
    return Fault(f"node {node} ({len(on_node)} containers, the Patroni leader's)", on_node, node)


def inject(px: ProxmoxClient, fault: Fault, owner: str, say: Callable[[str], None]) -> bool:
    """Take the fault's members down; True when the sandbox's node fault did it."""
    if fault.node is not None and node_fault("down", fault.node, owner):
        say(f"sandbox: node {fault.node} lost power")
        return True
    for spec in fault.containers:
        node = px.find_vmid(spec.vmid) or spec.node
        say(f"stop container {spec.vmid} ({spec.hostname}) on {node}")
        px.stop(node, spec.vmid)
    return False


def restore(px: ProxmoxClient, fault: Fault, owner: str, sandbox_node: bool,
            say: Callable[[str], None]) -> None:
    """Bring the lost members back (node up, or each container started where it is now)."""
    if sandbox_node and fault.node is not None:
        node_fault("up", fault.node, owner)
        say(f"sandbox: node {fault.node} back")
    for spec in fault.containers:
        node = px.find_vmid(spec.vmid) or spec.node
        if str(px.status(node, spec.vmid).get("status")) != "running":
            say(f"start container {spec.vmid} ({spec.hostname}) on {node}")
            px.start(node, spec.vmid)


def tickets_held(site: Site, run: str) -> Counter[str]:
    """Title -> rows of the drill's tickets, read on the leader after healing."""
    leader = postgres_leader(site)
    out = _run_on(site, leader, app_tickets.SCRIPT, app_tickets.held_sql(run))
    if out is None:
        raise ProvisionError(f"could not read the drill's tickets on {leader.hostname}")
    return app_tickets.parse_held(out)


def ticket_events(site: Site, run: str, say: Callable[[str], None]) -> tuple[list[TicketEvent] | None, float]:
    """The drill's tickets with their RabbitMQ confirm and billing record, read on the leader once billing
    recorded every confirmed event or after BILLING_DRAIN_S (billing consumes asynchronously); with the
    seconds waited. None when they could not be read."""
    leader = postgres_leader(site)
    began = time.monotonic()
    told = False
    while True:
        out = _run_on(site, leader, app_tickets.SCRIPT, app_tickets.events_sql(run))
        events = None if out is None else app_tickets.parse_events(out)
        waited = time.monotonic() - began
        if (events is not None and not confirmed_lost(events)) or waited >= BILLING_DRAIN_S:
            return events, waited
        if events is not None and not told:
            say(f"billing has not recorded {len(confirmed_lost(events))} confirmed ticket events yet: "
                f"waiting up to {BILLING_DRAIN_S:.0f} s")
            told = True
        time.sleep(BILLING_POLL_S)


def _start_redis_writer(site: Site, fault: Fault, run: str, at: float,
                        say: Callable[[str], None]) -> tuple[RedisWriter | None, str]:
    """The Redis writer started on a member the fault spares; (None, why) when there is none or it
    did not start."""
    host = writer_host(site.phase, fault.containers)
    if host is None:
        return None, "no Redis member outside the fault to write from"
    redis = RedisWriter(site, host, run, rate=REDIS_RATE, max_seconds=MAX_SECONDS)
    problem = redis.start(at)
    if problem:
        return None, problem
    say(f"Redis writes with and without WAIT from {host.hostname} (keys drill:{run}:*)")
    return redis, ""


class VipWatch:
    """lb-active: the other load balancer polled for the VIP from before the fault, in one SSH session
    (keepalived_vip.appears); the moment that poll returns is taken on the writer's clock."""

    def __init__(self, site: Site, fault: Fault, writer: TicketWriter, within_s: float) -> None:
        others = [c for c in site.phase.with_component("keepalived") if c not in fault.containers]
        self.site, self.writer = site, writer
        self.survivor = others[0] if others else None
        self.script = keepalived_vip.appears(keepalived_config.vip(site.phase), within_s)
        self.timeout_s = within_s + 30
        self.found_at: float | None = None
        self.problem = "" if others else "no other load balancer to take the VIP"
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="drill-vip", daemon=True)

    def start(self) -> VipWatch:
        """Connected and polling when this returns (at most 30 s to connect)."""
        if self.survivor is not None:
            self._thread.start()
            self._ready.wait(timeout=30)
        return self

    def _watch(self) -> None:
        spec = self.survivor
        assert spec is not None
        try:
            conn = ssh_connection(self.site.inventory, spec)
            try:
                conn.run("true")  # connected and authenticated before the fault
                self._ready.set()
                result = conn.run(self.script, check=False, timeout=self.timeout_s)
                if result.ok:
                    self.found_at = self.writer.now()
                else:
                    self.problem = f"the VIP did not reach {spec.hostname}"
            finally:
                conn.close()
        except ProvisionError as exc:
            self.problem = f"watching {spec.hostname} for the VIP: {exc.message}"
        finally:
            self._ready.set()

    def moved_s(self, fault_at: float) -> float | None:
        """Seconds from the fault until the VIP was on the other load balancer (None: not seen)."""
        if self._thread.is_alive():  # never started when there is no other load balancer
            self._thread.join(timeout=self.timeout_s)
        return None if self.found_at is None else max(0.0, self.found_at - fault_at)


def ridden_out(kind: Kind, attempts: list[Attempt], fault_at: float, now: float) -> bool:
    """Whether the fault may be undone: held for the kind's resume target at least, and every ticket
    write answered in the last STEADY_S acknowledged (some were), none failing since. At most
    kind.longest_hold_s in any case; a kind whose figures the ticket writes do not show is held that long."""
    held = now - fault_at
    if held >= kind.longest_hold_s:
        return True
    if not kind.seen_in_tickets or held < kind.resume_target_s:
        return False
    recent = [a for a in attempts if a.answered >= now - STEADY_S]
    return bool(recent) and all(a.acked for a in recent) and held >= STEADY_S


def hold(writer: TicketWriter, kind: Kind, fault_at: float) -> None:
    """Wait while the fault lasts, until the platform rode it out (ridden_out)."""
    while not ridden_out(kind, list(writer.attempts), fault_at, writer.now()):
        time.sleep(HOLD_POLL_S)


def named(failing: list[str]) -> str:
    """The first MAX_FAILING_NAMED health failures, `; `-joined, and how many more there were."""
    more = len(failing) - MAX_FAILING_NAMED
    return "; ".join(failing[:MAX_FAILING_NAMED]) + (f" (and {more} more)" if more > 0 else "")


def drill(site: Site, kind: Kind, unhealthy: Callable[[], list[str]],
          say: Callable[[str], None]) -> Measured:
    """Run one drill end to end; the figures (Measured.passed: no acknowledged write lost, healed).
    `unhealthy` names what `health` finds failing (nothing: healthy); when the platform does not heal
    in time, what still failed goes into the figures' notes."""
    base = vip_base(site.phase)
    if failing := unhealthy():
        raise ProvisionError(f"{site.phase.name} is not healthy before the drill: nothing was stopped "
                             f"({named(failing)})",
                             hint=f"psa-provision health {site.phase.name}")
    px = connect(site.inventory)
    run = secrets.token_hex(4)
    owner = f"drill-{run}"
    fault = choose(site, kind, base)
    s = site.secrets
    writer = TicketWriter(base, s.get("app.admin_email").value, s.get("app.admin_password").value, run,
                          rate=RATE, max_seconds=MAX_SECONDS).start()
    redis, redis_problem = _start_redis_writer(site, fault, run, writer.now(), say)
    vip = (VipWatch(site, fault, writer, BASELINE_S + kind.longest_hold_s).start()
           if kind.resume_target_of == "vip" else None)
    sandbox_node = False
    restored_at: float | None = None
    try:
        time.sleep(BASELINE_S)
        fault_at = writer.now()
        sandbox_node = inject(px, fault, owner, say)
        hold(writer, kind, fault_at)
        restored_at = writer.now()
        restore(px, fault, owner, sandbox_node, say)
        deadline = time.monotonic() + HEAL_TIMEOUT_S
        failing = unhealthy()
        while failing and time.monotonic() < deadline:
            time.sleep(5.0)
            failing = unhealthy()
        healed = not failing
        heal_s = writer.now() - restored_at
        time.sleep(BASELINE_S)  # writes after healing count too
    finally:
        attempts = writer.stop()
        if redis is not None:
            redis.stop()
        if restored_at is None and fault.node is not None:  # cut short: a node it took down comes back
            try:
                node_fault("release", fault.node, owner)
            except ProvisionError as err:
                say(f"{err}: bring node {fault.node} back with `pvesim fault clear --owner {owner}`")
    redis_run = redis.collect() if redis is not None else RedisRun(problem=redis_problem)
    held = tickets_held(site, run)
    events, waited = ticket_events(site, run, say)
    result = measure(kind, fault.target, attempts + redis_run.attempts, held, fault_at, restored_at,
                     redis_held=redis_run.held, events=events, billing_waited_s=waited)
    result.healed, result.heal_s = healed, heal_s
    if not healed:
        result.notes.append(f"not healed after {heal_s:.0f} s; still failing: {named(failing)}")
    if vip is not None:
        result.vip_moved_s = vip.moved_s(fault_at)
        if vip.problem:
            result.notes.append(vip.problem)
    if redis_run.problem:
        result.notes.append(f"Redis writes with and without WAIT: {redis_run.problem}")
    if events is None:
        result.notes.append("RabbitMQ confirmed publishes not counted: the tickets' published_at and "
                            "billing's billing_ticket_events could not be read on the PostgreSQL leader")
    return result
