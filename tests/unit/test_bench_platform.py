"""bench/platform_figure.py's pure parts: CPU per command from `ps`, rrddata rows of a step, and the words
for what saturated first."""

from __future__ import annotations

from types import ModuleType

import bench_scripts


def load() -> ModuleType:
    return bench_scripts.load("platform_figure")


PS_BEFORE = """systemd                      3
postgres                    10
postgres                     5
node                        40
beam.smp                    20
"""
PS_AFTER = """systemd                      3
postgres                    25
postgres                     8
postgres                     2
node                       100
beam.smp                    21
tmux: server                 1
"""


def test_cpu_seconds_per_command_and_their_change() -> None:
    fig = load()
    before, after = fig.cpu_by_command(PS_BEFORE), fig.cpu_by_command(PS_AFTER)
    assert before == {"systemd": 3, "postgres": 15, "node": 40, "beam.smp": 20}
    assert after["tmux: server"] == 1
    assert fig.delta(before, after) == {"postgres": 20, "node": 60, "beam.smp": 1, "tmux: server": 1}


def test_rrddata_rows_of_a_step_are_the_minutes_it_overlaps() -> None:
    fig = load()
    rows = [{"time": t, "cpu": 0.1} for t in (0, 60, 120, 180, 240)] + [{"cpu": 1.0}]
    assert [r["time"] for r in fig.during(rows, 90, 150)] == [60, 120]
    assert fig.during(rows, 1000, 1030) == []
    assert fig.mean([1.0, 2.0]) == 1.5 and fig.mean([]) is None


def test_first_saturated_names_the_host_cpu_then_the_busiest_container() -> None:
    fig = load()
    used = {"psa-all-in-one": {"node": 30.0, "postgres": 15.0, "beam.smp": 3.0, "x": 1.0}}
    words = fig.first_saturated({"pve1": 97.0}, {"psa-all-in-one": (1.9, 20.0)}, used, 30.0)
    assert words == ("host CPU (pve1 CPU 97%); busiest container psa-all-in-one (1.63 cores: node 1.00, "
                     "postgres 0.50, beam.smp 0.10)")
    memory = fig.first_saturated({"pve1": 40.0}, {"psa-es-1": (0.2, 95.0), "psa-app": (0.5, 30.0)},
                                 {"psa-es-1": {"python3": 3.0}, "psa-app": {"node": 12.0}}, 30.0)
    assert memory == "psa-es-1 memory 95%; busiest container psa-app (0.40 cores: node 0.40)"
    assert fig.first_saturated({"pve1": None}, {}, {}, 30.0) == "nothing measured"
