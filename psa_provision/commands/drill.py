"""`drill PHASE KIND`: lose one member of a phase-3 platform under bounded writes through the VIP,
measure what the clients saw, bring the member back and wait until `health` is clean again."""

from __future__ import annotations

import json
from pathlib import Path

from psa_provision.commands import health as health_cmd
from psa_provision.drill.kinds import KINDS, Kind, parse_kind
from psa_provision.drill.measure import Measured
from psa_provision.drill.run import drill
from psa_provision.errors import InputError
from psa_provision.journal import state_dir
from psa_provision.output import Output
from psa_provision.site import Site, load_site

__all__ = ["KINDS", "Measured", "load", "run", "write_json"]


def load(inventory: Path, phase: str, kind: str) -> tuple[Site, Kind]:
    """The site and the drill; refused (before any call) for a phase without clusters."""
    parsed = parse_kind(kind)
    site = load_site(inventory, phase)
    if not any(c.cluster for c in site.phase.containers):
        raise InputError(f"refusing `drill {phase} {parsed.name}`: {phase} has no clusters; a member lost "
                         "there is the platform lost", hint="drills are for phase3")
    return site, parsed


def run(site: Site, kind: Kind, out: Output) -> Measured:
    """The drill, healed when `health` of the whole phase is clean again."""
    def unhealthy() -> list[str]:
        report = health_cmd.run(site.inventory, site.phase)
        if not report.containers:
            return ["no container of the phase answered"]
        return [f"{line.container} {line.component}: {line.why}" for line in report.failed]

    return drill(site, kind, unhealthy, out.note)


def write_json(site: Site, result: Measured, path: Path | None) -> Path:
    """The figures as JSON (default: <inventory>.journal/drill-<phase>-<kind>.json); the path written."""
    target = path or state_dir(site.inventory_path) / f"drill-{site.phase.name}-{result.kind}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps({"phase": site.phase.name, **result.as_dict()}, indent=2) + "\n",
                      encoding="utf-8")
    return target
