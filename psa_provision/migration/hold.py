"""`up`/`plan` of a phase over the phase before's live standalone stores: what they hold back for `migrate`.

The decision is phase3_steps' (conversion_held, held_vmids, held_spec); this reads its inputs from the
live site: the phase before (from the phase files), which containers exist and were created before
this phase (Proxmox's configs, preflight's states: `description` names the phase whose `up` created
each), and whether `migrate <phase>` has finished (its journal).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from psa_provision.migration.handover import previous
from psa_provision.migration.phase3_steps import held_spec, held_vmids, standalone_firsts
from psa_provision.migration.record import migration_finished
from psa_provision.phases import ContainerSpec
from psa_provision.preflight import ContainerState
from psa_provision.site import Site, created_by


@dataclass(frozen=True)
class Hold:
    """The containers `up` converges with their base only, and the one line that says why."""

    vmids: frozenset[int] = frozenset()
    note: str = ""

    def holds(self, spec: ContainerSpec) -> bool:
        return spec.vmid in self.vmids

    def spec(self, spec: ContainerSpec) -> ContainerSpec:
        """What `up` converges of `spec`: held_spec while held, else the phase's spec."""
        return held_spec(spec) if self.holds(spec) else spec


def created_before(states: Iterable[ContainerState], phase: str) -> set[int]:
    """The containers that exist and were not created by `up <phase>` (a description naming no phase
    counts as earlier: a store nobody can show to be this phase's is not converted by `up`)."""
    return {s.spec.vmid for s in states if s.config is not None and created_by(s.config) != phase}


def conversion_hold(site: Site, states: Iterable[ContainerState]) -> Hold:
    """The Hold of `up`/`plan` of site.phase from the states preflight read (nothing held for a phase
    without clusters, a first phase, a fresh phase, or once `migrate` has finished)."""
    new = site.phase
    if not any(c.cluster for c in new.containers):
        return Hold()
    old = previous(new, site.inventory.phases_dir)
    if old is None:
        return Hold()
    existing = created_before(states, new.name)
    held = held_vmids(old, new, existing, migration_finished(site.inventory_path, new.name))
    if not held:
        return Hold()
    stores = ", ".join(c.hostname for c in standalone_firsts(old, new, existing))
    return Hold(held, f"{old.name}'s standalone stores ({stores}) run the platform: converting them to "
                      f"{new.name}'s clusters is left to `psa-provision migrate {new.name}`, and `up` "
                      f"configures only the base of the {len(held)} containers it converges")
