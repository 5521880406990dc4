"""capacity.decide against the seed's limits as packaged (data/limits.yml): rows, statuses, the Decision
Matrix's recommendation, the first limit at the current growth, exit codes. Pure: measured figures in."""

from __future__ import annotations

import pytest

from psa_provision import capacity
from psa_provision.capacity import ContainerUse, Measured
from psa_provision.limits import load_limits

LIMITS = load_limits()


def measured(tenants: int = 3, users: int = 5, tickets: int = 40, rpm: float | None = 120.0,
             daily: tuple[int, ...] | None = None, containers: tuple[ContainerUse, ...] = (),
             missing: dict[str, str] | None = None) -> Measured:
    days = daily if daily is not None else (tickets,) * 7
    return Measured(tenants, users, tickets, days, rpm, containers, missing or {})


def row(verdict: capacity.Verdict, figure: str) -> capacity.Row:
    return next(r for r in verdict.rows if r.figure == figure)


def test_a_small_platform_on_phase0_is_within_every_limit() -> None:
    v = capacity.decide(LIMITS, "phase0", measured())
    assert [(r.figure, r.value, r.limit, r.status) for r in v.rows] == [
        ("tenants", 3, "< 10", "ok"), ("concurrent users", 5, "< 50", "ok"),
        ("tickets/day", 40, "< 200", "ok"), ("API requests/minute", 120, "<= 1000", "ok")]
    assert v.exit_code == 0 and v.crossed == ()
    assert (v.recommended, v.matrix_column, v.uptime_sla, v.advice) == (
        "phase0", "Single Container", "best effort", "stay")
    assert v.review_due == ()


def test_past_200_tickets_a_day_phase0_is_crossed_and_the_matrix_says_phase1() -> None:
    v = capacity.decide(LIMITS, "phase0", measured(tickets=201))
    tickets = row(v, "tickets/day")
    assert tickets.status == "crossed" and tickets.days_until == 0
    assert "safe operation range: up to 200-500" in tickets.note
    assert v.exit_code == capacity.EXIT_CROSSED == 3
    assert [r.figure for r in v.crossed] == ["tickets/day"]
    assert (v.recommended, v.driven_by, v.advice) == ("phase1", ("tickets_per_day",), "move to phase1")
    assert (v.matrix_column, v.uptime_sla) == ("Separate Infrastructure", "99%")
    assert v.review_due == ("200 tickets/day",)


def test_exactly_200_tickets_is_reaching_the_limit_199_is_not() -> None:
    assert row(capacity.decide(LIMITS, "phase0", measured(tickets=200)), "tickets/day").status == "crossed"
    assert capacity.decide(LIMITS, "phase0", measured(tickets=199)).exit_code == 0


def test_beyond_the_single_containers_safe_range() -> None:
    v = capacity.decide(LIMITS, "phase0", measured(tickets=501, users=101))
    assert row(v, "tickets/day").status == "beyond safe range"
    assert row(v, "concurrent users").status == "beyond safe range"
    assert v.exit_code == 3
    assert v.recommended == "phase1" and v.driven_by == ("users", "tickets_per_day")


def test_api_requests_max_1000_is_inclusive() -> None:
    assert row(capacity.decide(LIMITS, "phase0", measured(rpm=1000)), "API requests/minute").status == "ok"
    over = capacity.decide(LIMITS, "phase0", measured(rpm=1001))
    assert row(over, "API requests/minute").status == "beyond safe range" and over.exit_code == 3
    assert over.recommended == "phase1"  # the first phase that states no such limit


def test_reaching_10_tenants_is_the_next_review() -> None:
    v = capacity.decide(LIMITS, "phase0", measured(tenants=10))
    assert row(v, "tenants").status == "crossed" and v.review_due == ("10 tenants",)
    assert v.recommended == "phase1" and v.exit_code == 3


@pytest.mark.parametrize(("tenants", "phase"), [
    (1, "phase0"), (9, "phase0"), (10, "phase1"), (19, "phase1"), (20, "phase2"), (49, "phase2"),
    (50, "phase3"), (500, "phase3")])
def test_tenants_alone_pick_the_phase(tenants: int, phase: str) -> None:
    assert capacity.decide(LIMITS, "phase0", measured(tenants=tenants)).recommended == phase


@pytest.mark.parametrize(("users", "tickets", "phase"), [(49, 199, "phase0"), (50, 10, "phase1"),
                                                         (199, 999, "phase1"), (200, 10, "phase3"),
                                                         (10, 1000, "phase3")])
def test_users_and_tickets_per_matrix_column(users: int, tickets: int, phase: str) -> None:
    """Phases 1 and 2 share the matrix's Separate Infrastructure column: tenants decide between them."""
    assert capacity.decide(LIMITS, "phase0", measured(users=users, tickets=tickets)).recommended == phase


def test_phase1_has_no_requests_limit_and_a_small_load_would_do_on_phase0() -> None:
    v = capacity.decide(LIMITS, "phase1", measured(tenants=3, rpm=5000))
    assert row(v, "API requests/minute").limit == "none in the seed"
    assert row(v, "API requests/minute").status == "ok"
    assert "below this phase's band (from 10)" in row(v, "tenants").note
    assert v.exit_code == 0 and v.recommended == "phase1" and v.advice == "stay"  # the requests call for it
    small = capacity.decide(LIMITS, "phase2", measured(tenants=3, rpm=10))
    assert small.advice == "phase0 would do" and small.exit_code == 0


def test_phase3_has_no_upper_bound() -> None:
    v = capacity.decide(LIMITS, "phase3", measured(tenants=5000, users=9000, tickets=90000, rpm=10**6))
    assert v.exit_code == 0 and {r.limit for r in v.rows} == {"50+", "200+", "1000+", "none in the seed"}


def test_the_first_limit_at_the_current_growth() -> None:
    """Tickets grow 10 a day from 100 to 160: 200 in 4 days; tenants (5, in proportion) reach 10 in 16."""
    v = capacity.decide(LIMITS, "phase0", measured(tenants=5, users=5, tickets=160,
                                                   daily=(100, 110, 120, 130, 140, 150, 160), rpm=100))
    assert v.growth_per_day == 10.0
    assert row(v, "tickets/day").days_until == 4.0
    assert row(v, "tenants").days_until == 16.0
    assert row(v, "concurrent users").days_until == 144.0
    assert row(v, "API requests/minute").days_until == 144.0
    assert v.first_limit is not None and v.first_limit.figure == "tickets/day"


def test_without_growth_no_limit_comes_nearer_but_a_crossed_one_is_now() -> None:
    flat = capacity.decide(LIMITS, "phase0", measured(daily=(40,) * 7))
    assert flat.growth_per_day == 0.0 and flat.first_limit is None
    falling = (160, 150, 140, 130, 120, 110, 100)
    shrinking = capacity.decide(LIMITS, "phase0", measured(tickets=100, daily=falling))
    assert shrinking.growth_per_day == -10.0 and shrinking.first_limit is None
    crossed = capacity.decide(LIMITS, "phase0", measured(tenants=12))
    assert crossed.first_limit is not None and crossed.first_limit.figure == "tenants"
    assert crossed.first_limit.days_until == 0
    no_history = capacity.decide(LIMITS, "phase0", measured(daily=()))
    assert no_history.growth_per_day is None and no_history.first_limit is None


def test_a_figure_not_measured_is_unknown_and_alerts_nothing() -> None:
    v = capacity.decide(LIMITS, "phase0", measured(rpm=None, missing={"requests_per_minute": "HTTP 404"}))
    r = row(v, "API requests/minute")
    assert (r.value, r.status, r.note) == (None, "unknown", "HTTP 404")
    assert v.exit_code == 0


def test_container_headroom_rows() -> None:
    containers = (ContainerUse(200, "psa-all-in-one", 85.0, 40.0),
                  ContainerUse(100, "psa-postgres-1", 10.0, 95.5),
                  ContainerUse(110, "psa-redis-1", None, None, "rrddata: 500 RRD error"))
    v = capacity.decide(LIMITS, "phase0", measured(containers=containers))
    got = {r.figure: (r.value, r.limit, r.status) for r in v.rows[4:]}
    assert got == {
        "CPU in use, psa-all-in-one (200)": (85.0, "<= 80%", "crossed"),
        "memory in use, psa-all-in-one (200)": (40.0, "<= 90%", "ok"),
        "CPU in use, psa-postgres-1 (100)": (10.0, "<= 80%", "ok"),
        "memory in use, psa-postgres-1 (100)": (95.5, "<= 90%", "crossed"),
        "CPU in use, psa-redis-1 (110)": (None, "<= 80%", "unknown"),
        "memory in use, psa-redis-1 (110)": (None, "<= 90%", "unknown"),
    }
    assert row(v, "CPU in use, psa-redis-1 (110)").note == "rrddata: 500 RRD error"
    assert v.exit_code == 3 and v.recommended == "phase0"  # saturation alerts, the matrix is about load


def test_json_form() -> None:
    data = capacity.decide(LIMITS, "phase0", measured(tickets=250)).as_dict()
    assert data["exit_code"] == 3 and data["crossed"] == ["tickets/day"]
    assert data["recommended_phase"] == "phase1" and data["advice"] == "move to phase1"
    assert data["rows"][2] == {"figure": "tickets/day", "value": 250.0, "limit": "< 200", "status": "crossed",
                               "note": "safe operation range: up to 200-500", "days_until": 0.0}


def test_an_unknown_phase_is_refused() -> None:
    with pytest.raises(ValueError, match="no phase 'phase9'"):
        capacity.decide(LIMITS, "phase9", measured())


@pytest.mark.parametrize(("counts", "slope"), [([1], None), ([], None), ([5, 5], 0.0), ([0, 2, 4], 2.0),
                                               ([10, 0, 10, 0, 10, 0, 10], 0.0)])
def test_growth_is_the_least_squares_slope(counts: list[int], slope: float | None) -> None:
    assert capacity.growth_per_day(counts) == slope


@pytest.mark.parametrize(("value", "limit", "fraction", "days"), [
    (100, 200, 0.1, 10.0), (200, 200, 0.1, 0.0), (250, 200, None, 0.0), (100, 200, 0.0, None),
    (100, 200, -0.1, None), (0, 200, 0.1, None), (100, 200, None, None)])
def test_days_until(value: float, limit: float, fraction: float | None, days: float | None) -> None:
    assert capacity.days_until(value, limit, fraction) == days


def test_use_from_rrd_takes_the_window_mean_cpu_and_highest_memory() -> None:
    gib = 2**30
    rows: list[dict[str, float]] = [
            {"time": 1000, "cpu": 0.9, "mem": 7 * gib, "maxmem": 8 * gib},  # before the window
            {"time": 1060, "cpu": 0.2, "mem": 2 * gib, "maxmem": 8 * gib},
            {"time": 1120, "maxmem": 8 * gib},  # a step PVE knows nothing of: its fields left out
            {"time": 1180, "cpu": 0.4, "mem": 4 * gib, "maxmem": 8 * gib}]
    cpu, mem = capacity.use_from_rrd(rows, window_minutes=3)  # the newest three steps
    assert cpu == pytest.approx(30.0) and mem == pytest.approx(50.0)
    assert capacity.use_from_rrd([], 10) == (None, None)
    assert capacity.use_from_rrd([{"time": 1}], 10) == (None, None)
    assert capacity.use_from_rrd([{"time": 1, "cpu": 0.5, "mem": 1, "maxmem": 0}], 10) == (50.0, None)


def test_the_commands_table_and_lines() -> None:
    from psa_provision.commands.capacity import COLUMNS, Report

    figures = measured(tenants=5, tickets=201, rpm=None, daily=(141, 151, 161, 171, 181, 191, 201),
                       missing={"requests_per_minute": "gateway /metrics: HTTP 404"})
    report = Report(capacity.decide(LIMITS, "phase0", figures), {})
    assert len(COLUMNS) == len(report.rows()[0])
    assert report.rows()[2] == ["tickets/day", "201", "< 200", "crossed", "now",
                                "safe operation range: up to 200-500"]
    assert report.rows()[3][1:4] == ["?", "<= 1000", "unknown"]
    assert report.rows()[0][4] == "20.1"  # tenants 5 -> 10 at +10/day on 201 tickets/day
    assert report.lines() == [
        "Decision Matrix: Separate Infrastructure, uptime SLA 99% -> phase1 (by tickets per day): "
        "move to phase1",
        "first limit at the current growth (+10 tickets/day per day over 7 days): tickets/day < 200, "
        "reached now",
        'next review due: reached 200 tickets/day (seed: "Next Review")',
        "limit crossed: tickets/day 201 (< 200)"]
    assert report.exit_code == 3 and report.as_dict()["sources"] == {}
