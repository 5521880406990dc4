"""`plan`: what `up` would change, Proxmox and guests; no writes anywhere."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from psa_provision import facts as facts_mod
from psa_provision import waves
from psa_provision.changes import Plan
from psa_provision.cost import Cost
from psa_provision.facts_ahead import FactsAhead, gather_facts
from psa_provision.migration.hold import conversion_hold
from psa_provision.migration.steps import refuse_moved_away
from psa_provision.output import Output
from psa_provision.phases import around
from psa_provision.planner import container_changes, guest_plan
from psa_provision.preflight import preflight
from psa_provision.proxmox import connect
from psa_provision.reads import firewall_now
from psa_provision.refusals import unbuilt_clusters
from psa_provision.site import Site, connections, load_site

__all__ = ["Cost", "earlier_containers", "load", "plan"]


def load(inventory: Path, phase: str) -> Site:
    """The site to plan, refused when the phase's data has moved on to a later phase."""
    site = load_site(inventory, phase)
    refuse_moved_away(site, "plan")
    return site


def plan(site: Site, out: Output, *, force: bool = False, cost: Cost | None = None) -> Plan:
    """What `up` would do, Proxmox and guests; no writes anywhere (`cost` gets what it cost)."""
    started = time.monotonic()
    full = Plan()
    clusters = unbuilt_clusters(site.phase, "plan")
    if clusters:
        out.note(f"warning: {site.phase.name}'s clusters ({', '.join(clusters)}) are not configured by this "
                 "version: this plan builds each member as a standalone store, and "
                 f"`up {site.phase.name}` refuses to")
    with connections(site) as conns, FactsAhead(site, conns, health=False) as ahead:
        ahead.start_known()
        px = connect(site.inventory)
        checked = preflight(px, site, download=False, note=out.note, seen=ahead.start, force=force)
        states = checked.states
        hold = conversion_hold(site, states)  # what `up` holds back for `migrate`, planned as up does
        if hold.note:
            out.note(hold.note)
        for text in earlier_containers(site, checked.resources):
            out.note(text)
        walls = firewall_now(px, site.phase, [s.spec for s in states if s.config is not None],
                             checked.datacenter_firewall)
        for state in states:
            full.add(container_changes(site, state, force=force))
            wall = walls.get(state.spec.vmid)
            full.add(waves.firewall_changes(px, site.phase, state.spec, state.config, wall))
            facts = facts_mod.fresh()
            if state.running:
                early = ahead.take(state.spec.hostname, usable=True)
                conn = conns[state.spec.hostname]
                facts = early[0] if early else gather_facts(conn, state.spec, site.secrets, site.phase)
            elif state.config is not None:
                out.note(f"{state.spec.hostname} is stopped: planning as for a fresh guest")
            full.add(guest_plan(site, hold.spec(state.spec), facts).changes)
        full.add(waves.ha_changes(px, site.phase))
    if cost is not None:
        cost.measure(started, px)
    return full


def earlier_containers(site: Site, resources: Sequence[Mapping[str, Any]]) -> list[str]:
    """Notes on containers of earlier phases that this phase leaves running (they hold the data), from
    the /cluster/resources rows preflight read."""
    earlier, _ = around(site.phase.name, site.inventory.phases_dir)
    return waves.others_holding_data(site.phase, earlier, resources)
