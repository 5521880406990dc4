"""Preflight of `plan` and `up`: nodes, privileges, vmids, storage, bridges, template, firewall.

Nothing is written before every check has passed; returns each container's state as Proxmox has it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from psa_provision import firewall, privileges
from psa_provision.access import Access, datacenter_firewall, require
from psa_provision.errors import ProxmoxError
from psa_provision.inventory import Inventory
from psa_provision.phases import ContainerSpec, Phase
from psa_provision.proxmox import ProxmoxClient
from psa_provision.reads import running_in, side_by_side
from psa_provision.site import Site, is_ours


@dataclass
class Preflight:
    """What preflight found: each container's state, the datacenter's firewall options when the
    phase has a firewall (read once: reads.firewall_now and the firewall plans use them too), and the
    /cluster/resources rows it read (nodes, guests, storages), for what else asks which guests exist."""

    states: list[ContainerState]
    datacenter_firewall: dict[str, Any] | None = None
    resources: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ContainerState:
    """One phase container as Proxmox has it (config None: not there yet)."""

    spec: ContainerSpec
    config: dict[str, Any] | None
    running: bool = False
    pending: frozenset[str] = frozenset()  # keys whose new value waits for the next start

    def now(self, running: bool) -> ContainerState:
        """This state with whether the container runs (a stopped one has nothing pending)."""
        return replace(self, running=running, pending=self.pending if running else frozenset())


def preflight(px: ProxmoxClient, site: Site, *, download: bool, note: Callable[[str], None],
              seen: Callable[[ContainerState], None] | None = None,
              force: bool = False) -> Preflight:
    """Node online, privileges, vmids free or ours, storage/bridge/template present, capacity, the
    datacenter firewall; returns the states (and the datacenter's firewall options it read). Nothing
    is written before every check has passed.

    `seen` gets each container's state as soon as it is known (FactsAhead starts its facts then)."""
    inv, phase = site.inventory, site.phase
    access = Access(px)
    command = "up" if download else "plan"
    resources = px.cluster_resources()  # nodes, guests and storages: one call, not one per container
    warnings: list[str] = []
    nodes = {c.node for c in phase.containers}
    for node in sorted(nodes):
        entry = find_resource(resources, "node", node=node)
        if entry is None or entry.get("status") != "online":
            raise ProxmoxError(f"node {node} is not online in the cluster at {px.settings.url}",
                               hint="check the node name in the phase file / inventory")
        warnings += _capacity(entry, phase, node)
    require(access, required_privileges(site, command, creating=()), note)
    for node in sorted(nodes):
        _check_node_resources(px, site, node, resources)
    for text in warnings:
        note(f"warning: {text}")
    states = container_states(px, phase.containers, resources, moved_ok=phase.high_availability)
    if seen is not None:
        for state in states:
            seen(state)
    creating = [s.spec for s in states if s.config is None]
    require(access, required_privileges(site, command, creating=creating), note)
    if force:
        for vmid in access.own_path_grants([s.spec.vmid for s in states if s.config is not None]):
            note(f"warning: privileges on container {vmid} come from an ACL on /vms/{vmid}; recreating it "
                 "deletes that ACL (pve-access-control remove_vm_access): grant on /vms or a pool instead")
    cluster_firewall = None
    if firewall.enabled(phase):
        cluster_firewall = px.datacenter_firewall_options()
        datacenter_firewall(px, access, cluster_firewall)
    for node in sorted(nodes):
        _ensure_template(px, inv, node, download=download, note=note, access=access)
    return Preflight(states, cluster_firewall, resources)


def privilege_target(site: Site, specs: list[ContainerSpec] | None = None) -> privileges.Target:
    """What the phase's containers (or `specs`) touch, for privileges.required."""
    chosen = site.phase.containers if specs is None else specs
    return privileges.Target(
        vmids=tuple(c.vmid for c in chosen), storages=tuple(sorted({c.rootfs_storage for c in chosen})),
        templates=site.inventory.storage.templates if chosen else "",
        backups=site.inventory.storage.backups if chosen else "",
        bridges=tuple(sorted({c.bridge for c in chosen})), nodes=tuple(sorted({c.node for c in chosen})),
        firewall=firewall.enabled(site.phase), high_availability=site.phase.high_availability)


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


def find_resource(resources: list[dict[str, Any]], *types: str, **match: object) -> dict[str, Any] | None:
    """The first /cluster/resources entry of one of `types` whose fields equal `match`."""
    for entry in resources:
        if entry.get("type") in types and all(str(entry.get(k)) == str(v) for k, v in match.items()):
            return entry
    return None


def _check_node_resources(px: ProxmoxClient, site: Site, node: str, resources: list[dict[str, Any]]) -> None:
    specs = [c for c in site.phase.containers if c.node == node]
    for storage in sorted({c.rootfs_storage for c in specs} | {site.inventory.storage.templates}):
        if find_resource(resources, "storage", node=node, storage=storage) is None:
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


def container_states(px: ProxmoxClient, specs: Sequence[ContainerSpec],
                     resources: list[dict[str, Any]] | None = None, *, moved_ok: bool = False
                     ) -> list[ContainerState]:
    """Each container as Proxmox has it: one /cluster/resources (read now unless given) says which exist
    and where; whether they run comes from their nodes' own container lists, and their configs are read
    beside those lists (reads.py). The first refusal in the specs' order is raised. `moved_ok`: see
    container_state."""
    guests = px.cluster_resources() if resources is None else resources
    wanted = {spec.vmid for spec in specs}
    nodes = sorted({str(g.get("node")) for g in guests
                    if g.get("type") == "lxc" and int(g.get("vmid", -1)) in wanted})

    def read(job: str | ContainerSpec) -> Any:
        if isinstance(job, str):
            return px.containers(job)
        return container_state(px, job, guests, moved_ok=moved_ok)

    jobs: list[str | ContainerSpec] = [*nodes, *specs]
    answers = side_by_side(read, jobs)
    running = running_in(answers[:len(nodes)])
    return [state.now(state.spec.vmid in running) for state in answers[len(nodes):]]


def container_state(px: ProxmoxClient, spec: ContainerSpec, resources: list[dict[str, Any]] | None = None,
                    *, moved_ok: bool = False) -> ContainerState:
    """The container as Proxmox has it, from /cluster/resources (read now unless given) + its config;
    not whether it runs (`running` False, `pending` every pending key): container_states reads that
    from its node. `moved_ok`: a container the HA manager moved to another node is used where it is
    (its spec's node becomes that node)."""
    guests = px.cluster_resources() if resources is None else resources
    guest = find_resource(guests, "lxc", "qemu", vmid=spec.vmid)
    if guest is None:
        return ContainerState(spec, None)
    where = str(guest.get("node"))
    if where != spec.node and moved_ok and guest.get("type") == "lxc":
        spec = spec.model_copy(update={"node": where})
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
    return ContainerState(spec, config, pending=frozenset(pending))


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
