"""The plan of one container: its Proxmox changes (marked ours at create) and its guest plan, every
component in install order (pure: facts in, changes out)."""

from __future__ import annotations

import dataclasses

from .changes import ApiCall, Change, Package, Plan
from .facts import GuestFacts
from .phases import ContainerSpec
from .preflight import ContainerState
from .services.common import apt_update, is_apt_source
from .services.container import component as container_component
from .services.context import HostContext, build_context
from .services.registry import PLANNERS
from .site import MARKER, Site

__all__ = ["container_changes", "guest_plan", "marked", "plan_guest"]



def plan_guest(ctx: HostContext, facts: GuestFacts) -> Plan:
    """All changes for one guest, base first, scripts last; components the container lacks are skipped.

    apt's sources (keys, lists) of every component are written right after base, so one
    `apt-get update` serves every install (see one_apt_update).
    """
    wanted = set(ctx.container.components)
    per_component = [component_plan(ctx, facts) for name, component_plan in PLANNERS if name in wanted]
    plan = Plan()
    plan.add(one_apt_update(ctx, per_component))
    return plan


def one_apt_update(ctx: HostContext, per_component: list[list[Change]]) -> list[Change]:
    """Hoist the apt source changes to the end of the first (base) component's changes and put an
    `apt-get update` only where the package lists are stale: before the first Package, and again
    only if sources changed since (base installing curl/ca-certificates a key fetch needs)."""
    if not per_component:
        return []
    sources = [c for changes in per_component[1:] for c in changes if is_apt_source(c)]
    ordered = [*per_component[0], *sources,
               *(c for changes in per_component[1:] for c in changes if not is_apt_source(c))]
    out: list[Change] = []
    fresh = False
    stale_after: int | None = None  # index in `out` after the last source change no update followed
    for change in ordered:
        if isinstance(change, Package) and not fresh:
            out.append(apt_update(ctx, change.component, "package lists"))
            fresh, stale_after = True, None
        out.append(change)
        if is_apt_source(change):
            fresh, stale_after = False, len(out)
    if stale_after is not None:  # sources changed, nothing to install: refresh the lists anyway
        out.insert(stale_after, apt_update(ctx, out[stale_after - 1].component, "sources changed"))
    return out


def container_changes(site: Site, state: ContainerState, *, force: bool) -> list[Change]:
    """The container component's ApiCalls, with our marker added at create."""
    inv = site.inventory
    changes = container_component.plan(
        state.spec, state.config, node=state.spec.node, template_volid=inv.template_volid,
        ssh_public_key=site.ssh_public_key, nameserver=inv.network.nameserver,
        searchdomain=inv.network.searchdomain, force=force, pending=state.pending)
    return [marked(c, site.phase.name) for c in changes]


def marked(change: Change, phase: str) -> Change:
    """A create carries our tag and marker, so `destroy` and later runs know the container is ours."""
    if isinstance(change, ApiCall) and change.effect == "create":
        params = {**change.params, "tags": MARKER, "description": f"{MARKER}: {phase}"}
        return dataclasses.replace(change, params=params)
    return change


def guest_plan(site: Site, spec: ContainerSpec, facts: GuestFacts) -> Plan:
    """The guest's changes from its facts (site secrets and key included)."""
    ctx = build_context(site.inventory, site.phase, spec, site.secrets,
                                ssh_public_key=site.ssh_public_key)
    return plan_guest(ctx, facts)
