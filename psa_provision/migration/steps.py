"""Migration steps as data: which steps move what from which container to which, and their report.

Derived from the phase files alone (which container has what); the journal says which are done.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from psa_provision.errors import InputError, ProvisionError
from psa_provision.migration import handover, phase3_steps
from psa_provision.migration.record import StepState, journal_for, moved_away, read_states
from psa_provision.phases import ContainerSpec, Phase, around
from psa_provision.proxmox import connect
from psa_provision.site import Site

__all__ = ["journal_for"]  # the migration's journal, read by the e2e tests through this module

STORES = ("postgresql", "redis", "rabbitmq", "elasticsearch")
ENV_KEYS = {"postgresql": "POSTGRES_HOST", "redis": "REDIS_HOST", "rabbitmq": "RABBITMQ_HOST",
            "elasticsearch": "ELASTICSEARCH_HOST"}
SUBSTEPS: dict[str, tuple[str, ...]] = {
    "prepare": ("hold app", "grants"),
    **{s: ("snapshot", "quiesce", "move", "verify", "switch", "retire") for s in STORES},
    "app": ("snapshot", "start", "retire"),
    "finish": ("revoke grants",),
}
HANDOVER_SUBSTEPS: dict[str, tuple[str, ...]] = {
    "takeover": ("grants",),
    "service": ("start", "verify", "route", "retire"),
    "gateway": ("start", "verify", "retire"),
    "release": ("revoke grants",),
    "ha": ("run", "check"),  # phase 2 -> 3 (phase3_steps): each step run, then checked
}
SUPPORTED = ("phase1", "phase2", "phase3")
GATEWAY = "api-gateway"
SERVICE_TIMEOUT = 180.0  # seconds a moved service (or a rerouted gateway) gets to answer /health
OFFLINE_POLLS = 3  # polls (2 s apart) in a row with no PM2 instance online: the service is down
GRANT_TAG = handover.GRANT_TAG  # not firewall.TAG: `up` leaves these rules where they are
SNAPSHOT_PREFIX = "psa_migrate_"


class MigrationFailed(ProvisionError):
    """A step's verify found the target different from the source: the step was rolled back."""


@dataclass(frozen=True)
class Step:
    """One migration step: what moves from which container to which."""

    name: str
    source: ContainerSpec | None = None
    target: ContainerSpec | None = None
    kind: str = ""  # SUBSTEPS key when it is not the name (phase 2's per-service steps)
    together: tuple[ContainerSpec, ...] = ()  # phase 3: containers converged side by side with target

    @property
    def substeps(self) -> tuple[str, ...]:
        return HANDOVER_SUBSTEPS[self.kind] if self.kind else SUBSTEPS[self.name]


def plan_steps(old: Phase, new: Phase) -> list[Step]:
    """The steps from `old` to `new`, derived from the phase files (which container has what)."""
    if any(c.cluster for c in new.containers) and not any(c.cluster for c in old.containers):
        return ha_steps(old, new)
    if handover.old_apps(old, new):
        return service_steps(old, new)
    steps = [Step("prepare")]
    for store in STORES:
        src, dst = old.with_component(store), new.with_component(store)
        if src and dst and src[0].vmid != dst[0].vmid:
            steps.append(Step(store, src[0], dst[0]))
    src, dst = old.with_component("app"), new.with_component("app")
    if not src or not dst:
        raise InputError(f"{new.name}: no app container in {old.name} or {new.name}: nothing to migrate")
    steps += [Step("app", src[0], dst[0]), Step("finish")]
    return steps


def service_steps(old: Phase, new: Phase) -> list[Step]:
    """`new` keeps `old`'s stores: one step per service that changes container (ports order, the
    gateway last: its step is where clients switch), between `takeover` and `release` of the grants."""
    steps = [Step("prepare", kind="takeover")]
    for name, svc in sorted(new.services.items(), key=lambda kv: (kv[0] == GATEWAY, kv[1].port)):
        before = old.services.get(name)
        if before is None or before.container == svc.container:
            continue
        steps.append(Step(name, old.container(before.container), new.container(svc.container),
                          kind="gateway" if name == GATEWAY else "service"))
    return [*steps, Step("finish", kind="release")]


def ha_steps(old: Phase, new: Phase) -> list[Step]:
    """Standalone stores into clusters (phase 2 -> 3): one step per phase3_steps action."""
    out = []
    for action in phase3_steps.actions(old, new, {}):
        spec = new.container(action.vmid) if action.vmid else None
        out.append(Step(action.name, target=spec, kind="ha",
                        together=tuple(new.container(v) for v in action.together)))
    return out


def phases_of(site: Site) -> tuple[Phase, Phase]:
    """(the phase before site.phase, site.phase) from the phase files."""
    before, _ = around(site.phase.name, site.inventory.phases_dir)
    if not before:
        raise InputError(f"{site.phase.name} is the first phase: there is nothing to migrate from")
    if site.phase.name not in SUPPORTED:
        raise InputError(f"migrate {site.phase.name} is not supported yet",
                         hint=f"supported: {', '.join(SUPPORTED)}")
    return before[-1], site.phase


def refuse_moved_away(site: Site, command: str) -> None:
    """InputError when `up`/`plan` of site.phase would restart old services on stale data.

    The journal says whether a migration away from the phase has started; the real state says whether
    any of the phase's containers still hold that data. When none exists (destroyed, by the tool or by
    hand), nothing stale can start again and the command goes on. When the API cannot tell, the journal
    alone decides: refusing is the safe side."""
    why = moved_away(site.inventory_path, site.phase.name, site.inventory.phases_dir)
    if why is None:
        return
    try:
        guests = {int(g.get("vmid", -1)) for g in connect(site.inventory).cluster_guests()}
    except ProvisionError:
        guests = None
    if guests is not None and not any(c.vmid in guests for c in site.phase.containers):
        return
    raise InputError(f"refusing `{command} {site.phase.name}`: {why}",
                     hint="`psa-provision migrate PHASE --plan` shows where it stands; migrate's snapshots "
                          "of the old containers are the way back; destroying the new phase starts over")


@dataclass
class Report:
    """What `migrate` prints at the end: per step its state and write-quiesce seconds."""

    rows: list[list[str]]
    total_quiesce_s: float
    seconds: float
    complete: bool
    legend: list[str] = field(default_factory=list)  # "each store step: snapshot -> ..." per kind


def plan_report(site: Site) -> Report:
    """The steps and their journal state; reads the phase files and the journal only."""
    old, new = phases_of(site)
    states = read_states(journal_for(site.inventory_path, new.name).entries())
    return report(plan_steps(old, new), states, 0.0)


def report(steps: list[Step], states: dict[str, StepState], seconds: float) -> Report:
    rows = []
    total = 0.0
    for step in steps:
        st = states.get(step.name, StepState())
        where = (f"{step.source.vmid} -> {step.target.vmid} {step.target.hostname} ({step.target.ip})"
                 if step.source and step.target else
                 f"{', '.join(str(c.vmid) for c in (step.target, *step.together))} side by side"
                 if step.target and step.together else
                 f"{step.target.vmid} {step.target.hostname} ({step.target.ip})" if step.target else "-")
        quiesce = f"{st.quiesce_s:.1f} s" if st.quiesce_s is not None else "-"
        total += st.quiesce_s or 0.0
        rows.append([step.name, where, st.label, quiesce])
    complete = states.get("finish", StepState()).finished
    return Report(rows, round(total, 1), seconds, complete, legend(steps))


def legend(steps: list[Step]) -> list[str]:
    """One line per kind of moving step: its sub-steps in order."""
    kinds: dict[str, tuple[str, ...]] = {}
    for step in steps:
        if step.kind == "ha":
            kinds.setdefault("cluster", step.substeps)
        elif step.source is not None and step.target is not None:
            kind = "store" if step.name in STORES else (step.kind or step.name)
            kinds.setdefault(kind, step.substeps)
    return [f"each {kind} step: {' -> '.join(subs)}" for kind, subs in kinds.items()]
