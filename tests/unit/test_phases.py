"""Phase files: the repo's phases validate; every bad case is rejected at the right file:line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from psa_provision import phases
from psa_provision.errors import InputError
from psa_provision.packaged import PHASES_DIR

CASES = Path(__file__).parent / "cases" / "phases"
CASE_DIRS = sorted(p for p in CASES.iterdir() if p.is_dir())


def test_repo_phases_have_no_problems() -> None:
    assert [str(p) for p in phases.check_all(PHASES_DIR)] == []


def test_phase0_is_the_seed_container() -> None:
    p = phases.load_phase("phase0", PHASES_DIR)
    (c,) = p.containers
    assert (c.vmid, c.hostname, c.cores, c.memory_mb, c.swap_mb) == (200, "psa-all-in-one", 16, 65536, 8192)
    assert (c.rootfs_storage, c.rootfs_gb, c.bridge, c.ip_cidr, c.gateway) == (
        "local-lvm", 1000, "vmbr20", "10.0.20.100/24", "10.0.20.1")
    assert c.unprivileged and c.features == {"nesting": 1}
    assert {n: s.port for n, s in p.services.items()} == phases.APP_SERVICES
    assert {n: s.instances for n, s in p.services.items()} == {
        n: 4 if n == "tickets" else 2 for n in phases.APP_SERVICES}


def test_phase1_postgresql_where_the_seed_says() -> None:
    p = phases.load_phase("phase1", PHASES_DIR)
    (pg,) = p.with_component("postgresql")
    assert (pg.ip, pg.bridge, pg.cores, pg.memory_mb) == ("10.0.30.10", "vmbr30", 8, 32768)


def test_phase3_clusters_spread_over_three_nodes() -> None:
    p = phases.load_phase("phase3", PHASES_DIR)
    clusters: dict[str, set[str]] = {}
    for c in p.containers:
        if c.cluster:
            clusters.setdefault(c.cluster, set()).add(c.node)
    assert clusters == {**{k: {"pve1", "pve2", "pve3"} for k in
                           ("postgresql", "etcd", "redis-sentinel", "rabbitmq", "elasticsearch")},
                        "load-balancer": {"pve1", "pve3"}}
    assert p.high_availability


def test_phase3_every_service_on_two_nodes_behind_one_vip() -> None:
    p = phases.load_phase("phase3", PHASES_DIR)
    for name, svc in p.services.items():
        assert len({p.container(v).node for v in svc.containers}) == 2, name
        assert all(name in p.services_on(v) for v in svc.containers), name
    lbs = p.with_component("haproxy")
    assert len(lbs) == 2 and {c.vip for c in lbs} == {"10.0.20.250/24"}
    assert all("keepalived" in c.components for c in lbs)


def test_unknown_phase_is_input_error() -> None:
    with pytest.raises(InputError, match="unknown phase 'phase9'"):
        phases.load_phase("phase9", PHASES_DIR)
    with pytest.raises(InputError, match="unknown phase 'prod'"):
        phases.load_phase("prod", PHASES_DIR)


def _match(found: list[phases.Problem], want: dict[str, Any], case: Path) -> None:
    hits = [p for p in found if p.file == str(case / want["file"]) and p.line == want["line"]
            and want["text"] in p.message and ("other" not in want or str(case / want["other"]) in p.message)]
    assert hits, f"no problem like {want} in:\n" + "\n".join(map(str, found))


@pytest.mark.parametrize("case", CASE_DIRS, ids=[p.name for p in CASE_DIRS])
def test_bad_phase_cases(case: Path) -> None:
    expect = yaml.safe_load((case / "expect.yml").read_text())
    found = phases.check_all(case)
    errors = [p for p in found if p.severity == "error"]
    warnings = [p for p in found if p.severity == "warning"]
    assert len(errors) == len(expect.get("errors") or []), "\n".join(map(str, found))
    for want in expect.get("errors") or []:
        _match(errors, want, case)
    for want in expect.get("warnings") or []:
        _match(warnings, want, case)


def test_load_phase_raises_with_every_error() -> None:
    with pytest.raises(InputError) as info:
        phases.load_phase("phase0", CASES / "dup_ip")
    assert "phase0.yml:14: error: duplicate vmid 200" in str(info.value)
    assert "phase0.yml:22: error: duplicate ip 10.0.20.100" in str(info.value)


def test_a_phase_file_edited_in_the_same_process_is_read_again(tmp_path: Path) -> None:
    """Parsed phase files are shared within a process, keyed by content: an edit of the same size
    (and possibly the same mtime tick) is never served from the old parse."""
    text = (PHASES_DIR / "phase0.yml").read_text()
    path = tmp_path / "phase0.yml"
    path.write_text(text)
    first = phases.load_phase("phase0", tmp_path)
    assert phases.load_phase("phase0", tmp_path) is first  # shared
    path.write_text(text.replace("cores: 16", "cores: 12", 1))
    assert "cores: 16" in text and first.containers[0].cores == 16
    assert phases.load_phase("phase0", tmp_path).containers[0].cores == 12
