"""`up`/`plan phase3` over a live phase 2: the stores' conversion is held for `migrate phase3`.

The decision (phase3_steps.held_vmids) is pure; conversion_hold reads its inputs from preflight's
states (which container an earlier phase created: its description) and the migration's journal; the
`plan` command then plans each held container with its base only (planned from a fresh guest's facts:
the containers show stopped, so no SSH is needed).
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from converged_pve import ConvergedPve

from psa_provision.changes import ApiCall, Change
from psa_provision.commands import plan as plan_cmd
from psa_provision.inventory import load_inventory
from psa_provision.migration.hold import conversion_hold, created_before
from psa_provision.migration.phase3_steps import (
    FINISH,
    actions,
    converged_by_migration,
    held_vmids,
    standalone_firsts,
)
from psa_provision.migration.record import journal_for
from psa_provision.output import Output
from psa_provision.packaged import PHASES_DIR, SANDBOX_INVENTORY
from psa_provision.phases import load_phase
from psa_provision.preflight import ContainerState
from psa_provision.secrets import Secrets, generate
from psa_provision.site import MARKER, Site, created_by

P1, P2, P3 = (load_phase(n, PHASES_DIR) for n in ("phase1", "phase2", "phase3"))
PHASE2_STORES = {100, 110, 210, 220}
# who created phase 2's containers on a site that went phase 1 -> 2: the stores phase 1, the apps phase 2
LIVE_PHASE2 = {c.vmid: "phase1" if c.vmid in PHASE2_STORES else "phase2" for c in P2.containers}


def test_held_while_phase2s_stores_exist_every_container_the_migration_converges() -> None:
    held = held_vmids(P2, P3, PHASE2_STORES, finished=False)
    migrated = {v for a in actions(P2, P3, {}) for v in (a.vmid, *a.together) if v}  # etcd: side by side
    assert held == migrated == {c.vmid for c in converged_by_migration(P3)}
    assert {100, 101, 110, 111, 120, 122, 240} <= held  # the stores, new members, old and new apps, LBs
    assert [c.hostname for c in standalone_firsts(P2, P3, PHASE2_STORES)] == [
        "psa-postgres-1", "psa-redis-1", "psa-rabbitmq-1", "psa-es-1"]


def test_nothing_held_once_migrated_on_a_fresh_phase3_or_without_clusters() -> None:
    assert held_vmids(P2, P3, PHASE2_STORES, finished=True) == frozenset()
    assert held_vmids(P2, P3, set(), finished=False) == frozenset(), "a fresh phase 3 builds its clusters"
    assert held_vmids(P1, P2, {100}, finished=False) == frozenset(), "phase 2 has no clusters"
    # only the apps of phase 2 left (its stores gone): nothing is converted in place, nothing held
    assert held_vmids(P2, P3, {120, 121}, finished=False) == frozenset()


def _states(created: dict[int, str | None]) -> list[ContainerState]:
    out = []
    for spec in P3.containers:
        if spec.vmid not in created:
            out.append(ContainerState(spec, None))
            continue
        phase = created[spec.vmid]
        config = {"tags": MARKER, **({"description": f"{MARKER}: {phase}\n"} if phase else {})}
        out.append(ContainerState(spec, config, running=True))
    return out


def test_created_by_reads_the_phase_the_description_names() -> None:
    assert created_by({"description": "psa-provision: phase2\n"}) == "phase2"
    assert created_by({"description": "notes of my own"}) is None
    assert created_by({}) is None


def test_a_store_phase3_created_itself_is_no_standalone_store() -> None:
    """A first `up phase3` killed half way leaves 100 and 110 behind: its next run builds on, unheld."""
    states = _states({100: "phase3", 110: "phase3", 120: "phase2", 210: "phase1", 220: None})
    assert created_before(states, "phase3") == {120, 210, 220}  # no phase named: not shown to be phase 3's
    assert held_vmids(P2, P3, created_before(_states({100: "phase3", 110: "phase3"}), "phase3"),
                      finished=False) == frozenset()


def make_site(tmp_path: Path) -> Site:
    inv = load_inventory(SANDBOX_INVENTORY).model_copy(update={"path": tmp_path / "site.yml"})
    return Site(inv, tmp_path / "site.yml", P3, Secrets(generate()),
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPerfTestKey perf@test")


def test_conversion_hold_reads_the_site(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    hold = conversion_hold(site, _states(LIVE_PHASE2))
    assert hold.vmids == held_vmids(P2, P3, set(LIVE_PHASE2), finished=False)
    assert "`psa-provision migrate phase3`" in hold.note and "psa-redis-1" in hold.note
    assert hold.spec(P3.container(110)).components == ["base"]
    journal_for(site.inventory_path, "phase3").record("migrate", step=FINISH, state="done")
    assert conversion_hold(site, _states(LIVE_PHASE2)).vmids == frozenset()


def _plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
          created: dict[int, str]) -> tuple[list[Change], str]:
    site = make_site(tmp_path)
    px = ConvergedPve(P3, site.inventory, running=False, created=created)
    monkeypatch.setattr(plan_cmd, "connect", lambda inv: px)
    notes = io.StringIO()
    changes = plan_cmd.plan(site, Output(stderr=notes)).changes
    return [c for c in changes if not isinstance(c, ApiCall)], notes.getvalue()


PROXMOX_SIDE = {"container", "firewall", "ha"}  # planned from Proxmox's state whatever the hold


def _components(changes: list[Change], host: str) -> set[str]:
    """The guest components planned on `host`."""
    return {c.component for c in changes if c.host == host} - PROXMOX_SIDE


def test_plan_over_a_live_phase2_plans_the_held_containers_base_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    guest, notes = _plan(tmp_path, monkeypatch, LIVE_PHASE2)
    held = held_vmids(P2, P3, set(LIVE_PHASE2), finished=False)
    for spec in P3.containers:
        assert spec.vmid in held
        assert _components(guest, spec.hostname) == {"base"}, spec.hostname
    assert notes.count("migrate phase3") == 1, notes


def test_plan_of_a_fresh_or_migrated_phase3_plans_every_component(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    guest, notes = _plan(tmp_path, monkeypatch, {})
    assert "redis" in _components(guest, "psa-redis-1") and "app" in _components(guest, "psa-gateway")
    assert "migrate phase3" not in notes
    journal_for(tmp_path / "site.yml", "phase3").record("migrate", step=FINISH, state="done")
    guest, notes = _plan(tmp_path, monkeypatch, LIVE_PHASE2)
    assert {"postgresql", "patroni"} <= _components(guest, "psa-postgres-1")
    assert "migrate phase3" not in notes
