"""What a drill's client saw, from its record of attempts and what the stores hold after healing (pure).

An attempt is one write as the client made it: its unique key (the ticket's title, the Redis key), when
it was sent and answered, and whether it was acknowledged. A write retried after an error keeps its key,
so a key found twice in the store is a duplicate (the first try committed although the client saw an
error), and an acknowledged key not found is a lost write. The Redis writer does not retry: each of
its writes has a key of its own, and only an acknowledged one is looked for afterwards.

RabbitMQ, from the drill's tickets as the database holds them after healing (services/app/tickets.py):
a ticket's `ticket.created` event is confirmed when its published_at is set (the tickets service sets it
only after the broker's publisher confirm, by its first publish or a sweeper's republish), and billed
when billing recorded its message. Every row of the run counts, acknowledged to the client or not.
- confirmed publishes lost: confirmed and not billed, once billing had time to drain its queue.
- publishing resumes in (`resumed_s`): the longest time without any confirm among the stretches that end
  after the fault, from the last confirm at or before the fault (or the fault itself, when none came
  before it) to the next, and from the last confirm to the writer's last answer (a stop not over when
  writing ended). Only confirms up to that last answer count: later ones are the sweeper's, with no
  tickets being written around them. None when no confirm came after the fault while writing. A
  longest gap, not the first confirm after the fault, because that first confirm may be one the member
  gave just before its stop took effect, as the README says of writes; `first_confirm_after_fault_s`
  (from the fault to the first confirm of a ticket created after it) is reported beside it. While no
  ticket can be written (PostgreSQL's drills) nothing is published either: the gap then includes the
  write outage.
- published_at and created_at are on the database's clock; they are put on the drill's clock by the
  median, over the tickets acknowledged and held once, of created_at minus the middle of the try that
  created it (created_at is the INSERT's transaction start, inside that try): exact to about half a
  request's time, whatever the two clocks' difference.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from statistics import median
from typing import Any

from psa_provision.drill.kinds import Kind
from psa_provision.services.app.tickets import TicketEvent

REDIS_STORES = ("redis-wait", "redis-nowait")  # Attempt.store of the Redis writer's writes
MOST_ERRORS = 5  # kinds of client error a drill reports
REDIS_LABELS = (("with_wait", "with WAIT"), ("without_wait", "without WAIT"))  # JSON key, table words


@dataclass(frozen=True)
class Attempt:
    """One try of one write: key, sent and answered (seconds since the drill started), acknowledged."""

    key: str
    sent: float
    answered: float
    acked: bool
    store: str = "postgresql"  # postgresql (tickets), redis-wait, redis-nowait
    error: str = ""  # what the client saw when not acknowledged (writer.error_of)


@dataclass(frozen=True)
class Publishing:
    """RabbitMQ's figures of one drill: confirmed publishes, those billing never recorded (ticket ids),
    the times (seconds; None: not measured, see the module's docstring), and how long the drill waited
    for billing to drain before counting."""

    confirmed: int
    lost: list[int]
    resumed_s: float | None
    first_confirm_after_fault_s: float | None
    billing_waited_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"confirmed": self.confirmed, "confirmed_lost": len(self.lost), "lost_ids": self.lost[:50],
                "resumed_s": _r(self.resumed_s),
                "first_confirm_after_fault_s": _r(self.first_confirm_after_fault_s),
                "billing_waited_s": round(self.billing_waited_s, 1)}


@dataclass
class Measured:
    """A drill's figures; JSON through as_dict()."""

    kind: str
    target: str
    fault_at: float
    restored_at: float | None
    attempts: int
    acked: int
    first_ok_after_fault_s: float | None
    longest_error_window_s: float
    lost: list[str]
    duplicates: list[str]
    # with_wait / without_wait -> attempts, acknowledged, lost, lost_keys (empty: no Redis writer read)
    redis_lost: dict[str, dict[str, Any]] = field(default_factory=dict)
    resume_target_s: float = 0.0
    healed: bool = False
    heal_s: float | None = None
    notes: list[str] = field(default_factory=list)
    rabbitmq: Publishing | None = None  # None: the tickets' events could not be read
    resume_target_of: str = "writes"  # Kind.resume_target_of
    vip_moved_s: float | None = None  # lb-active: from the fault until the other load balancer held the VIP
    client_errors: list[dict[str, Any]] = field(default_factory=list)  # what failed writes saw

    @property
    def passed(self) -> bool:
        """The loss targets (times are reported against their targets, never judged here): no acknowledged
        write and no confirmed publish lost, healed; `rabbitmq-node` also needs its publishes counted."""
        counted = self.resume_target_of != "publishing" if self.rabbitmq is None else not self.rabbitmq.lost
        return not self.lost and self.healed and counted

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "target": self.target, "fault_at_s": round(self.fault_at, 2),
                "restored_at_s": None if self.restored_at is None else round(self.restored_at, 2),
                "attempts": self.attempts, "acknowledged": self.acked,
                "first_ok_after_fault_s": _r(self.first_ok_after_fault_s),
                "longest_error_window_s": round(self.longest_error_window_s, 2),
                "resume_target_s": self.resume_target_s, "resume_target_of": self.resume_target_of,
                "acknowledged_lost": len(self.lost), "lost_keys": self.lost[:50],
                "duplicates": len(self.duplicates), "duplicate_keys": self.duplicates[:50],
                "redis_lost": self.redis_lost,
                "rabbitmq": None if self.rabbitmq is None else self.rabbitmq.as_dict(),
                "vip_moved_s": _r(self.vip_moved_s),
                "healed": self.healed, "heal_s": _r(self.heal_s),
                "client_errors": self.client_errors, "passed": self.passed, "notes": self.notes}

    def rows(self) -> list[list[str]]:
        def s(v: float | None) -> str:
            return "-" if v is None else f"{v:.1f} s"
        def target(of: str) -> str:
            return f" (target <= {self.resume_target_s:.0f} s)" if self.resume_target_of == of else ""
        out = [["target", self.target],
               ["first successful write after the fault",
                f"{s(self.first_ok_after_fault_s)}{target('writes')}"],
               ["longest client error window", s(self.longest_error_window_s)],
               *([["the VIP moved to the other load balancer", f"{s(self.vip_moved_s)}{target('vip')}"]]
                 if self.resume_target_of == "vip" else []),
               ["acknowledged writes", str(self.acked)],
               ["acknowledged writes lost", str(len(self.lost))],
               ["duplicates", str(len(self.duplicates))],
               *([["what failed writes saw (count, from-to s)",
                   "\n".join(f"{e['count']} x {e['error']} ({e['first_s']:.0f}-{e['last_s']:.0f} s)"
                             for e in self.client_errors)]] if self.client_errors else [])]
        for label, how in REDIS_LABELS:
            if label in self.redis_lost:
                r = self.redis_lost[label]
                out.append([f"Redis writes lost {how}",
                            f"{r['lost']} of {r['acknowledged']} acknowledged ({r['attempts']} attempts)"])
        p = self.rabbitmq
        if p is None:
            out.append(["RabbitMQ confirmed publishes lost", "not counted (see the notes)"])
        else:
            out += [["RabbitMQ publishing resumes (longest time without a confirm)",
                     f"{s(p.resumed_s)}{target('publishing')}"],
                    ["first RabbitMQ confirm after the fault", s(p.first_confirm_after_fault_s)],
                    ["RabbitMQ confirmed publishes lost",
                     f"{len(p.lost)} of {p.confirmed} confirmed "
                     f"(billing read after {p.billing_waited_s:.0f} s)"]]
        out.append(["healed", f"yes, {s(self.heal_s)}" if self.healed else "NO"])
        return out


def client_errors(attempts: Iterable[Attempt], most: int = MOST_ERRORS) -> list[dict[str, Any]]:
    """The failed writes grouped by what their client saw, most frequent first: error, count, and when
    the first and last were sent (seconds since the drill started)."""
    seen: dict[str, dict[str, Any]] = {}
    for a in attempts:
        if a.acked:
            continue
        e = seen.setdefault(a.error or "unknown", {"error": a.error or "unknown", "count": 0,
                                                   "first_s": round(a.sent, 2), "last_s": round(a.sent, 2)})
        e["count"] += 1
        e["last_s"] = round(a.sent, 2)
    return sorted(seen.values(), key=lambda e: (-e["count"], e["first_s"]))[:most]


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 2)


def first_ok_after(attempts: Iterable[Attempt], fault_at: float) -> float | None:
    """Seconds from the fault to the first acknowledged write sent after it (None: none came)."""
    oks = [a.answered for a in attempts if a.acked and a.sent >= fault_at]
    return min(oks) - fault_at if oks else None


def longest_error_window(attempts: Iterable[Attempt]) -> float:
    """The longest time between two acknowledged writes during which at least one attempt failed: what
    a client saw as the platform being down (0 when no attempt failed)."""
    ordered = sorted(attempts, key=lambda a: a.answered)
    if not ordered:
        return 0.0
    longest = 0.0
    last_ok = ordered[0].sent
    failed = False
    for a in ordered:
        if a.acked:
            if failed:
                longest = max(longest, a.answered - last_ok)
            last_ok, failed = a.answered, False
        else:
            failed = True
    if failed:
        longest = max(longest, ordered[-1].answered - last_ok)
    return longest


def redis_losses(attempts: Iterable[Attempt], held: set[str]) -> dict[str, dict[str, Any]]:
    """Per Redis store (with_wait, without_wait): attempts, keys acknowledged, acknowledged keys the
    healed primary does not hold (lost; the first 50 of them as lost_keys)."""
    out: dict[str, dict[str, Any]] = {}
    listed = list(attempts)
    for (label, _), store in zip(REDIS_LABELS, REDIS_STORES, strict=True):
        mine = [a for a in listed if a.store == store]
        acked = {a.key for a in mine if a.acked}
        lost = sorted(acked - held)
        out[label] = {"attempts": len(mine), "acknowledged": len(acked), "lost": len(lost),
                      "lost_keys": lost[:50]}
    return out


def lost_and_duplicates(attempts: Iterable[Attempt], held: Counter[str]) -> tuple[list[str], list[str]]:
    """(acknowledged keys the store does not hold, keys the store holds more than once), sorted."""
    acked = {a.key for a in attempts if a.acked}
    return sorted(k for k in acked if held[k] == 0), sorted(k for k, n in held.items() if n > 1)


def confirmed_lost(events: Iterable[TicketEvent]) -> list[int]:
    """Ids of the tickets whose event RabbitMQ confirmed (published_at set) and billing did not record."""
    return sorted(e.id for e in events if e.published is not None and not e.billed)


def database_clock(attempts: Iterable[Attempt], events: Iterable[TicketEvent]) -> float | None:
    """The database's clock minus the drill's, in seconds: the median over the tickets acknowledged and
    held once of created_at minus the middle of the acknowledged try; None when no ticket tells."""
    listed = list(events)
    rows = Counter(e.title for e in listed)
    created = {e.title: e.created for e in listed if rows[e.title] == 1}
    offsets = [created[a.key] - (a.sent + a.answered) / 2 for a in attempts if a.acked and a.key in created]
    return median(offsets) if offsets else None


def longest_publish_gap(confirms: Iterable[float], fault_at: float, writes_end: float) -> float | None:
    """The longest time without a confirm among the stretches ending after the fault (drill clock), the
    open one from the last confirm to `writes_end` included; confirms after `writes_end` do not count.
    None when no confirm came after the fault by then."""
    times = sorted(t for t in confirms if t <= writes_end)
    after = [t for t in times if t > fault_at]
    if not after:
        return None
    prev = max((t for t in times if t <= fault_at), default=fault_at)
    longest = 0.0
    for t in after:
        longest, prev = max(longest, t - prev), t
    return max(longest, writes_end - prev)


def publishing(attempts: Iterable[Attempt], events: list[TicketEvent], fault_at: float,
               billing_waited_s: float = 0.0) -> Publishing:
    """RabbitMQ's figures from the run's tickets; the ticket writer's `attempts` put the database's
    times on the drill's clock."""
    tickets = [a for a in attempts if a.store == "postgresql"]
    lost = confirmed_lost(events)
    confirmed = [(e.created, e.published) for e in events if e.published is not None]
    offset = database_clock(tickets, events)
    if offset is None:
        return Publishing(len(confirmed), lost, None, None, billing_waited_s)
    writes_end = max(a.answered for a in tickets)
    confirms = [published - offset for _, published in confirmed]
    after = [published - offset for created, published in confirmed if created - offset >= fault_at]
    return Publishing(len(confirmed), lost, longest_publish_gap(confirms, fault_at, writes_end),
                      min(after) - fault_at if after else None, billing_waited_s)


def measure(kind: Kind, target: str, attempts: list[Attempt], held: Counter[str], fault_at: float,
            restored_at: float | None, redis_held: set[str] | None = None,
            events: list[TicketEvent] | None = None, billing_waited_s: float = 0.0) -> Measured:
    """Every figure of one drill. `held`: ticket key -> rows found after healing; `redis_held`: the
    Redis keys the healed primary holds (None: no Redis writer ran); `events`: the run's tickets with
    their publish and billing state, read after `billing_waited_s` of waiting (None: not read)."""
    tickets = [a for a in attempts if a.store == "postgresql"]
    lost, dupes = lost_and_duplicates(tickets, held)
    redis_lost = redis_losses(attempts, redis_held) if redis_held is not None else {}
    rabbitmq = publishing(tickets, events, fault_at, billing_waited_s) if events is not None else None
    return Measured(kind.name, target, fault_at, restored_at, len(tickets), sum(a.acked for a in tickets),
                    first_ok_after(tickets, fault_at), longest_error_window(tickets), lost, dupes,
                    redis_lost, kind.resume_target_s, rabbitmq=rabbitmq,
                    resume_target_of=kind.resume_target_of, client_errors=client_errors(tickets))

