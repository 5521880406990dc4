"""verify's expectations (services/*/expected.py) are the seed's settings, checked against a recorded
guest that `up phase0` converged (tests/unit/cases/facts/converged_phase0_sandbox.json, 64 GiB) and
against the seed's own numbers, never against what the renderer writes."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

from psa_provision import facts
from psa_provision.services.elasticsearch import expected as es_expected
from psa_provision.services.postgresql import expected as pg_expected
from psa_provision.services.redis import expected as redis_expected
from psa_provision.suites.checks import pg_bytes, size_bytes

RECORDED = Path(__file__).parent / "cases" / "facts" / "converged_phase0_sandbox.json"
# pg_settings' units of the recorded values (pg_settings.unit): 8kB pages, or kB
PG_UNIT = {"shared_buffers": 8192, "effective_cache_size": 8192, "maintenance_work_mem": 1024,
           "work_mem": 1024}
NO_TUNING = SimpleNamespace(max_connections=None, shared_buffers=None, effective_cache_size=None,
                            maintenance_work_mem=None, work_mem=None)


def _recorded() -> facts.GuestFacts:
    return facts.parse_guest_facts(RECORDED.read_text())


def test_the_recorded_64_gib_guest_runs_postgresql_with_the_seeds_settings() -> None:
    live = (_recorded().postgres or facts.PostgresFacts()).settings
    want = pg_expected.expected(NO_TUNING, 65536, "127.0.0.1")
    found = {name: int(live[name]) * PG_UNIT[name] if name in PG_UNIT else live[name] for name in want}
    assert found == {name: pg_bytes(value) for name, value in want.items()}
    assert want["shared_buffers"] == "4GB" and want["work_mem"] == "20MB"  # the seed's text, at 64 GB


def test_the_recorded_guest_has_the_seeds_heap_and_maxmemory() -> None:
    files = _recorded().files
    options = files["/etc/elasticsearch/jvm.options.d/heap.options"].content or ""
    heap = re.findall(r"^-Xmx(\S+)$", options, re.M)
    assert [size_bytes(h) for h in heap] == [size_bytes(es_expected.heap(None, 65536))] == [4 * 1024**3]
    maxmemory = re.findall(r"^maxmemory (\S+)$", files["/etc/redis/redis.conf"].content or "", re.M)
    assert [size_bytes(m) for m in maxmemory] == [size_bytes(redis_expected.maxmemory(None, 65536))]


def test_seed_values_scale_with_the_container_and_tuning_wins() -> None:
    tuned = SimpleNamespace(**{**vars(NO_TUNING), "work_mem": "64MB"})
    half = pg_expected.expected(tuned, 32768, "10.0.30.10")
    assert (half["shared_buffers"], half["effective_cache_size"], half["maintenance_work_mem"]) == \
        ("2GB", "6GB", "512MB")
    assert half["work_mem"] == "64MB" and half["listen_addresses"] == "10.0.30.10,localhost"
    assert es_expected.expected(None, 16384) == {"cluster_name": "psa-platform", "heap": "1g"}
    assert es_expected.heap(None, 1024 * 1024) == "31g"  # Elastic's compressed-oops cap
    assert redis_expected.maxmemory(None, 4096) == "128mb" and redis_expected.maxmemory("3gb", 4096) == "3gb"
