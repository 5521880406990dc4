"""Phase 1 -> 2's pure parts: the handover (which stores phase 2 takes over, which old app keeps access),
the per-service steps from the phase files, where each service listens and is probed, and each service
container's .env."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from psa_provision import waves
from psa_provision.commands import verify
from psa_provision.inventory import load_inventory
from psa_provision.journal import state_dir
from psa_provision.migration import handover
from psa_provision.migration import record as migration_record
from psa_provision.migration import steps as migrate
from psa_provision.migration.record import read_states
from psa_provision.migration.steps import plan_steps
from psa_provision.migration.steps import report as report_of
from psa_provision.packaged import PHASES_DIR, SANDBOX_INVENTORY
from psa_provision.phases import ContainerSpec, Phase, load_phase
from psa_provision.secrets import Secrets, generate
from psa_provision.services.app import component as app
from psa_provision.services.app.health import health_script
from psa_provision.services.context import build_context

PHASES = PHASES_DIR
P0, P1, P2 = (load_phase(n, PHASES) for n in ("phase0", "phase1", "phase2"))


def test_phase2_takes_over_phase1s_stores_and_drops_its_app_container() -> None:
    shared = {(component, spec.vmid) for component, spec in handover.shared_stores(P1, P2)}
    assert shared == {("postgresql", 100), ("redis", 110), ("rabbitmq", 210), ("elasticsearch", 220)}
    assert [c.vmid for c in handover.old_apps(P1, P2)] == [230]


def test_phase1_takes_over_no_store_so_phase0_keeps_its_own() -> None:
    assert handover.shared_stores(P0, P1) == []
    assert handover.old_apps(P0, P1) == []
    assert handover.previous(P2, PHASES) == P1 and handover.previous(P0, PHASES) is None


def test_grant_tag_is_migrates() -> None:
    assert handover.GRANT_TAG == migrate.GRANT_TAG


def test_phase2_steps_one_per_service_gateway_last() -> None:
    steps = plan_steps(P1, P2)
    assert [s.name for s in steps] == ["prepare", "auth", "crm", "tickets", "billing", "projects", "assets",
                                       "reports", "api-gateway", "finish"]
    assert [s.kind for s in steps] == ["takeover", *["service"] * 7, "gateway", "release"]
    for step in steps[1:-1]:
        assert step.source is not None and step.source.vmid == 230
        assert step.target is not None and step.target.vmid == P2.services[step.name].container
        assert P2.services_on(step.target.vmid).keys() == {step.name}
    assert steps[1].substeps == ("start", "verify", "route", "retire")
    assert steps[-2].substeps == ("start", "verify", "retire")
    assert migrate.legend(steps) == ["each service step: start -> verify -> route -> retire",
                                     "each gateway step: start -> verify -> retire"]


def test_phase1_steps_unchanged_by_the_handover() -> None:
    assert [s.kind for s in plan_steps(P0, P1)] == [""] * 7


def _rec(step: str, state: str, **fields: object) -> dict[str, object]:
    return {"event": "migrate", "step": step, "state": state, **fields}


def test_phase2_report_resumes_inside_a_service_and_counts_no_quiesce() -> None:
    entries = [_rec("prepare", "grants"), _rec("prepare", "done"),
               _rec("auth", "start"), _rec("auth", "verify"), _rec("auth", "route"), _rec("auth", "retire"),
               _rec("auth", "done", quiesce_s=0.0), _rec("crm", "start"), _rec("crm", "verify")]
    report = report_of(plan_steps(P1, P2), read_states(entries), 0.0)
    rows = {r[0]: r for r in report.rows}
    assert rows["auth"][1:] == ["230 -> 121 psa-auth (10.0.20.121)", "done", "0.0 s"]
    assert rows["crm"][2] == "interrupted after verify"
    assert rows["api-gateway"][2] == "to do" and not report.complete and report.total_quiesce_s == 0.0


def test_services_listen_on_their_private_address_only_when_split() -> None:
    assert app.service_bind(P0, P0.containers[0]) == "127.0.0.1"
    assert app.service_bind(P1, P1.container(230)) == "127.0.0.1"
    for name, svc in P2.services.items():
        spec = P2.container(svc.container)
        assert app.service_bind(P2, spec) == spec.ip
        assert app.probe_address(P2, spec, name) == ("127.0.0.1" if name == "api-gateway" else spec.ip)


def test_health_probes_go_where_each_service_listens() -> None:
    assert "127.0.0.1:3000" in health_script(P1, P1.container(230))
    assert "127.0.0.1:3010" in health_script(P1, P1.container(230))
    assert "10.0.20.140:3030" in health_script(P2, P2.container(140))
    assert "127.0.0.1:3000" in health_script(P2, P2.container(120))
    assert "10.0.20.140" not in health_script(P2, P2.container(120))


def _inventory(tmp_path: Path) -> Path:
    inv_path = tmp_path / "sandbox.yml"
    inv_path.write_text((SANDBOX_INVENTORY).read_text()
                        .replace("phases_dir: ", f"phases_dir: {PHASES} #"))
    return inv_path


def test_each_service_container_env_points_at_the_stores_and_the_gateway_at_each_service(
        tmp_path: Path) -> None:
    inv = load_inventory(_inventory(tmp_path))
    secrets = Secrets(generate())
    tickets = app.env_values(app.env_content(build_context(inv, P2, P2.container(140), secrets,
                                                           bundle_dir=None)))
    assert tickets["SERVICE_BIND"] == "10.0.20.140" and tickets["POSTGRES_HOST"] == "10.0.30.10"
    assert tickets["REDIS_HOST"] == "10.0.30.20" and tickets["ELASTICSEARCH_HOST"] == "10.0.30.40"
    gateway = app.env_values(app.env_content(build_context(inv, P2, P2.container(120), secrets,
                                                           bundle_dir=None)))
    for name, svc in P2.services.items():
        if name != "api-gateway":
            ip = P2.container(svc.container).ip
            assert gateway[f"{name.upper()}_SERVICE_URL"] == f"http://{ip}:{svc.port}"
    eco = app.ecosystem_content(build_context(inv, P2, P2.container(140), secrets, bundle_dir=None))
    assert "app('tickets', 3030, 4)" in eco and "app('auth'" not in eco


def test_migration_finished_reads_the_migration_journal(tmp_path: Path) -> None:
    inv_path = _inventory(tmp_path)
    assert not migration_record.migration_finished(inv_path, "phase2")
    path = migration_record.migration_journal(inv_path, "phase2")
    assert path == migrate.journal_for(inv_path, "phase2").path
    assert path.parent == state_dir(inv_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_rec("finish", "revoke grants")) + "\nnot json\n")
    assert not migration_record.migration_finished(inv_path, "phase2")
    with path.open("a") as f:
        f.write(json.dumps(_rec("finish", "done")) + "\n")
    assert migration_record.migration_finished(inv_path, "phase2")
    assert not migration_record.migration_finished(inv_path, "phase1")


def test_verify_expects_each_service_where_it_listens(tmp_path: Path) -> None:
    inv = load_inventory(_inventory(tmp_path))

    def where(phase: Phase, vmid: int) -> dict[str, str] | None:
        found: dict[str, str] | None = verify.expected_values(inv, phase, phase.container(vmid)).get(
            "service_addresses")
        return found

    assert where(P2, 140) == {"tickets": "10.0.20.140"} and where(P2, 120) == {"api-gateway": "127.0.0.1"}
    assert set((where(P1, 230) or {}).values()) == {"127.0.0.1"} and where(P2, 100) is None


@dataclass
class _State:
    spec: ContainerSpec


def test_phase2_up_builds_every_container_then_starts_the_services_the_gateway_last() -> None:
    states = [_State(c) for c in P2.containers]
    first = [s.spec.vmid for s in waves.first_wave_order(states)]
    assert first[:8] == [120, 121, 130, 140, 150, 160, 170, 180] and set(first[8:]) == {100, 110, 210, 220}
    apps = waves.second_wave_order([s for s in states if waves.is_app(s.spec)])
    assert [s.spec.vmid for s in apps] == [121, 130, 140, 150, 160, 170, 180, 120]
