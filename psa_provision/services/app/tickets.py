"""The drill's tickets read back from the app's tables on the PostgreSQL leader, and what psql's answer
says (pure).

A drill's tickets are titled `drill <run> <n>` (drill/writer.py). The bundled app's tickets service
(data/psa-platform/services/tickets/src/index.ts) answers 201 once a ticket's INSERT is committed, then
publishes `ticket.created` on psa.events with message id `ticket.created:<id>` and waits for the
broker's publisher confirm; only a confirmed publish sets `tickets.published_at = now()` (a failed or
timed-out confirm leaves it NULL and the sweeper publishes the ticket again later, same message id).
billing (services/billing/src/index.ts) consumes queue billing.ticket-events and records each message
once in `billing_ticket_events (message_id PRIMARY KEY, routing_key, ticket_id, received_at)`.
So a ticket whose published_at is set and whose message id billing has not recorded is a confirmed
publish that billing has not seen (lost, once billing has had time to drain its queue).
"""

from __future__ import annotations

import re
import shlex
from collections import Counter
from dataclasses import dataclass

from ..postgresql import DATABASE

ROUTING_KEY = "ticket.created"
# psql on the leader, read-only; the SQL arrives on stdin, rows tab-separated, NULL as "".
SCRIPT = (f"cd / && runuser -u postgres -- env PGOPTIONS='-c default_transaction_read_only=on' "
          f"psql -XAtq -v ON_ERROR_STOP=1 -F $'\\t' -d {shlex.quote(DATABASE)} -f -")


@dataclass(frozen=True)
class TicketEvent:
    """One row of the drill's tickets: id, title, created_at and published_at (seconds since the epoch on
    the database's clock; published None: no confirm recorded), and whether billing recorded its
    `ticket.created` message."""

    id: int
    title: str
    created: float
    published: float | None
    billed: bool


def _titles(run: str) -> str:
    """The LIKE pattern of a run's titles; a run is the drill's own lowercase hex token."""
    if not re.fullmatch(r"[0-9a-z]+", run):
        raise ValueError(f"a drill's run is lowercase letters and digits, not {run!r}")
    return f"drill {run} %"


def held_sql(run: str) -> str:
    """Title -> rows of the run's tickets."""
    titles = _titles(run)
    return f"SELECT title, count(*) FROM tickets WHERE title LIKE '{titles}' GROUP BY title;\n"  # noqa: S608


def parse_held(output: str) -> Counter[str]:
    """held_sql's answer (`title<TAB>rows` lines)."""
    held: Counter[str] = Counter()
    for line in output.splitlines():
        title, _, n = line.rpartition("\t")
        if title and n.isdigit():
            held[title] = int(n)
    return held


def events_sql(run: str) -> str:
    """Per ticket of the run: id, created_at, published_at (epoch seconds, "" when NULL), billed (t/f),
    title. billing's row is looked up by its primary key, the message id tickets publishes with."""
    key, titles = ROUTING_KEY, _titles(run)  # S608: a constant and a checked run reach this SQL, no input
    return (f"SELECT t.id, extract(epoch FROM t.created_at), extract(epoch FROM t.published_at),"  # noqa: S608
            f"       EXISTS (SELECT 1 FROM billing_ticket_events e\n"
            f"                WHERE e.message_id = '{key}:' || t.id AND e.routing_key = '{key}'),\n"
            f"       t.title\n"
            f"  FROM tickets t WHERE t.title LIKE '{titles}' ORDER BY t.id;\n")


def parse_events(output: str) -> list[TicketEvent]:
    """events_sql's answer; a line that is not a row (a psql notice) is skipped."""
    rows: list[TicketEvent] = []
    for line in output.splitlines():
        parts = line.split("\t", 4)
        if len(parts) != 5 or not parts[0].isdigit() or parts[3] not in ("t", "f"):
            continue
        try:
            created = float(parts[1])
            published = float(parts[2]) if parts[2] else None
        except ValueError:
            continue
        rows.append(TicketEvent(int(parts[0]), parts[4], created, published, parts[3] == "t"))
    return rows
