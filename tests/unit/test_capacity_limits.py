"""data/limits.yml: the seed's numbers as packaged, and every mistake in a limits file as `file:line`."""

from __future__ import annotations

from pathlib import Path

import pytest

from psa_provision.errors import InputError
from psa_provision.limits import LIMITS_FILE, load_limits

GOOD = """\
phases:
  phase0:
    matrix_column: Single Container
    uptime_sla: best effort
    tenants: {from: 0, below: 10}
    tickets_per_day: {from: 0, below: 200}
    safe_range:
      tickets_per_day: [200, 500]
  phase1:
    matrix_column: Separate Infrastructure
    uptime_sla: "99%"
    tenants: {from: 10}
    tickets_per_day: {from: 200}
next_review: {tenants: 10}
headroom: {cpu_max_percent: 80, memory_max_percent: 90, window_minutes: 10}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "limits.yml"
    path.write_text(text)
    return path


def refused(tmp_path: Path, text: str) -> str:
    with pytest.raises(InputError) as exc:
        load_limits(write(tmp_path, text))
    return str(exc.value)


def test_the_packaged_limits_are_the_seeds() -> None:
    limits = load_limits(LIMITS_FILE)
    assert list(limits.phases) == ["phase0", "phase1", "phase2", "phase3"]
    p0 = limits.phases["phase0"]
    assert (p0.tenants and p0.tenants.below, p0.users and p0.users.below) == (10, 50)
    assert p0.tickets_per_day is not None and p0.tickets_per_day.below == 200
    assert p0.requests_per_minute is not None and p0.requests_per_minute.max == 1000
    assert p0.safe_range == {"tenants": (10, 20), "users": (50, 100), "tickets_per_day": (200, 500),
                             "requests_per_minute": (1000, 1000)}
    assert [p.uptime_sla for p in limits.phases.values()] == ["best effort", "99%", "99%", "99.9%"]
    assert [p.matrix_column for p in limits.phases.values()] == [
        "Single Container", "Separate Infrastructure", "Separate Infrastructure", "Full Microservices"]
    assert limits.next_review == {"tenants": 10, "tickets_per_day": 200}


def test_every_packaged_value_line_quotes_the_seed() -> None:
    """Each figure's line carries a comment quoting the seed's words (`# "..."`)."""
    for number, line in enumerate(LIMITS_FILE.read_text().splitlines(), 1):
        key = line.strip().split(":")[0]
        quoted = ("tenants", "users", "tickets_per_day", "requests_per_minute", "uptime_sla", "matrix_column")
        if key in quoted and line.startswith("    "):
            assert '# "' in line, f"limits.yml:{number} quotes no seed line: {line.strip()}"


def test_a_good_file_loads(tmp_path: Path) -> None:
    limits = load_limits(write(tmp_path, GOOD))
    assert limits.phases["phase1"].band("tenants") is not None
    assert limits.phases["phase1"].band("users") is None


def test_an_unknown_key_names_file_and_line(tmp_path: Path) -> None:
    text = GOOD.replace("    uptime_sla: best effort\n", "    uptime_sla: best effort\n    tenant: 4\n")
    message = refused(tmp_path, text)
    assert message.startswith(f"{tmp_path / 'limits.yml'}:5: phases.phase0.tenant: unknown key 'tenant'")
    assert "did you mean 'tenants'" in message


def test_an_upside_down_band_names_its_line(tmp_path: Path) -> None:
    message = refused(tmp_path, GOOD.replace("{from: 0, below: 200}", "{from: 300, below: 200}"))
    assert ":6: phases.phase0.tickets_per_day: the upper bound 200 is not above `from: 300`" in message


def test_below_and_max_together_are_refused(tmp_path: Path) -> None:
    message = refused(tmp_path, GOOD.replace("{from: 0, below: 10}", "{from: 0, below: 10, max: 10}"))
    assert ":5: phases.phase0.tenants: give `below`" in message


def test_a_gap_between_phases_names_the_later_band(tmp_path: Path) -> None:
    message = refused(tmp_path, GOOD.replace("    tenants: {from: 10}\n", "    tenants: {from: 12}\n"))
    assert f"{tmp_path / 'limits.yml'}:12: phases.phase1.tenants: `from: 12` leaves a gap after phase0's 10" \
        in message


def test_a_band_after_an_open_ended_one_is_refused(tmp_path: Path) -> None:
    text = GOOD.replace("{from: 0, below: 10}", "{from: 0}")
    message = refused(tmp_path, text)
    assert ":12: phases.phase1.tenants: phase0's band has no upper bound" in message


def test_a_safe_range_upside_down_and_a_wrong_type(tmp_path: Path) -> None:
    assert ":8: phases.phase0.safe_range.tickets_per_day: 500 is above 200" in refused(
        tmp_path, GOOD.replace("[200, 500]", "[500, 200]"))
    assert ":15: headroom.cpu_max_percent:" in refused(tmp_path, GOOD.replace("cpu_max_percent: 80",
                                                                              "cpu_max_percent: 180"))


def test_yaml_syntax_errors_name_the_line(tmp_path: Path) -> None:
    unclosed = GOOD.replace("{from: 0, below: 10}", "{from: 0, below: 10")
    assert ":5: YAML syntax error" in refused(tmp_path, unclosed)
