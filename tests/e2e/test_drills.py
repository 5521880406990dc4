"""`drill phase3 KIND` on the sandbox: the PostgreSQL leader, the Redis primary, the VIP's load balancer
and a whole node lost under writes through the VIP; each drill must lose no acknowledged ticket and no
confirmed RabbitMQ publish (billing must have recorded every ticket event RabbitMQ confirmed) and heal
(its times are reported, not asserted: bench/run --figure drill measures them), and its Redis writer
must have had writes acknowledged with and without WAIT and read the keys back (Redis losses are
reported, not asserted). Phase 3 from phase3_site (the session's migrated phase 3, or a cold `up
phase3`); a drill that did not heal it is followed by `up phase3`.

`redis-primary`, `rabbitmq-node` and `app-container` are marked `beyond_ci`: the default run leaves them
out (CI's time budget, pyproject's addopts); `pytest -m beyond_ci tests/e2e/test_drills.py` runs them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from psa_provision.seams import ENABLE_ENV

from .phase3_site import Phase3, phase3, reset_phase3  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.sandbox, pytest.mark.phase3]


# CI runs the drills the issue names for it (PostgreSQL, load balancer, node); the others on request
KINDS = ["postgresql-primary", "lb-active", "node",
         pytest.param("redis-primary", marks=pytest.mark.beyond_ci),
         pytest.param("rabbitmq-node", marks=pytest.mark.beyond_ci),
         pytest.param("app-container", marks=pytest.mark.beyond_ci)]


@pytest.mark.parametrize("kind", KINDS)
def test_a_drill_loses_no_acknowledged_write_and_heals(reset_phase3: Phase3, kind: str,  # noqa: F811
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    monkeypatch.setenv(ENABLE_ENV, "1")  # `node`: the sandbox's node-down fault (API on loopback)
    out = tmp_path / f"{kind}.json"
    run = reset_phase3.cli("drill", "phase3", kind, "--yes", "--json-file", str(out), timeout=1800)
    assert out.exists(), f"the drill wrote no figures (exit {run.code}):\n{run.output[-4000:]}"
    figures = json.loads(out.read_text())
    sys.stderr.write(f"\n[e2e] drill {kind}: {json.dumps(figures)}\n")
    assert figures["acknowledged"] > 0, run.output[-4000:]
    assert figures["acknowledged_lost"] == 0, figures["lost_keys"]
    rabbitmq = figures["rabbitmq"]
    assert rabbitmq is not None, figures["notes"]
    assert rabbitmq["confirmed"] > 0, rabbitmq
    assert rabbitmq["confirmed_lost"] == 0, rabbitmq["lost_ids"]
    assert figures["healed"], (figures["notes"], run.output[-4000:])
    if kind == "lb-active":  # timed on the other load balancer, reported against the 5 s target
        assert figures["vip_moved_s"] is not None and figures["vip_moved_s"] > 0, figures["notes"]
    reset_phase3.dirty = run.code != 0  # healed and verified by the drill: the next one starts from here
    redis = figures["redis_lost"]
    assert set(redis) == {"with_wait", "without_wait"}, figures["notes"]
    assert all(redis[k]["acknowledged"] > 0 for k in redis), redis
    assert run.code == 0, run.output[-4000:]
