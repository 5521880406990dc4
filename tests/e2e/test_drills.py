"""`drill phase3 KIND` on the sandbox: the PostgreSQL leader, the VIP's load balancer and a whole node
lost under writes through the VIP; each drill must lose no acknowledged write and heal (its times are
reported, not asserted: bench/run --figure drill measures them). Needs phase 3 live (after
test_migrate_phase3.py, or `up phase3` on a fresh sandbox)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from psa_provision.seams import ENABLE_ENV

from .test_phase2 import Phase1, phase1_site  # noqa: F401 - the session's site

pytestmark = [pytest.mark.sandbox, pytest.mark.phase3]


@pytest.mark.parametrize("kind", ["postgresql-primary", "lb-active", "node"])
def test_a_drill_loses_no_acknowledged_write_and_heals(phase1_site: Phase1, kind: str,  # noqa: F811
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    monkeypatch.setenv(ENABLE_ENV, "1")  # `node`: the sandbox's node-down fault (API on loopback)
    out = tmp_path / f"{kind}.json"
    run = phase1_site.cli("drill", "phase3", kind, "--yes", "--json-file", str(out), timeout=1800)
    figures = json.loads(out.read_text())
    sys.stderr.write(f"\n[e2e] drill {kind}: {json.dumps(figures)}\n")
    assert figures["acknowledged"] > 0, run.output[-4000:]
    assert figures["acknowledged_lost"] == 0, figures["lost_keys"]
    assert figures["healed"], run.output[-4000:]
    assert run.code == 0, run.output[-4000:]
