"""`migrate PHASE`: move the data (phase 1) or the services (phase 2) of the phase before into PHASE's
containers, or turn its standalone stores into clusters (phase 3), one step at a time, resumable;
`--plan` shows the steps and their state."""

from __future__ import annotations

from pathlib import Path

from psa_provision.migration.run import migrate
from psa_provision.migration.steps import Report, plan_report
from psa_provision.refusals import refuse_clusters
from psa_provision.site import Site, load_site

__all__ = ["Report", "load", "migrate", "plan_report"]


def load(inventory: Path, phase: str, *, changing: bool) -> Site:
    """The site to migrate into; when `changing`, refused for a phase with clusters that no migration
    builds (refusals.CLUSTERED)."""
    site = load_site(inventory, phase)
    if changing:
        refuse_clusters(site.phase, "migrate")
    return site
