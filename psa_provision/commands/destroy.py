"""`destroy`: stop and delete the phase's containers that psa-provision created; leave the others alone."""

from __future__ import annotations

from pathlib import Path

from psa_provision.apply import JournaledTask, Summary
from psa_provision.journal import Journal, PhaseLock
from psa_provision.migration import record as migration_record
from psa_provision.output import Output
from psa_provision.preflight import ContainerState
from psa_provision.proxmox import ProxmoxClient, connect
from psa_provision.seams import kill_point
from psa_provision.site import Site, forget_host_key, is_ours, load_site
from psa_provision.waits import finish_open_tasks, wait_stopped


def load(inventory: Path, phase: str) -> Site:
    """The site whose containers to destroy (no secrets needed)."""
    return load_site(inventory, phase, need_secrets=False)


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
    """Stop and delete the given containers (already filtered by destroy_targets).

    The delete purges (PVE refuses to destroy an HA resource without purge=1): the container leaves the
    HA resources and rules, backup and replication jobs with it, as the GUI's "Purge from job
    configurations". An HA resource is stopped through the HA manager, which does it a round later,
    so its stop is waited for before the delete (PVE refuses to destroy a running container). Every
    stop is asked for before any is waited for, so the HA manager stops them all in the same rounds
    (one after another, a phase of 33 HA resources waited a round each: minutes)."""
    summary = Summary()
    journal = Journal.for_phase(site.inventory_path, site.phase.name)
    with PhaseLock.for_phase(site.inventory_path, site.phase.name).held():
        journal.record("run-start", phase=site.phase.name, command="destroy")
        finish_open_tasks(px, journal, targets, out.note)  # e.g. a delete a killed destroy left running
        present: list[tuple[ContainerState, bool]] = []  # (container, an HA resource)
        for state in targets:
            spec = state.spec
            if px.find_vmid(spec.vmid) is None:
                out.note(f"container {spec.vmid} is already gone")
                forget_host_key(site.inventory, spec)
                continue
            status = px.status(spec.node, spec.vmid)
            ha_managed = bool((status.get("ha") or {}).get("managed"))
            present.append((state, ha_managed))
            if status.get("status") == "running":
                out.note(f"stopping container {spec.vmid}" + (" (an HA resource: through the HA manager)"
                                                             if ha_managed else ""))
                step = f"container: stop container {spec.vmid}"
                kill_point(step)
                px.stop(spec.node, spec.vmid, track=JournaledTask(journal, step))
        for state, ha_managed in present:
            if ha_managed:
                wait_stopped(px, state.spec)
        for state, ha_managed in present:
            spec = state.spec
            out.note(f"deleting container {spec.vmid}" + (" and its HA resource" if ha_managed else ""))
            step = f"container: delete container {spec.vmid}"
            kill_point(step)
            px.delete(spec.node, spec.vmid, track=JournaledTask(journal, step))
            forget_host_key(site.inventory, spec)
            journal.record("destroy", vmid=spec.vmid, node=spec.node, hostname=spec.hostname)
            summary.changed += 1
        guests = {int(g.get("vmid", -1)) for g in px.cluster_guests()}
        if not any(c.vmid in guests for c in site.phase.containers):
            closed = migration_record.close_migration_record(site.inventory_path, site.phase.name)
            if closed is not None:
                out.note(f"the migration into {site.phase.name} is closed (its containers are gone): "
                         f"record kept in {closed.name}")
    return summary
