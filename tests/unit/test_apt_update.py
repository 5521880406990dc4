"""One `apt-get update` per cold guest: every component's apt sources, then the update, then installs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from test_planner import converged, make_ctx

from psa_provision import facts, planner
from psa_provision.changes import Change, Command, Noop, Package
from psa_provision.services.common import is_apt_source

TEMPLATE = Path(__file__).parent / "cases" / "facts" / "fresh_debian12_template.json"


def updates(changes: list[Change]) -> list[int]:
    return [i for i, c in enumerate(changes)
            if isinstance(c, Command) and c.summary.startswith("apt-get update")]


def test_a_cold_guest_from_the_template_runs_apt_get_update_once() -> None:
    """The template has curl and ca-certificates: key fetches and lists first, one update, then installs."""
    changes = planner.plan_guest(make_ctx(), facts.parse_guest_facts(TEMPLATE.read_text())).actions
    (update,) = updates(changes)
    sources = [i for i, c in enumerate(changes) if is_apt_source(c)]
    installs = [i for i, c in enumerate(changes) if isinstance(c, Package)]
    assert len(sources) == 4 and len(installs) == 5  # 2 keys + 2 lists; pg, redis, rabbitmq, es, nodejs
    assert max(sources) < update < min(installs)
    assert changes[update].summary == "apt-get update (package lists)"


def test_base_packages_missing_get_their_own_update_before_the_sources_need_them() -> None:
    """curl/ca-certificates missing: update + install them, then sources, then one more update."""
    changes = planner.plan_guest(make_ctx(), facts.GuestFacts()).actions
    first, second = updates(changes)
    base_install = next(i for i, c in enumerate(changes) if isinstance(c, Package) and c.component == "base")
    sources = [i for i, c in enumerate(changes) if is_apt_source(c)]
    assert first < base_install < min(sources) and max(sources) < second


def test_converged_and_installed_guests_run_no_update() -> None:
    ctx = make_ctx()
    assert updates(planner.plan_guest(ctx, converged(ctx)).actions) == []


def test_changed_sources_with_nothing_to_install_refresh_the_lists_once() -> None:
    ctx = make_ctx()
    have = converged(ctx)
    files = {k: v for k, v in have.files.items() if not k.startswith("/etc/apt/sources.list.d/")}
    changes = planner.plan_guest(ctx, dataclasses.replace(have, files=files)).actions
    assert [c.summary for c in changes] == [
        "create /etc/apt/sources.list.d/elastic-8.x.list", "create /etc/apt/sources.list.d/nodesource.list",
        "apt-get update (sources changed)"]
    assert changes[-1].component == "nodejs" and not any(isinstance(c, Noop) for c in changes)
