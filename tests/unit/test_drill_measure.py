"""`drill`'s pure parts: KIND parsing, the figures from recorded attempts, the JSON and table shapes."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from psa_provision.drill.kinds import KINDS, parse_kind
from psa_provision.drill.measure import (
    Attempt,
    first_ok_after,
    longest_error_window,
    lost_and_duplicates,
    measure,
)
from psa_provision.drill.run import vip_base
from psa_provision.errors import InputError
from psa_provision.packaged import PHASES_DIR
from psa_provision.phases import load_phase

PG = parse_kind("postgresql-primary")


def ok(key: str, sent: float, answered: float | None = None, store: str = "postgresql") -> Attempt:
    return Attempt(key, sent, sent + 0.1 if answered is None else answered, True, store)


def err(key: str, sent: float, answered: float | None = None) -> Attempt:
    return Attempt(key, sent, sent + 0.1 if answered is None else answered, False)


def test_every_kind_of_the_issue_parses_and_nothing_else() -> None:
    assert set(KINDS) == {"postgresql-primary", "redis-primary", "rabbitmq-node", "lb-active",
                          "app-container", "node"}
    assert parse_kind(" Node ").name == "node"
    with pytest.raises(InputError) as caught:
        parse_kind("postgres")
    assert "postgresql-primary" in (caught.value.hint or "")


def test_the_issues_targets_are_the_kinds_resume_targets() -> None:
    assert {k: v.resume_target_s for k, v in KINDS.items()} == {
        "postgresql-primary": 30.0, "redis-primary": 15.0, "rabbitmq-node": 10.0, "lb-active": 5.0,
        "app-container": 5.0, "node": 60.0}
    assert all(k.lost_target == 0 for k in KINDS.values())


def test_first_write_after_the_fault_counts_only_writes_sent_after_it() -> None:
    attempts = [ok("a", 1.0), ok("b", 9.5, 10.5), err("c", 11.0), err("c", 12.0), ok("c", 16.0, 17.0)]
    assert first_ok_after(attempts, 10.0) == pytest.approx(7.0)
    assert first_ok_after([err("x", 11.0)], 10.0) is None


def test_the_longest_error_window_runs_from_the_last_ack_before_failures_to_the_next_ack() -> None:
    attempts = [ok("a", 1.0, 1.1), err("b", 2.0, 3.0), err("b", 4.0, 9.0), ok("b", 9.5, 9.6),
                ok("c", 10.0, 10.1), err("d", 11.0, 11.5), ok("d", 12.0, 12.2)]
    assert longest_error_window(attempts) == pytest.approx(9.6 - 1.1)
    assert longest_error_window([ok("a", 1.0), ok("b", 2.0)]) == 0.0
    assert longest_error_window([ok("a", 1.0, 1.0), err("b", 2.0, 30.0)]) == pytest.approx(29.0)
    assert longest_error_window([]) == 0.0


def test_lost_is_acked_and_absent_duplicates_are_keys_held_twice() -> None:
    attempts = [ok("a", 1.0), ok("b", 2.0), err("c", 3.0), ok("d", 4.0)]
    held = Counter({"a": 1, "b": 0, "c": 2, "d": 1})
    assert lost_and_duplicates(attempts, held) == (["b"], ["c"])


def test_a_drill_passes_only_with_nothing_lost_and_the_platform_healed() -> None:
    attempts = [ok("a", 1.0), err("b", 11.0), ok("b", 14.0)]
    result = measure(PG, "psa-postgres-1", attempts, Counter({"a": 1, "b": 1}), 10.0, 40.0)
    assert not result.passed, "not healed yet"
    result.healed, result.heal_s = True, 12.0
    assert result.passed
    lost = measure(PG, "psa-postgres-1", attempts, Counter({"b": 1}), 10.0, 40.0)
    lost.healed = True
    assert not lost.passed and lost.lost == ["a"]


def test_redis_losses_are_counted_with_and_without_wait() -> None:
    attempts = [ok("w1", 1.0, store="redis-wait"), ok("w2", 2.0, store="redis-wait"),
                ok("n1", 1.0, store="redis-nowait"), ok("n2", 2.0, store="redis-nowait")]
    result = measure(parse_kind("redis-primary"), "psa-redis-1", attempts, Counter(), 1.5, None,
                     redis_held={"w1", "w2", "n1"})
    assert {k: v["lost"] for k, v in result.redis_lost.items()} == {"with_wait": 0, "without_wait": 1}
    assert result.attempts == 0, "Redis attempts are not tickets"


def test_the_json_has_every_figure_of_the_issue() -> None:
    result = measure(PG, "psa-postgres-1", [ok("a", 1.0), err("b", 11.0), ok("b", 14.0)],
                     Counter({"a": 1, "b": 2}), 10.0, 40.0)
    doc = json.loads(json.dumps(result.as_dict()))
    assert {"first_ok_after_fault_s", "longest_error_window_s", "acknowledged_lost", "duplicates",
            "redis_lost", "healed", "passed", "resume_target_s", "kind", "target"} <= set(doc)
    assert doc["duplicates"] == 1 and doc["duplicate_keys"] == ["b"] and doc["acknowledged_lost"] == 0
    assert doc["first_ok_after_fault_s"] == pytest.approx(4.1)
    rows = dict(result.rows())
    assert rows["acknowledged writes lost"] == "0" and "target <= 30 s" in rows[
        "first successful write after the fault"]


def test_writes_go_through_the_phases_vip_and_a_phase_without_one_is_refused() -> None:
    assert vip_base(load_phase("phase3", PHASES_DIR)) == "http://10.0.20.250:3000"
    with pytest.raises(InputError):
        vip_base(load_phase("phase2", PHASES_DIR))
