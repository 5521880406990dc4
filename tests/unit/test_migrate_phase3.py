"""Phase 2 -> 3's pure parts: the order of the conversion steps, when `up phase3` must hold the
conversion, and how the journal's records make a killed or rolled-back run resume."""

from __future__ import annotations

from pathlib import Path

from psa_provision.commands import verify
from psa_provision.inventory import load_inventory
from psa_provision.migration.phase3_steps import (
    FINISH,
    PREPARE,
    SECOND_COPIES,
    actions,
    conversion_held,
    held_spec,
)
from psa_provision.migration.record import read_states
from psa_provision.migration.steps import plan_steps, report
from psa_provision.packaged import PHASES_DIR, SANDBOX_INVENTORY
from psa_provision.phases import load_phase

P1, P2, P3 = (load_phase(n, PHASES_DIR) for n in ("phase1", "phase2", "phase3"))
PASSWORDS = {"postgres": "s3cret'1", "replicator": "r2", "rewind_user": "w3"}


def names() -> list[str]:
    return [a.name for a in actions(P2, P3, PASSWORDS)]


def at(name: str) -> int:
    return names().index(name)


def test_prepare_first_finish_last_every_phase3_container_once() -> None:
    found = actions(P2, P3, PASSWORDS)
    assert found[0].name == PREPARE and found[-1].name == FINISH
    converged = [v for a in found if a.kind in ("converge", "files") for v in (a.vmid, *a.together)]
    assert set(converged) == {c.vmid for c in P3.containers}
    assert len(names()) == len(set(names())), "a step name is the journal's key: each once"


def test_etcd_before_the_takeover_and_the_takeover_before_any_replica() -> None:
    assert at("etcd members") < at("postgresql etcd") < at("postgresql takeover")
    assert at("postgresql files psa-postgres-1") < at("postgresql roles") < at("postgresql takeover")
    assert at("postgresql takeover") < at("postgresql replica psa-postgres-2") < at("postgresql synchronous")


def test_redis_replicas_copy_the_standalone_before_it_becomes_their_primary() -> None:
    assert at("psa-redis-2") < at("psa-redis-1") and at("psa-redis-3") < at("psa-redis-1")


def test_the_phase2_node_goes_first_in_rabbitmq_and_elasticsearch() -> None:
    assert at("psa-rabbitmq-1") < at("psa-rabbitmq-2") < at("psa-rabbitmq-3")
    assert at("psa-es-1") < at("psa-es-2") < at("psa-es-3")


def test_apps_switch_to_the_vip_only_after_the_clusters_and_the_load_balancers() -> None:
    last_store = max(at("postgresql synchronous"), at("psa-redis-1"), at("psa-rabbitmq-3"), at("psa-es-3"))
    lbs = max(at("psa-lb-1"), at("psa-lb-2"))
    assert last_store < lbs < at(SECOND_COPIES) < at("psa-gateway")
    old_apps = [at(c.hostname) for c in P2.with_component("app")]
    assert at(SECOND_COPIES) < min(old_apps), "second copies serve before the first ones reload"


# phase 3's new app containers (phase3.yml: each service's `also_on`), and phase 2's (phase2.yml)
NEW_APPS = (122, 123, 131, 141, 151, 161, 171, 181)
PHASE2_APPS = (120, 121, 130, 140, 150, 160, 170, 180)


def test_the_second_copies_are_one_step_side_by_side_a_few_at_a_time() -> None:
    found = actions(P2, P3, PASSWORDS)
    touching = [a for a in found if {a.vmid, *a.together} & set(NEW_APPS)]
    assert [a.name for a in touching] == [SECOND_COPIES], "the new copies are converged in one step"
    copies = touching[0]
    assert copies.kind == "converge" and (copies.vmid, *copies.together) == NEW_APPS
    assert 1 < copies.at_once < len(NEW_APPS), "side by side, but not all eight builds on two cores"
    assert not copies.shared and copies.rollback == "", "new containers: nothing to undo"


def test_the_phase2_app_containers_stay_one_step_each_in_turn_after_the_copies() -> None:
    found = actions(P2, P3, PASSWORDS)
    serving = [a for a in found if {a.vmid, *a.together} & set(PHASE2_APPS)]
    assert [(a.vmid, a.together) for a in serving] == [(v, ()) for v in PHASE2_APPS]
    assert [a.name for a in serving] == [P3.container(v).hostname for v in PHASE2_APPS]
    assert all(a.shared and a.kind == "converge" for a in serving)
    assert min(found.index(a) for a in serving) > names().index(SECOND_COPIES)


def test_each_container_of_a_side_by_side_step_is_checked_by_its_own_units() -> None:
    copies = {a.name: a for a in actions(P2, P3, PASSWORDS)}[SECOND_COPIES]
    for vmid in NEW_APPS:
        assert "pm2-psa" in copies.check_on(vmid).split()
    # one copy also holds the backup repository (its timers): only its own check asks for them
    odd = [c.model_copy(update={"components": [*c.components, "backup"]}) if c.vmid == 141 else c
           for c in P3.containers]
    p3 = P3.model_copy(update={"containers": odd})
    copies = {a.name: a for a in actions(P2, p3, PASSWORDS)}[SECOND_COPIES]
    backup_timers = {"psa-pgbackrest-full.timer", "psa-pgbackrest-diff.timer"}
    assert {"pm2-psa", *backup_timers} <= set(copies.check_on(141).split())
    for vmid in set(NEW_APPS) - {141}:
        assert "pm2-psa" in copies.check_on(vmid).split()
        assert not backup_timers & set(copies.check_on(vmid).split())


def test_the_etcd_members_start_all_at_once() -> None:
    etcd = {a.name: a for a in actions(P2, P3, PASSWORDS)}["etcd members"]
    assert (etcd.vmid, *etcd.together) == (105, 106, 107)
    assert etcd.at_once == 0, "a member's first start waits for a quorum: none may wait for a worker"


def test_the_takeover_carries_patronis_check_and_rollback_and_the_roles_secret_on_stdin() -> None:
    found = {a.name: a for a in actions(P2, P3, PASSWORDS)}
    takeover, roles = found["postgresql takeover"], found["postgresql roles"]
    assert "systemctl enable --now patroni@15-main" in takeover.run
    assert "systemctl start postgresql@15-main" in takeover.rollback
    assert takeover.judge is not None
    assert takeover.judge(1, "") != []
    assert roles.stdin is not None and "s3cret" not in repr(roles) and "s3cret" not in roles.run


def test_shared_containers_roll_back_to_phase2_new_ones_do_not() -> None:
    found = {a.name: a for a in actions(P2, P3, PASSWORDS)}
    assert found["psa-redis-1"].shared and found["psa-gateway"].shared
    assert not found["psa-redis-2"].shared and not found[SECOND_COPIES].shared


def test_up_holds_the_conversion_while_phase2s_standalone_stores_exist() -> None:
    assert conversion_held(P2, P3, {100, 110, 210, 220}, finished=False)
    assert not conversion_held(P2, P3, {100, 110, 210, 220}, finished=True)
    assert not conversion_held(P2, P3, set(), finished=False), "a fresh phase 3 builds its clusters at once"
    assert not conversion_held(P1, P2, {100}, finished=False), "phase 2 has no clusters"


def test_a_held_container_gets_its_base_only() -> None:
    spec = P3.container(101)
    assert held_spec(spec).components == ["base"]
    assert held_spec(spec).vmid == 101 and spec.components != ["base"]


def test_phase3_plan_steps_are_the_conversion_steps_each_run_then_checked() -> None:
    steps = plan_steps(P2, P3)
    assert [s.name for s in steps] == names()
    assert all(s.kind == "ha" and s.substeps == ("run", "check") for s in steps)


def test_the_queues_turn_quorum_after_the_members_join_and_before_any_app() -> None:
    assert at("psa-rabbitmq-3") < at("rabbitmq quorum queues") < at("psa-lb-1")
    apps = [n for n in names() if n.startswith(("psa-gateway", "psa-auth", "psa-billing"))] + [SECOND_COPIES]
    assert len(apps) == 4
    assert all(at("rabbitmq quorum queues") < at(n) for n in apps)


def _entry(step: str, state: str, **fields: object) -> dict[str, object]:
    return {"event": "migrate", "step": step, "state": state, **fields}


def test_a_killed_run_resumes_at_the_step_whose_check_was_not_recorded() -> None:
    steps = plan_steps(P2, P3)
    entries = [_entry("prepare", "done"), _entry("etcd members", "run"), _entry("etcd members", "check"),
               _entry("etcd members", "done"), _entry("postgresql etcd", "run")]
    states = read_states(entries)
    todo = [s.name for s in steps if not states.get(s.name) or not states[s.name].finished]
    assert todo[0] == "postgresql etcd"
    assert [x for x in steps[2].substeps if x not in states["postgresql etcd"].done] == ["check"]
    rows = {r[0]: r[2] for r in report(steps, states, 0.0).rows}
    assert rows["etcd members"] == "done" and rows["postgresql etcd"] == "interrupted after run"
    assert rows["postgresql files psa-postgres-1"] == "to do"


def test_a_rolled_back_step_is_redone_from_its_run() -> None:
    entries = [_entry("postgresql takeover", "run"), _entry("postgresql takeover", "rolled-back",
                                                              failed=["the leader is nobody"])]
    state = read_states(entries)["postgresql takeover"]
    assert state.done == [] and state.label == "rolled back, to redo"


def test_the_report_names_the_container_of_each_step() -> None:
    rows = {r[0]: r[1] for r in report(plan_steps(P2, P3), {}, 0.0).rows}
    assert rows["postgresql takeover"] == "100 psa-postgres-1 (10.0.30.10)"
    assert rows["prepare"] == "-"
    assert rows["etcd members"] == "105, 106, 107 side by side"
    assert rows[SECOND_COPIES] == "122, 123, 131, 141, 151, 161, 171, 181 side by side"
    assert rows["psa-gateway"] == "120 psa-gateway (10.0.20.120)"


def test_verify_holds_the_load_balancers_and_patroni_members_to_what_they_really_bind(tmp_path: Path) -> None:
    inv_path = tmp_path / "sandbox.yml"
    inv_path.write_text(SANDBOX_INVENTORY.read_text().replace("phases_dir: ", f"phases_dir: {PHASES_DIR} # "))
    inv = load_inventory(inv_path)
    p3 = P3
    lb = verify.expected_values(inv, p3, p3.container(240))
    # HAProxy binds *:<port> for each app service and for PostgreSQL's leader/replica frontends
    assert lb["haproxy"]["wildcard_ports"] == [3000, 3010, 3020, 3030, 3040, 3050, 3060, 3070, 5000, 5001]
    member = verify.expected_values(inv, p3, p3.container(101))
    assert member["postgresql"]["listen_addresses"] == "10.0.30.11,127.0.0.1"  # Patroni's `listen`
    assert "haproxy" not in member


def test_only_the_patroni_replicas_converge_again_after_their_clone() -> None:
    again = {a.name for a in actions(P2, P3, PASSWORDS) if a.again}
    assert again == {"postgresql replica psa-postgres-2", "postgresql replica psa-postgres-3"}
