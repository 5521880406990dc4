"""HAProxy's phase-3 verify check: every app service's backend has each container that runs the service,
and each of them is UP by HAProxy's own /health checks (`show stat` on the stats socket)."""

from __future__ import annotations

from typing import Any

import pytest

from psa_provision.services.haproxy import SHOW_STAT, stats
from psa_provision.suites.checks import output


def app_backends(ctx: dict[str, Any]) -> dict[str, list[str]]:
    """service -> hostnames of the containers that run it (the phase file, through the verify context)."""
    return {name: sorted(h for h, c in ctx["containers"].items() if name in c["services"])
            for name in ctx["services"]}


@pytest.mark.component("haproxy")
def test_haproxy_every_backend_up(host: Any, ctx: dict[str, Any]) -> None:
    rows = stats.parse(output(host, SHOW_STAT, "HAProxy `show stat`"))
    found = stats.problems(rows, app_backends(ctx))
    assert not found, "; ".join(found)
