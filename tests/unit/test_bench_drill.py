"""bench/drill_figure.py: one drill's JSON as the bench table's figure, the target beside its own time."""

from __future__ import annotations

import json
from collections import Counter

import bench_scripts

from psa_provision.drill.kinds import parse_kind
from psa_provision.drill.measure import Attempt, measure
from psa_provision.services.app.tickets import TicketEvent

drill_figure = bench_scripts.load("drill_figure")


def as_json(kind: str) -> dict[str, object]:
    """A drill's JSON as `drill --json-file` writes it: 2 tickets, the database clock 1000 s ahead, the
    second ticket's event confirmed 3 s after the fault at 10 and never billed."""
    attempts = [Attempt("drill r 1", 1.0, 1.2, True), Attempt("drill r 2", 10.5, 13.5, True)]
    events = [TicketEvent(1, "drill r 1", 1001.1, 1001.3, True),
              TicketEvent(2, "drill r 2", 1012.0, 1013.0, False)]
    result = measure(parse_kind(kind), "x", attempts, Counter({"drill r 1": 1, "drill r 2": 1}), 10.0, 40.0,
                     events=events)
    result.healed, result.heal_s = True, 20.0
    loaded: dict[str, object] = json.loads(json.dumps(result.as_dict()))
    return loaded


def test_the_rabbitmq_node_figure_puts_its_target_beside_publishing() -> None:
    # confirms at 1.3 and 13.0 on the drill's clock, writing ended at 13.5: the longest stretch ending
    # after the fault is 1.3 -> 13.0 = 11.7 s
    text = drill_figure.figure(parse_kind("rabbitmq-node"), as_json("rabbitmq-node"))
    assert "writes resumed 3.5 s, " in text
    assert "publishing resumed 11.7 s (target <= 10 s), 1 of 2 confirmed publishes lost" in text


def test_a_writes_drill_puts_its_target_beside_the_writes() -> None:
    text = drill_figure.figure(parse_kind("postgresql-primary"), as_json("postgresql-primary"))
    assert "writes resumed 3.5 s (target <= 30 s)" in text and "publishing resumed 11.7 s, " in text
