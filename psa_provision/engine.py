"""Sequencing of `plan`, `up`, `status` and `destroy`: load, connect, preflight, plan, apply, wait.

Planning decisions live in the pure modules (components, planner, firewall); API calls go through
proxmox.py's typed client and guest commands through ssh.py. This module puts them in order, says what
it is waiting for, and holds the few guest scripts its commands run themselves (the /health probe and
the PM2 state listing of `status`).
"""

from __future__ import annotations

import dataclasses
import shlex
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psa_provision import facts as facts_mod
from psa_provision import firewall, handover, migration_record, phase_up, planner, privileges
from psa_provision.access import Access, datacenter_firewall, lock_diagnosis, require
from psa_provision.apply import JournaledTask, Summary, apply
from psa_provision.errors import (
    ConnectionFailed,
    GuestError,
    InputError,
    ProvisionError,
    ProxmoxError,
)
from psa_provision.inventory import Inventory, load_inventory
from psa_provision.journal import Journal, PhaseLock, migration_grants, state_dir
from psa_provision.output import Output, StepProgress
from psa_provision.phases import ContainerSpec, Phase, around, load_all, load_phase, where
from psa_provision.plan import ApiCall, Change, Plan
from psa_provision.proxmox import ProxmoxClient, connect
from psa_provision.seams import kill_point
from psa_provision.secrets import Secrets, load_secrets
from psa_provision.services.app import APP_HOME, APP_USER, pm2
from psa_provision.services.app.component import probe_address
from psa_provision.services.container import component as container_component
from psa_provision.services.pgbackrest.keys import read_keys
from psa_provision.ssh import COUNTER as SSH_COUNTER
from psa_provision.ssh import Connection, forget_host, pinned_hosts, wait_for_ssh
from psa_provision.timing import WATCH, StepTimer, Stopwatch

MARKER = "psa-provision"
RUNNING_TIMEOUT = 120.0
SSH_TIMEOUT = 180.0
HEALTH_TIMEOUT = 600.0


@dataclass
class Site:
    """What every command starts from: inventory, phase, secrets (validated, no network yet)."""

    inventory: Inventory
    inventory_path: Path
    phase: Phase
    secrets: Secrets
    ssh_public_key: str = ""

    @property
    def secret_values(self) -> list[str]:
        return self.secrets.values()


@dataclass
class ContainerState:
    """One phase container as Proxmox has it (config None: not there yet)."""

    spec: ContainerSpec
    config: dict[str, Any] | None
    running: bool = False
    pending: frozenset[str] = frozenset()  # keys whose new value waits for the next start


@dataclass
class Cost:
    """What a run cost: wall seconds, Proxmox API calls, SSH connections opened, guest commands run,
    and seconds per category (timing.CATEGORIES). `up` and `plan` report it; bench/run reads it."""

    seconds: float = 0.0
    api_calls: int = 0
    ssh_connections: int = 0
    guest_commands: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def line(self) -> str:
        return (f"{self.seconds:.1f} s, {self.api_calls} Proxmox API calls, "
                f"{self.ssh_connections} SSH connections, {self.guest_commands} guest commands")

    def measure(self, started: float, px: ProxmoxClient, watch: Stopwatch = WATCH) -> None:
        """Fill in the figures of the run that started at `started` (time.monotonic())."""
        self.seconds = round(time.monotonic() - started, 1)
        self.api_calls = px.counter.total
        self.ssh_connections, self.guest_commands = SSH_COUNTER.connections, SSH_COUNTER.commands
        self.timings = watch.rounded()


@dataclass
class UpResult:
    """What `up` did: counts, the changes applied, and its cost (seconds, Proxmox API calls)."""

    summary: Summary
    plan: Plan = field(default_factory=Plan)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    api_calls: int = 0
    cost: Cost = field(default_factory=Cost)


def load_site(inventory_path: Path, phase_name: str, *, need_secrets: bool = True) -> Site:
    """Validate inventory, phase file and secrets before any network call."""
    inv = load_inventory(inventory_path)
    phase = load_phase(phase_name, inv.phases_dir)
    refuse_root_only(inv, phase)
    secrets = load_secrets(inv.secrets_file) if need_secrets else Secrets({})
    pub = inv.ssh.public_key_file
    key = pub.read_text(encoding="utf-8").strip() if pub.is_file() else ""
    if need_secrets and not key:
        raise InputError(f"{pub}: SSH public key not found",
                         hint="run `psa-provision init` to create the key pair")
    if need_secrets and phase.with_component("backup"):
        read_keys(inv.ssh.key_file)  # InputError naming the missing pgBackRest key pair and `init`
    return Site(inv, Path(inventory_path), phase, secrets, key)


def refuse_root_only(inv: Inventory, phase: Phase) -> None:
    """InputError (file:line) for container features Proxmox lets only root@pam set, when the inventory
    logs in as anyone else; an API token never counts as root@pam, not even root@pam!token."""
    auth = inv.proxmox.auth
    caller = str(auth.token_id if auth.kind == "token" else auth.user)
    for i, spec in enumerate(phase.containers):
        why = privileges.root_only(spec.unprivileged, {str(k): v for k, v in spec.features.items()}, caller)
        if why:
            here = where(phase.name, inv.phases_dir, "containers", i, "features")
            raise InputError(f"{here}: container {spec.vmid}: {why}",
                             hint="keep only nesting on an unprivileged container, or log in as root@pam "
                                  "with a password (proxmox.auth.user) to set the others")


def unbuilt_clusters(phase: Phase) -> list[str]:
    """The phase's clusters (containers with `cluster:`, phase 3). This version provisions every member
    as a standalone store: PostgreSQL replication, Redis Sentinel, the RabbitMQ and Elasticsearch
    clusters and the load balancer are not configured yet."""
    return sorted({c.cluster for c in phase.containers if c.cluster})


def refuse_clusters(phase: Phase, command: str) -> None:
    """InputError before any call: `up`/`migrate` of a phase with clusters would build standalone
    stores that look like high availability and are not."""
    clusters = unbuilt_clusters(phase)
    if clusters:
        raise InputError(
            f"refusing `{command} {phase.name}`: its clusters ({', '.join(clusters)}) need replication and "
            "clustering that this version does not configure yet; every member would run as a standalone "
            "store, which is not high availability",
            hint=f"`psa-provision plan {phase.name}` shows its containers; phases without clusters "
                 "(phase0 to phase2) are supported")


def known_hosts(inv: Inventory) -> Path | None:
    """The tool's own known_hosts (next to the journal): host keys are pinned after first use."""
    return state_dir(inv.path) / "known_hosts" if inv.path else None


def ssh_connection(inv: Inventory, spec: ContainerSpec) -> Connection:
    return Connection(spec.ip, inv.ssh.user, inv.ssh.key_file, inv.ssh.jump_host,
                      known_hosts=known_hosts(inv))


def _forget(inv: Inventory, spec: ContainerSpec) -> None:
    path = known_hosts(inv)
    if path is not None:
        forget_host(path, spec.ip)


def is_ours(config: dict[str, Any]) -> bool:
    """Created by psa-provision: our tag (or the marker in the description) is on it."""
    tags = str(config.get("tags", "")).replace(",", ";").split(";")
    return MARKER in tags or MARKER in str(config.get("description", ""))


# -- preflight ---------------------------------------------------------------------------------------
def preflight(px: ProxmoxClient, site: Site, *, download: bool, note: Callable[[str], None],
              seen: Callable[[ContainerState], None] | None = None,
              force: bool = False) -> list[ContainerState]:
    """Node online, privileges, vmids free or ours, storage/bridge/template present, capacity, the
    datacenter firewall; returns states. Nothing is written before every check has passed.

    `seen` gets each container's state as soon as it is known (FactsAhead starts its facts then)."""
    inv, phase = site.inventory, site.phase
    access = Access(px)
    command = "up" if download else "plan"
    resources = px.cluster_resources()  # nodes, guests and storages: one call, not one per container
    warnings: list[str] = []
    nodes = {c.node for c in phase.containers}
    for node in sorted(nodes):
        entry = _resource(resources, "node", node=node)
        if entry is None or entry.get("status") != "online":
            raise ProxmoxError(f"node {node} is not online in the cluster at {px.settings.url}",
                               hint="check the node name in the phase file / inventory")
        warnings += _capacity(entry, phase, node)
    require(access, required_privileges(site, command, creating=()), note)
    for node in sorted(nodes):
        _check_node_resources(px, site, node, resources)
    for text in warnings:
        note(f"warning: {text}")
    states = []
    for spec in phase.containers:
        states.append(_container_state(px, spec, resources))
        if seen is not None:
            seen(states[-1])
    creating = [s.spec for s in states if s.config is None]
    require(access, required_privileges(site, command, creating=creating), note)
    if force:
        for vmid in access.own_path_grants([s.spec.vmid for s in states if s.config is not None]):
            note(f"warning: privileges on container {vmid} come from an ACL on /vms/{vmid}; recreating it "
                 "deletes that ACL (pve-access-control remove_vm_access): grant on /vms or a pool instead")
    if firewall.enabled(phase):
        datacenter_firewall(px, access)
    for node in sorted(nodes):
        _ensure_template(px, inv, node, download=download, note=note, access=access)
    return states


def privilege_target(site: Site, specs: list[ContainerSpec] | None = None) -> privileges.Target:
    """What the phase's containers (or `specs`) touch, for privileges.required."""
    chosen = site.phase.containers if specs is None else specs
    return privileges.Target(
        vmids=tuple(c.vmid for c in chosen), storages=tuple(sorted({c.rootfs_storage for c in chosen})),
        templates=site.inventory.storage.templates if chosen else "",
        bridges=tuple(sorted({c.bridge for c in chosen})), nodes=tuple(sorted({c.node for c in chosen})),
        firewall=firewall.enabled(site.phase))


def required_privileges(site: Site, command: str, *,
                        creating: Sequence[ContainerSpec]) -> dict[str, set[str]]:
    """ACL path -> privileges `command` needs: everything but VM.Allocate for the phase's containers
    (and Datastore.AllocateTemplate, checked before a download), VM.Allocate for those to be created,
    and Sys.Modify on / to create a privileged one (pve-container API2/LXC.pm create_vm)."""
    later = {"VM.Allocate", "Datastore.AllocateTemplate"}
    need = privileges.required(command, privilege_target(site), skip=later)
    if command == "plan" or not creating:
        return need
    for path, privs in privileges.required(command, privilege_target(site, list(creating)),
                                           skip={"Datastore.AllocateTemplate"}).items():
        need.setdefault(path, set()).update(privs)
    if any(not c.unprivileged for c in creating):
        need.setdefault("/", set()).add(privileges.SYS_MODIFY)
    return need


def _resource(resources: list[dict[str, Any]], *types: str, **match: object) -> dict[str, Any] | None:
    """The first /cluster/resources entry of one of `types` whose fields equal `match`."""
    for entry in resources:
        if entry.get("type") in types and all(str(entry.get(k)) == str(v) for k, v in match.items()):
            return entry
    return None


def _check_node_resources(px: ProxmoxClient, site: Site, node: str, resources: list[dict[str, Any]]) -> None:
    specs = [c for c in site.phase.containers if c.node == node]
    for storage in sorted({c.rootfs_storage for c in specs} | {site.inventory.storage.templates}):
        if _resource(resources, "storage", node=node, storage=storage) is None:
            raise ProxmoxError(privileges.not_visible("storage", storage, node),
                               hint="create it or fix storage in the inventory / rootfs_storage in the phase")
    bridges = px.bridges(node)
    for bridge in sorted({c.bridge for c in specs}):
        if bridge not in bridges:
            seen = ", ".join(bridges) or "none"
            raise ProxmoxError(f"{privileges.not_visible('bridge', bridge, node)} (visible: {seen})",
                               hint="create the bridge or fix network.bridge / the phase's bridge")


def _capacity(node_entry: dict[str, Any], phase: Phase, node: str) -> list[str]:
    """Overcommit warnings (memory, cores) for the node (its /cluster/resources entry): containers vs size."""
    total_mb = int(node_entry.get("maxmem") or 0) // (1024 * 1024)
    cpus = int(node_entry.get("maxcpu") or 0)
    specs = [c for c in phase.containers if c.node == node]
    want_mb = sum(c.memory_mb for c in specs)
    want_cores = max((c.cores for c in specs), default=0)
    out = []
    if total_mb and want_mb > total_mb:
        out.append(f"node {node}: containers want {want_mb} MiB memory, the node has {total_mb} MiB "
                   "(overcommit)")
    if cpus and want_cores > cpus:
        out.append(f"node {node}: a container wants {want_cores} cores, the node has {cpus}")
    return out


def _container_state(px: ProxmoxClient, spec: ContainerSpec,
                     resources: list[dict[str, Any]] | None = None) -> ContainerState:
    """The container as Proxmox has it, from /cluster/resources (read now unless given) + its config."""
    guests = px.cluster_resources() if resources is None else resources
    guest = _resource(guests, "lxc", "qemu", vmid=spec.vmid)
    if guest is None:
        return ContainerState(spec, None)
    where = str(guest.get("node"))
    if where != spec.node:
        raise ProxmoxError(f"vmid {spec.vmid} already exists on node {where}, "
                           f"the phase puts it on {spec.node}",
                           hint="migrate it or change the node in the phase file")
    if guest.get("type") != "lxc":
        raise ProxmoxError(f"vmid {spec.vmid} is taken by a guest that is not a container (a VM?)",
                           hint="free the vmid or choose another one in the phase file")
    config, pending = px.container_pending(spec.node, spec.vmid)
    if not is_ours(config) and config.get("hostname") != spec.hostname:
        raise ProxmoxError(f"vmid {spec.vmid} is taken by container '{config.get('hostname')}', "
                           f"not {spec.hostname}; psa-provision will not touch it",
                           hint="free the vmid or choose another one in the phase file")
    running = guest.get("status") == "running"
    return ContainerState(spec, config, running, frozenset(pending) if running else frozenset())


def _ensure_template(px: ProxmoxClient, inv: Inventory, node: str, *, download: bool,
                     note: Callable[[str], None], access: Access | None = None) -> None:
    storage = inv.storage.templates
    if inv.template_volid in px.templates(node, storage):
        return
    if inv.template not in px.available_templates(node):
        raise ProxmoxError(f"template {inv.template} is neither on {node}:{storage} "
                           "nor downloadable (aplinfo)",
                           hint="fix `template` in the inventory (pveam available lists the names)")
    if not download:
        note(f"template {inv.template} is missing on {node}; `up` will download it")
        return
    if access is not None:  # POST aplinfo: Datastore.AllocateTemplate on the storage
        require(access, {f"/storage/{storage}": {"Datastore.AllocateTemplate"}}, note)
    note(f"downloading template {inv.template} to {node}:{storage}")
    px.download_template(node, storage, inv.template)


# -- planning ----------------------------------------------------------------------------------------
def container_changes(site: Site, state: ContainerState, *, force: bool) -> list[Change]:
    """The container component's ApiCalls, with our marker added at create."""
    inv = site.inventory
    changes = container_component.plan(
        state.spec, state.config, node=state.spec.node, template_volid=inv.template_volid,
        ssh_public_key=site.ssh_public_key, nameserver=inv.network.nameserver,
        searchdomain=inv.network.searchdomain, force=force, pending=state.pending)
    return [_marked(c, site.phase.name) for c in changes]


def _marked(change: Change, phase: str) -> Change:
    if isinstance(change, ApiCall) and change.effect == "create":
        params = {**change.params, "tags": MARKER, "description": f"{MARKER}: {phase}"}
        return dataclasses.replace(change, params=params)
    return change


def gather_facts(conn: Connection, spec: ContainerSpec) -> facts_mod.GuestFacts:
    """ONE ssh command: the facts script, parsed."""
    result = conn.run(facts_mod.gather_script(spec))
    return facts_mod.parse_guest_facts(result.stdout)


HEALTH_MARK = "@@psa-provision-health@@"


def gather_facts_and_health(conn: Connection, phase: Phase,
                            spec: ContainerSpec) -> tuple[facts_mod.GuestFacts, bool]:
    """ONE ssh command: the facts script, then one /health probe of the container's services.

    Returns (facts, every service answered 200): a converged `up` then needs no second round trip.
    """
    services = phase.services_on(spec.vmid)
    script = facts_mod.gather_script(spec)
    if services:
        script += f"\necho {HEALTH_MARK}\n" + health_script(phase, spec)
    head, _, tail = conn.run(script).stdout.partition(f"{HEALTH_MARK}\n")
    codes = dict(line.split() for line in tail.splitlines() if len(line.split()) == 2)
    healthy = bool(services) and all(codes.get(str(s.port)) == "200" for s in services.values())
    return facts_mod.parse_guest_facts(head), healthy


def guest_plan(site: Site, spec: ContainerSpec, facts: facts_mod.GuestFacts) -> Plan:
    ctx = planner.build_context(site.inventory, site.phase, spec, site.secrets,
                                ssh_public_key=site.ssh_public_key)
    return planner.plan_guest(ctx, facts)


class FactsAhead:
    """The facts of running containers, gathered while Proxmox is still being asked.

    The facts script is the one guest round trip of a converged run, and most of its time is the
    guest's own probes, so it runs alongside the API calls, on a connection of its own. It starts at
    once for a container whose host key is pinned in our known_hosts (we provisioned it; a host key
    check refuses anything else at that address), otherwise as soon as preflight has seen the
    container running and ours. The result is used only when preflight found the container running
    and nothing touched it in between (no open task of a killed run waited for, no change to the
    container): then its connection serves the rest of the run. Otherwise it is dropped without
    waiting (a stopped container's address takes seconds to fail) and its connection closed, and the
    facts are gathered again where they always were.
    """

    def __init__(self, site: Site, conns: dict[str, Connection], *, health: bool) -> None:
        self._site, self._conns, self._health = site, conns, health
        self._futures: dict[str, Future[tuple[facts_mod.GuestFacts, bool, Connection]]] = {}

    def __enter__(self) -> FactsAhead:
        return self

    def __exit__(self, *_: object) -> None:
        self.drop_all()

    def start_known(self) -> None:
        specs = self._site.phase.containers
        pinned = pinned_hosts(known_hosts(self._site.inventory), (c.ip for c in specs))
        for spec in specs:
            if spec.ip in pinned:
                self._start(spec)

    def start(self, state: ContainerState) -> None:
        if state.running and state.spec.hostname not in self._futures:
            self._start(state.spec)

    def _start(self, spec: ContainerSpec) -> None:
        future: Future[tuple[facts_mod.GuestFacts, bool, Connection]] = Future()
        self._futures[spec.hostname] = future
        threading.Thread(target=self._gather, args=(spec, future), name=f"facts-{spec.hostname}",
                         daemon=True).start()  # daemon: a dropped one never holds up the exit

    def _gather(self, spec: ContainerSpec, future: Future[tuple[facts_mod.GuestFacts, bool, Connection]],
                ) -> None:
        conn = ssh_connection(self._site.inventory, spec)
        try:
            if self._health:
                facts, healthy = gather_facts_and_health(conn, self._site.phase, spec)
            else:
                facts, healthy = gather_facts(conn, spec), False
        except Exception as exc:  # handed to take(), which decides
            conn.close()
            future.set_exception(exc)
        else:
            future.set_result((facts, healthy, conn))

    def take(self, hostname: str, *, usable: bool) -> tuple[facts_mod.GuestFacts, bool] | None:
        """(facts, healthy) gathered ahead, if `usable` and they were; else None, without waiting."""
        future = self._futures.pop(hostname, None)
        if future is None:
            return None
        if not usable:
            future.add_done_callback(_close_connection)
            return None
        try:
            facts, healthy, conn = future.result()
        except (ProvisionError, OSError):  # gathered again the usual way, which reports it
            return None
        self._conns[hostname].close()
        self._conns[hostname] = conn  # closed with the others when the run ends
        return facts, healthy

    def drop_all(self) -> None:
        for hostname in list(self._futures):
            self.take(hostname, usable=False)


def _close_connection(future: Future[tuple[facts_mod.GuestFacts, bool, Connection]]) -> None:
    if not future.exception():
        future.result()[2].close()


@contextmanager
def connections(site: Site) -> Iterator[dict[str, Connection]]:
    conns = {c.hostname: ssh_connection(site.inventory, c) for c in site.phase.containers}
    try:
        yield conns
    finally:
        for conn in conns.values():
            conn.close()


def plan(site: Site, out: Output, *, force: bool = False, cost: Cost | None = None) -> Plan:
    """What `up` would do, Proxmox and guests; no writes anywhere (`cost` gets what it cost)."""
    started = time.monotonic()
    full = Plan()
    clusters = unbuilt_clusters(site.phase)
    if clusters:
        out.note(f"warning: {site.phase.name}'s clusters ({', '.join(clusters)}) are not configured by this "
                 "version: this plan builds each member as a standalone store, and "
                 f"`up {site.phase.name}` refuses to")
    with connections(site) as conns, FactsAhead(site, conns, health=False) as ahead:
        ahead.start_known()
        px = connect(site.inventory)
        states = preflight(px, site, download=False, note=out.note, seen=ahead.start, force=force)
        for text in _earlier_containers(px, site):
            out.note(text)
        for state in states:
            full.add(container_changes(site, state, force=force))
            full.add(phase_up.firewall_changes(px, site.phase, state.spec, state.config))
            facts = facts_mod.fresh()
            if state.running:
                early = ahead.take(state.spec.hostname, usable=True)
                facts = early[0] if early else gather_facts(conns[state.spec.hostname], state.spec)
            elif state.config is not None:
                out.note(f"{state.spec.hostname} is stopped: planning as for a fresh guest")
            full.add(guest_plan(site, state.spec, facts).changes)
    if cost is not None:
        cost.measure(started, px)
    return full


# -- up ----------------------------------------------------------------------------------------------
def up(site: Site, out: Output, *, force: bool = False) -> UpResult:
    """Converge the phase: container(s), guest configuration, app, then wait until healthy."""
    started = time.monotonic()
    journal = Journal.for_phase(site.inventory_path, site.phase.name)
    with (PhaseLock.for_phase(site.inventory_path, site.phase.name).held(), connections(site) as conns,
          FactsAhead(site, conns, health=True) as ahead):
        ahead.start_known()
        with WATCH.timed("proxmox"):
            px = connect(site.inventory)
            states = preflight(px, site, download=True, note=out.note, seen=ahead.start, force=force)
        journal.record("run-start", phase=site.phase.name, command="up")
        waited = finish_open_tasks(px, journal, states, out.note)
        if waited:
            ahead.drop_all()
            for state in states:  # created by the killed run, which may have died before forgetting
                if any(f":vzcreate:{state.spec.vmid}:" in str(t["upid"]) for t in waited):
                    _forget(site.inventory, state.spec)
            states = [_container_state(px, s.spec) for s in states]
        result = UpResult(Summary())
        for text in _earlier_containers(px, site):
            out.note(text)
        handover.before_up(px, site.inventory_path, site.inventory.phases_dir, site.phase, out.note)
        with out.steps() as progress:
            failures = _up_all(site, px, states, conns, ahead, progress, journal, result, force=force)
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


def _earlier_containers(px: ProxmoxClient, site: Site) -> list[str]:
    """Notes on containers of earlier phases that this phase leaves running (they hold the data)."""
    earlier, _ = around(site.phase.name, site.inventory.phases_dir)
    return phase_up.others_holding_data(px, site.phase, earlier)


def _up_all(site: Site, px: ProxmoxClient, states: list[ContainerState], conns: dict[str, Connection],
            ahead: FactsAhead, progress: StepProgress, journal: Journal, result: UpResult,
            *, force: bool) -> list[phase_up.Failure]:
    """Every container in parallel (stores, then app containers); each keeps its own counts."""
    parts: dict[int, UpResult] = {}

    def work(state: ContainerState) -> phase_up.Finish:
        part = parts[state.spec.vmid] = UpResult(Summary())
        host = state.spec.hostname
        started = time.monotonic()
        rest = _up_container(site, px, state, conns, ahead, progress, journal, part, force=force)
        journal.record("container", host=host, part="own", seconds=round(time.monotonic() - started, 1))

        def finish() -> None:  # the container's time in each wave, for bench/run's phase1 figure
            started = time.monotonic()
            rest()
            journal.record("container", host=host, part="apps", seconds=round(time.monotonic() - started, 1))

        return finish

    failures = phase_up.run_all(states, work, note=progress.output.note)
    for state in states:  # phase order, whatever order the threads finished in
        part = parts.get(state.spec.vmid)
        if part is not None:
            result.summary.add(dataclasses.replace(part.summary, error=None))
            result.plan.add(part.plan.changes)
    return failures


def _up_container(site: Site, px: ProxmoxClient, state: ContainerState, conns: dict[str, Connection],
                  ahead: FactsAhead, progress: StepProgress, journal: Journal, result: UpResult,
                  *, force: bool) -> phase_up.Finish:
    """Everything this container can do on its own; returns the rest (changes that need the other
    containers: PM2 apps started or reloaded, then /health), which phase_up runs in its second wave."""
    spec = state.spec
    cplan = Plan(container_changes(site, state, force=force))
    early = ahead.take(spec.hostname, usable=state.running and not cplan.actions)
    _apply(cplan, conns, px, journal, progress, result)
    restart = any(isinstance(c, ApiCall) and c.effect == "restart" and c.action != "reboot"
                  for c in cplan.actions)
    created = any(isinstance(c, ApiCall) and c.effect in ("create", "recreate") for c in cplan.actions)
    if created:
        _forget(site.inventory, spec)  # a new container has a new SSH host key
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
    fw = phase_up.firewall_changes(px, site.phase, spec, config)
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
            facts, healthy = gather_facts_and_health(conn, site.phase, spec)
    gplan = guest_plan(site, spec, facts)
    _apply(Plan([c for c in gplan.changes if not c.needs_peers]), conns, px, journal, progress, result)

    def finish() -> None:
        _apply(Plan([c for c in gplan.changes if c.needs_peers]), conns, px, journal, progress, result)
        held = migration_grants(site.inventory_path, site.phase.name).get("hold_app")  # migrate holds PM2
        if phase_up.is_app(spec) and not held:
            kill_point("app: wait for /health")
            if not (healthy and state.running and not cplan.actions and not gplan.actions):
                with WATCH.timed("waiting"):  # else: healthy in the facts batch, nothing changed since
                    wait_healthy(conn, site.phase, spec, progress)

    return finish


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


def _apply(plan_: Plan, conns: dict[str, Connection], px: ProxmoxClient, journal: Journal,
           progress: StepProgress, result: UpResult) -> None:
    result.plan.add(plan_.changes)
    summary = apply(plan_, conns, px, journal, StepTimer(progress, WATCH), pm2_user=APP_USER,
                    pm2_home=APP_HOME)
    result.summary.add(summary)
    if summary.error is not None:
        raise summary.error


def wait_running(px: ProxmoxClient, spec: ContainerSpec, progress: StepProgress,
                 timeout: float = RUNNING_TIMEOUT) -> None:
    """Poll the container status until `running` (deadline: timeout seconds)."""
    progress.message(f"waiting for container {spec.vmid} to run")
    deadline = time.monotonic() + timeout
    while True:
        status = px.status(spec.node, spec.vmid).get("status")
        if status == "running":
            return
        if time.monotonic() >= deadline:
            raise ProxmoxError(f"container {spec.vmid} is still {status} after {timeout:.0f} s",
                               hint=f"check `pct start {spec.vmid}` on node {spec.node}")
        time.sleep(1.0)


HEALTH_SCRIPT = """for hp in {ports}; do
  code=$(curl -s -o /dev/null -m 5 -w '%{{http_code}}' http://$hp/health || true)
  echo "${{hp##*:}} $code"
done
"""


def health_script(phase: Phase, spec: ContainerSpec) -> str:
    """HEALTH_SCRIPT for the services on `spec`, each probed where it listens (`<port> <code>` lines)."""
    services = phase.services_on(spec.vmid)
    targets = [f"{probe_address(phase, spec, name)}:{svc.port}" for name, svc in services.items()]
    return HEALTH_SCRIPT.format(ports=" ".join(shlex.quote(t) for t in targets))


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


def endpoints(site: Site) -> list[tuple[str, str]]:
    """Where things are after `up`: (what, where) rows."""
    rows = []
    for spec in site.phase.containers:
        rows.append((f"container {spec.vmid} {spec.hostname}", f"ssh {site.inventory.ssh.user}@{spec.ip}"))
    for name, svc in sorted(site.phase.services.items(), key=lambda kv: kv[1].port):
        host = site.phase.container(svc.container)
        rows.append((f"{name} (x{svc.instances})", f"http://{host.ip}:{svc.port}/health"))
    return rows


# -- status ------------------------------------------------------------------------------------------
def status(inventory_path: Path, phase: str | None = None) -> tuple[list[list[str]], list[list[str]]]:
    """(container rows, service rows) for every container any phase file names that exists.

    Services are those of `phase`, or of the newest phase whose containers all run."""
    inv = load_inventory(inventory_path)
    phases = load_all(inv.phases_dir)
    px = connect(inv)
    guests = {int(g["vmid"]): g for g in px.cluster_guests()}
    seen: dict[int, ContainerSpec] = {}
    for ph in phases:
        for spec in ph.containers:
            seen.setdefault(spec.vmid, spec)
    crow: list[list[str]] = []
    for vmid, spec in sorted(seen.items()):
        g = guests.get(vmid)
        if g is None:
            continue
        mem = f"{int(g.get('mem', 0)) // 2**20}/{int(g.get('maxmem', 0)) // 2**20} MiB"
        crow.append([str(g.get("node")), str(vmid), spec.hostname, str(g.get("status")),
                     f"{float(g.get('cpu', 0)) * 100:.0f}%", mem])
    srow = _service_rows(inv, [p for p in phases if phase in (None, p.name)], guests)
    return crow, srow


PM2_STATES = f"cd / && {pm2.STATES} 2>/dev/null || true\n"


def _service_rows(inv: Inventory, phases: list[Phase], guests: dict[int, dict[str, Any]]) -> list[list[str]]:
    """Services of the newest phase whose containers all run: PM2 instances online + /health."""
    live = [p for p in phases if p.containers and all(
        guests.get(c.vmid, {}).get("status") == "running" for c in p.containers)]
    if not live:
        return []
    phase = live[-1]
    rows = []
    for spec in phase.containers:
        services = phase.services_on(spec.vmid)
        if not services:
            continue
        script = (health_script(phase, spec)
                  + PM2_STATES)
        conn = ssh_connection(inv, spec)
        try:
            out = conn.run(script, check=False).stdout
        except ConnectionFailed as exc:
            out = ""
            rows.append([phase.name, spec.hostname, "(ssh)", "-", "-", exc.message])
        finally:
            conn.close()
        codes = dict(line.split() for line in out.splitlines() if len(line.split()) == 2)
        online: dict[str, int] = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == "pm2":
                online[parts[1]] = online.get(parts[1], 0) + (parts[2] == "online")
        for name, svc in sorted(services.items(), key=lambda kv: kv[1].port):
            code = codes.get(str(svc.port), "-")
            health = "healthy" if code == "200" else f"unhealthy ({code})"
            running = f"{online.get(name, 0)}/{svc.instances} online"
            rows.append([phase.name, spec.hostname, name, str(svc.port), running, health])
    return rows


# -- destroy -----------------------------------------------------------------------------------------
def destroy_targets(site: Site) -> tuple[ProxmoxClient, list[ContainerState], list[str]]:
    """(client, containers we may delete, notes about the ones we must leave alone)."""
    px = connect(site.inventory)
    ours: list[ContainerState] = []
    notes: list[str] = []
    for spec in site.phase.containers:
        where = px.find_vmid(spec.vmid)
        if where is None:
            notes.append(f"container {spec.vmid} ({spec.hostname}) does not exist")
            continue
        config = px.get_container(where, spec.vmid)
        if config is None or not is_ours(config):
            notes.append(f"container {spec.vmid} on {where} was not created by psa-provision: left alone")
            continue
        running = px.status(where, spec.vmid).get("status") == "running"
        ours.append(ContainerState(spec.model_copy(update={"node": where}), config, running))
    return px, ours, notes


def destroy(site: Site, px: ProxmoxClient, targets: list[ContainerState], out: Output) -> Summary:
    """Stop and delete the given containers (already filtered by destroy_targets)."""
    summary = Summary()
    journal = Journal.for_phase(site.inventory_path, site.phase.name)
    with PhaseLock.for_phase(site.inventory_path, site.phase.name).held():
        journal.record("run-start", phase=site.phase.name, command="destroy")
        finish_open_tasks(px, journal, targets, out.note)  # e.g. a delete a killed destroy left running
        for state in targets:
            spec = state.spec
            if px.find_vmid(spec.vmid) is None:
                out.note(f"container {spec.vmid} is already gone")
                _forget(site.inventory, spec)
                continue
            if px.status(spec.node, spec.vmid).get("status") == "running":
                out.note(f"stopping container {spec.vmid}")
                step = f"container: stop container {spec.vmid}"
                kill_point(step)
                px.stop(spec.node, spec.vmid, track=JournaledTask(journal, step))
            out.note(f"deleting container {spec.vmid}")
            step = f"container: delete container {spec.vmid}"
            kill_point(step)
            px.delete(spec.node, spec.vmid, track=JournaledTask(journal, step))
            _forget(site.inventory, spec)
            journal.record("destroy", vmid=spec.vmid, node=spec.node, hostname=spec.hostname)
            summary.changed += 1
        guests = {int(g.get("vmid", -1)) for g in px.cluster_guests()}
        if not any(c.vmid in guests for c in site.phase.containers):
            closed = migration_record.close_migration_record(site.inventory_path, site.phase.name)
            if closed is not None:
                out.note(f"the migration into {site.phase.name} is closed (its containers are gone): "
                         f"record kept in {closed.name}")
    return summary
