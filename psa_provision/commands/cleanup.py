"""`cleanup <phase>-leftovers`: after a complete migration, remove the old services' packages and data.

`migrate` only stops and disables a moved service on the old container, so that its data stays there
until someone decides otherwise. This is that decision: destructive, confirmed, and refused unless the
migration's journal says it is complete. The Proxmox snapshots `migrate` took are removed too.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from psa_provision.apply import JournaledTask
from psa_provision.errors import InputError, ProvisionError
from psa_provision.inventory import load_inventory
from psa_provision.journal import PhaseLock
from psa_provision.migration.record import StepState, journal_for, read_states
from psa_provision.migration.steps import SNAPSHOT_PREFIX, phases_of, plan_steps
from psa_provision.phases import ContainerSpec, around
from psa_provision.proxmox import connect
from psa_provision.site import Site, load_site, ssh_connection

# component -> (packages to purge, data/config directories to remove) on the old container
LEFTOVERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "postgresql": (("postgresql-15", "postgresql-client-15", "postgresql-common", "postgresql-client-common"),
                   ("/var/lib/postgresql", "/etc/postgresql")),
    "redis": (("redis-server", "redis-tools"), ("/var/lib/redis", "/etc/redis")),
    "rabbitmq": (("rabbitmq-server",), ("/var/lib/rabbitmq", "/etc/rabbitmq")),
    "elasticsearch": (("elasticsearch",), ("/var/lib/elasticsearch", "/etc/elasticsearch")),
}


@dataclass
class Leftovers:
    """What cleanup would remove (or removed): per container the components, and the snapshots."""

    components: dict[int, list[str]] = field(default_factory=dict)
    containers: dict[int, ContainerSpec] = field(default_factory=dict)
    snapshots: dict[int, list[str]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not any(self.components.values()) and not any(self.snapshots.values())

    def lines(self) -> list[str]:
        out = []
        for vmid, names in sorted(self.components.items()):
            spec = self.containers[vmid]
            for name in names:
                packages, dirs = LEFTOVERS[name]
                out.append(f"container {vmid} ({spec.hostname}): purge {' '.join(packages)}; "
                           f"remove {' '.join(dirs)}")
        for vmid, snaps in sorted(self.snapshots.items()):
            out += [f"container {vmid}: delete snapshot {s}" for s in snaps]
        return out


def site_for(inventory_path: Path, what: str) -> Site:
    """The site of the phase after `<phase>-leftovers`' phase (whose migration left them)."""
    old = phase_of(what)
    _, after = around(old, load_inventory(inventory_path).phases_dir)
    if not after:
        raise InputError(f"cleanup {what}: no phase follows {old}")
    return load_site(inventory_path, after[0].name)


def phase_of(what: str) -> str:
    """`phase0-leftovers` -> `phase0`; anything else is refused."""
    if not what.endswith("-leftovers") or not what.removesuffix("-leftovers"):
        raise InputError(f"cleanup {what}: unknown target",
                         hint="try `psa-provision cleanup phase0-leftovers`")
    return what.removesuffix("-leftovers")


def find(site: Site) -> Leftovers:
    """The leftovers of the migration to site.phase; refused unless that migration is complete."""
    old, new = phases_of(site)
    states = read_states(journal_for(site.inventory_path, new.name).entries())
    if not states.get("finish", StepState()).finished:
        raise ProvisionError(f"the migration {old.name} -> {new.name} is not complete: nothing may be "
                             f"removed from {old.name}'s containers yet",
                             hint=f"run `psa-provision migrate {new.name}` until it says complete")
    found = Leftovers()
    cleaned = set(states.get("cleanup", StepState()).done)
    for step in plan_steps(old, new):
        if step.name in LEFTOVERS and step.source is not None and step.name not in cleaned:
            found.components.setdefault(step.source.vmid, []).append(step.name)
            found.containers[step.source.vmid] = step.source
    px = connect(site.inventory)
    for spec in old.containers:
        if px.find_vmid(spec.vmid) is None:
            found.components.pop(spec.vmid, None)
            continue
        found.snapshots[spec.vmid] = sorted(s for s in px.snapshots(spec.node, spec.vmid)
                                            if s.startswith(SNAPSHOT_PREFIX))
        found.containers[spec.vmid] = spec
    return found


def remove(site: Site, found: Leftovers) -> int:
    """Purge the packages, remove the directories, delete the snapshots; the number of things removed."""
    _, new = phases_of(site)
    journal = journal_for(site.inventory_path, new.name)
    px = connect(site.inventory)
    done = 0
    with PhaseLock.for_phase(site.inventory_path, new.name).held():
        for vmid, names in sorted(found.components.items()):
            conn = ssh_connection(site.inventory, found.containers[vmid])
            try:
                for name in names:
                    conn.run(_purge_script(name), timeout=900)
                    journal.record("migrate", step="cleanup", state=name)
                    done += 1
            finally:
                conn.close()
        for vmid, snaps in sorted(found.snapshots.items()):
            spec = found.containers[vmid]
            for snap in snaps:
                px.delete_snapshot(spec.node, spec.vmid, snap,
                                   track=JournaledTask(journal, f"cleanup: delete snapshot {snap}"))
                done += 1
    return done


def _purge_script(component: str) -> str:
    """Purge the component's installed packages and remove its directories (a rerun does nothing)."""
    packages, dirs = LEFTOVERS[component]
    names = " ".join(shlex.quote(p) for p in packages)
    return ("set -euo pipefail\n"
            f"installed=$(for p in {names}; do dpkg -s \"$p\" >/dev/null 2>&1 && echo \"$p\"; done || true)\n"
            "if [ -n \"$installed\" ]; then\n"
            "  DEBIAN_FRONTEND=noninteractive apt-get purge -y -q $installed >/dev/null\nfi\n"
            f"rm -rf {' '.join(shlex.quote(d) for d in dirs)}\n")
