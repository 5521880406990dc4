"""`drill`'s pure parts: KIND parsing, the figures from recorded attempts, the JSON and table shapes."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from psa_provision.drill.kinds import KINDS, parse_kind
from psa_provision.drill.measure import (
    MOST_ERRORS,
    Attempt,
    client_errors,
    confirmed_lost,
    database_clock,
    first_ok_after,
    longest_error_window,
    longest_publish_gap,
    lost_and_duplicates,
    measure,
    publishing,
)
from psa_provision.drill.run import MAX_FAILING_NAMED, named, ridden_out, vip_base
from psa_provision.drill.writer import error_of, request
from psa_provision.errors import InputError
from psa_provision.packaged import PHASES_DIR
from psa_provision.phases import load_phase
from psa_provision.services.app.tickets import TicketEvent

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


# RabbitMQ: a ticket's event is confirmed when published_at is set, billed when billing recorded it.
RMQ = parse_kind("rabbitmq-node")


def event(n: int, created: float, published: float | None, billed: bool, run: str = "r") -> TicketEvent:
    return TicketEvent(n, f"drill {run} {n}", created, published, billed)


def test_a_confirmed_publish_billing_never_recorded_is_lost_an_unconfirmed_one_is_not() -> None:
    events = [event(1, 0.0, 1.0, True), event(2, 0.0, 2.0, False), event(3, 0.0, None, False),
              event(4, 0.0, None, True)]
    assert confirmed_lost(events) == [2]


def test_publishing_resumes_is_the_longest_stretch_without_a_confirm_ending_after_the_fault() -> None:
    # confirms at 1, 2, 9.8 | fault 10 | 10.3 (one the member gave as it went down), a stall, 25, 25.2;
    # writing ended at 30; 40 is the sweeper's, after writing. Stretches ending after the fault:
    # 9.8 -> 10.3 = 0.5, 10.3 -> 25 = 14.7, 25 -> 25.2 = 0.2, 25.2 -> 30 (open) = 4.8. 2 -> 9.8 ended before.
    assert longest_publish_gap([1.0, 2.0, 9.8, 10.3, 25.0, 25.2, 40.0], 10.0, 30.0) == pytest.approx(14.7)
    assert longest_publish_gap([1.0, 2.0], 10.0, 30.0) is None, "no confirm after the fault"
    assert longest_publish_gap([1.0, 40.0], 10.0, 30.0) is None, "only the sweeper's, after writing"
    # no confirm before the fault: the first stretch starts at the fault (10 -> 12 = 2)
    assert longest_publish_gap([12.0, 13.0], 10.0, 13.5) == pytest.approx(2.0)
    # publishing stopped again and was not back when writing ended: 11 -> 30 = 19
    assert longest_publish_gap([9.0, 11.0], 10.0, 30.0) == pytest.approx(19.0)


def test_the_database_clock_is_the_median_offset_of_the_tickets_acknowledged_and_held_once() -> None:
    attempts = [ok("drill r 1", 1.0, 1.2), ok("drill r 2", 2.0, 2.4), err("drill r 3", 3.0),
                ok("drill r 3", 4.0, 4.2), ok("drill r 5", 5.0, 5.2), err("drill r 6", 6.0)]
    events = [event(1, 1001.1, None, False),   # middle 1.1: 1000.0
              event(2, 1002.3, None, False),   # middle 2.2: 1000.1
              event(3, 1003.05, None, False),  # key 3 held twice: which try made which row is unknown
              TicketEvent(4, "drill r 3", 1004.1, None, False),
              event(5, 1005.0, None, False),   # middle 5.1: 999.9
              event(6, 1106.0, None, False)]   # committed, never acknowledged: no try to place it in
    assert database_clock(attempts, events) == pytest.approx(1000.0)
    assert database_clock([err("drill r 1", 1.0)], events) is None


def publishing_run() -> tuple[list[Attempt], list[TicketEvent]]:
    """Fault at 10; the database's clock 1000 s ahead of the drill's. 1: before the fault; 2: created
    before it, confirmed just after it; 3: its publish timed out (acknowledged, never confirmed while
    writing); 4: confirmed after the member was gone and never billed; 5: normal again."""
    attempts = [ok("drill r 1", 1.0, 1.2), ok("drill r 2", 9.7, 9.9), ok("drill r 3", 10.5, 15.7),
                ok("drill r 4", 15.8, 22.1), ok("drill r 5", 22.2, 22.4)]
    events = [event(1, 1001.1, 1001.15, True), event(2, 1009.8, 1010.3, True), event(3, 1010.6, None, False),
              event(4, 1015.9, 1022.0, False), event(5, 1022.3, 1022.35, True)]
    return attempts, events


def test_publishing_figures_of_a_run_worked_by_hand() -> None:
    attempts, events = publishing_run()
    # offsets 1000, 1000, 997.5, 996.95, 1000: median 1000. Confirms on the drill's clock: 1.15, 10.3,
    # 22.0, 22.35; writing ended at 22.4. Stretches after the fault: 1.15 -> 10.3 = 9.15,
    # 10.3 -> 22.0 = 11.7, 0.35, open 0.05. First confirm of a ticket created after the fault: 4's, 22.0.
    p = publishing(attempts, events, 10.0, billing_waited_s=60.0)
    assert (p.confirmed, p.lost) == (4, [4])
    assert p.resumed_s == pytest.approx(11.7)
    assert p.first_confirm_after_fault_s == pytest.approx(12.0)
    assert p.as_dict() == {"confirmed": 4, "confirmed_lost": 1, "lost_ids": [4], "resumed_s": 11.7,
                           "first_confirm_after_fault_s": 12.0, "billing_waited_s": 60.0}


def test_a_confirmed_publish_lost_fails_every_drill_and_rabbitmq_node_needs_its_publishes_counted() -> None:
    attempts, events = publishing_run()
    held = Counter(f"drill r {n}" for n in range(1, 6))
    for kind in (PG, RMQ):
        result = measure(kind, "x", attempts, held, 10.0, 40.0, events=events)
        result.healed = True
        assert result.lost == [] and not result.passed, kind.name
        billed = [TicketEvent(e.id, e.title, e.created, e.published, True) for e in events]
        fine = measure(kind, "x", attempts, held, 10.0, 40.0, events=billed)
        fine.healed = True
        assert fine.passed, kind.name
    unread_pg = measure(PG, "x", attempts, held, 10.0, 40.0, events=None)
    unread_rmq = measure(RMQ, "x", attempts, held, 10.0, 40.0, events=None)
    unread_pg.healed = unread_rmq.healed = True
    assert unread_pg.passed and not unread_rmq.passed, "rabbitmq-node's own figure not counted"


def test_rabbitmq_figures_in_the_json_and_the_target_beside_the_figure_it_is_for() -> None:
    attempts, events = publishing_run()
    held = Counter(f"drill r {n}" for n in range(1, 6))
    rmq = measure(RMQ, "psa-rabbitmq-2", attempts, held, 10.0, 40.0, events=events, billing_waited_s=60.0)
    doc = json.loads(json.dumps(rmq.as_dict()))
    assert doc["rabbitmq"]["confirmed_lost"] == 1 and doc["rabbitmq"]["lost_ids"] == [4]
    assert doc["resume_target_s"] == 10.0 and doc["resume_target_of"] == "publishing"
    rows = dict(rmq.rows())
    assert rows["RabbitMQ publishing resumes (longest time without a confirm)"] == "11.7 s (target <= 10 s)"
    assert "target" not in rows["first successful write after the fault"]
    assert rows["RabbitMQ confirmed publishes lost"] == "1 of 4 confirmed (billing read after 60 s)"
    pg = dict(measure(PG, "psa-postgres-1", attempts, held, 10.0, 40.0, events=events).rows())
    assert "target <= 30 s" in pg["first successful write after the fault"]
    assert "target" not in pg["RabbitMQ publishing resumes (longest time without a confirm)"]
    unread = measure(PG, "psa-postgres-1", attempts, held, 10.0, 40.0)
    assert unread.as_dict()["rabbitmq"] is None
    assert dict(unread.rows())["RabbitMQ confirmed publishes lost"] == "not counted (see the notes)"


def _tries(*spans: tuple[float, float, bool]) -> list[Attempt]:
    """Ticket tries every 0.2 s from `start` to `end` (answered 0.1 s after sent), acknowledged or not."""
    out: list[Attempt] = []
    for start, end, acked in spans:
        t = start
        while t < end:
            out.append(Attempt(f"k{len(out)}", t, t + 0.1, acked))
            t += 0.2
    return out


def test_a_fault_is_held_until_writes_have_been_acknowledged_for_ten_seconds_after_the_target() -> None:
    pg = KINDS["postgresql-primary"]  # resume target 30 s
    fault = 10.0
    failing_then_back = _tries((0, fault, True), (fault, fault + 28, False), (fault + 28, fault + 60, True))
    assert not ridden_out(pg, failing_then_back, fault, fault + 29)  # before the target
    assert not ridden_out(pg, failing_then_back, fault, fault + 35)  # back for 7 s only
    assert ridden_out(pg, failing_then_back, fault, fault + 38.2)  # back for 10 s, past the target
    still_failing = _tries((0, fault, True), (fault, fault + 100, False))
    assert not ridden_out(pg, still_failing, fault, fault + 59)
    assert ridden_out(pg, still_failing, fault, fault + 60)  # twice the target: the longest hold


def test_a_fault_the_tickets_never_feel_is_held_for_its_target_and_ten_seconds_at_least() -> None:
    lb = KINDS["lb-active"]  # resume target 5 s
    fault = 10.0
    steady = _tries((0, 60, True))
    assert not ridden_out(lb, steady, fault, fault + 9.9)
    assert ridden_out(lb, steady, fault, fault + 10.0)
    assert not ridden_out(lb, [], fault, fault + 20)  # no answer at all is no sign of health
    assert ridden_out(lb, [], fault, fault + 30)


def test_a_redis_drill_holds_its_fault_the_longest_time_whatever_the_tickets_show() -> None:
    redis = KINDS["redis-primary"]  # its figures come from the Redis writer, read at the end
    steady = _tries((0, 60, True))
    assert not ridden_out(redis, steady, 10.0, 10.0 + 29.9)
    assert ridden_out(redis, steady, 10.0, 10.0 + 30.0)


def test_lb_active_reports_the_vips_move_against_its_5_s_target_not_the_writes() -> None:
    lb = KINDS["lb-active"]
    assert lb.resume_target_of == "vip" and lb.resume_target_s == 5.0  # issue: "the VIP moves in <= 5 s"
    result = measure(lb, "psa-lb-1", [ok("a", 1.0), err("b", 11.0), ok("b", 17.0)], Counter({"a": 1, "b": 1}),
                     10.0, 30.0)
    result.vip_moved_s = 3.64
    rows = dict(result.rows())
    assert rows["the VIP moved to the other load balancer"] == "3.6 s (target <= 5 s)"
    assert "target" not in rows["first successful write after the fault"]
    assert result.as_dict()["vip_moved_s"] == 3.64
    pg = dict(measure(PG, "psa-postgres-1", [ok("a", 1.0)], Counter({"a": 1}), 10.0, 40.0).rows())
    assert "the VIP moved to the other load balancer" not in pg


def test_the_vip_watch_polls_the_other_load_balancer_and_times_the_move(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    import time
    from types import SimpleNamespace

    from psa_provision.drill import run as drill_run
    from psa_provision.ssh.wire import Result

    phase3 = load_phase("phase3", PHASES_DIR)
    lbs = phase3.with_component("keepalived")
    moved = threading.Event()
    asked: list[tuple[str, str]] = []

    class Guest:  # the other load balancer: its poll returns once the test says the VIP moved
        def __init__(self, spec: object) -> None:
            self.host = spec.hostname

        def run(self, script: str, **_: object) -> Result:
            asked.append((self.host, script))
            if script != "true":
                moved.wait(timeout=10)
            return Result("", "", 0 if moved.is_set() else 1)

        def close(self) -> None:
            pass

    monkeypatch.setattr(drill_run, "ssh_connection", lambda _inv, spec: Guest(spec))
    start = time.monotonic()
    writer = SimpleNamespace(now=lambda: time.monotonic() - start)
    fault = drill_run.Fault("psa-lb-1 (holds the VIP)", (lbs[0],))
    watch = drill_run.VipWatch(SimpleNamespace(phase=phase3, inventory=None), fault, writer, 30.0).start()
    assert asked[0] == (lbs[1].hostname, "true"), "connected to the survivor before the fault"
    fault_at = writer.now()
    time.sleep(0.3)
    moved.set()
    took = watch.moved_s(fault_at)
    assert took is not None and 0.3 <= took < 2.0
    assert {h for h, _ in asked} == {lbs[1].hostname} and " inet 10.0.20.250/" in asked[-1][1]  # phase3.yml
    assert watch.problem == ""


def test_without_another_load_balancer_the_vip_watch_says_so() -> None:
    from types import SimpleNamespace

    from psa_provision.drill import run as drill_run

    phase3 = load_phase("phase3", PHASES_DIR)
    both = tuple(phase3.with_component("keepalived"))
    writer = SimpleNamespace(now=lambda: 0.0)
    watch = drill_run.VipWatch(SimpleNamespace(phase=phase3, inventory=None), drill_run.Fault("both", both),
                               writer, 10.0).start()
    assert watch.moved_s(0.0) is None and watch.problem == "no other load balancer to take the VIP"


def test_what_still_fails_is_named_up_to_a_limit_and_the_rest_counted() -> None:
    assert named(["psa-postgres-2 (161) patroni: not running"]) == "psa-postgres-2 (161) patroni: not running"
    many = [f"psa-app-{i} app: http 502" for i in range(MAX_FAILING_NAMED + 3)]
    text = named(many)
    assert text.count("http 502") == MAX_FAILING_NAMED
    assert text.endswith("(and 3 more)")
    assert named(many[:MAX_FAILING_NAMED]).count(";") == MAX_FAILING_NAMED - 1


def test_failed_writes_are_grouped_by_what_their_client_saw_most_frequent_first() -> None:
    attempts = [Attempt("k1", 1.0, 1.1, True),
                Attempt("k2", 2.0, 7.0, False, error="no answer: timed out"),
                Attempt("k2", 7.0, 7.2, False, error="HTTP 503: no PostgreSQL leader"),
                Attempt("k2", 8.0, 8.2, False, error="HTTP 503: no PostgreSQL leader"),
                Attempt("k2", 9.5, 9.6, False, error="HTTP 503: no PostgreSQL leader"),
                Attempt("k2", 10.0, 10.1, True)]
    assert client_errors(attempts) == [
        {"error": "HTTP 503: no PostgreSQL leader", "count": 3, "first_s": 7.0, "last_s": 9.5},
        {"error": "no answer: timed out", "count": 1, "first_s": 2.0, "last_s": 2.0}]
    many = [Attempt(f"k{i}", float(i), float(i), False, error=f"HTTP 50{i}") for i in range(MOST_ERRORS + 2)]
    assert len(client_errors(many)) == MOST_ERRORS
    assert client_errors([Attempt("k", 1.0, 1.0, False)])[0]["error"] == "unknown"
    measured = measure(PG, "t", attempts, Counter({"k1": 1, "k2": 1}), 1.5, 20.0)
    assert measured.as_dict()["client_errors"][0]["count"] == 3
    assert any(row[0].startswith("what failed writes saw") and "3 x HTTP 503: no PostgreSQL leader (7-10 s)"
               in row[1] for row in measured.rows())
    assert not any(row[0].startswith("what failed writes saw")
                   for row in measure(PG, "t", attempts[:1], Counter({"k1": 1}), 1.5, 20.0).rows())


def test_what_a_failed_write_saw_is_its_status_and_the_apps_message_or_why_nothing_answered() -> None:
    assert error_of(503, {"error": "no PostgreSQL leader"}) == "HTTP 503: no PostgreSQL leader"
    assert error_of(502, "<html>\n  502 Bad Gateway\n</html>") == "HTTP 502: <html> 502 Bad Gateway </html>"
    assert error_of(500, None) == "HTTP 500"
    assert error_of(0, "timed out") == "no answer: timed out"
    assert len(error_of(500, "x" * 1000)) < 200


def test_a_refused_connection_is_told_apart_from_an_answer() -> None:
    import socket
    with socket.socket() as sock:  # a loopback port with nothing listening on it
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    status, body = request("GET", f"http://127.0.0.1:{port}/health", timeout=2.0)
    assert status == 0 and "refused" in error_of(status, body).lower()
