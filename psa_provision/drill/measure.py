"""What a drill's client saw, from its record of attempts and what the stores hold after healing (pure).

An attempt is one write as the client made it: its unique key (the ticket's title, the Redis key), when
it was sent and answered, and whether it was acknowledged. A write retried after an error keeps its key,
so a key found twice in the store is a duplicate (the first try committed although the client saw an
error), and an acknowledged key not found is a lost write. The Redis writer does not retry: each of
its writes has a key of its own, and only an acknowledged one is looked for afterwards.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from psa_provision.drill.kinds import Kind

REDIS_STORES = ("redis-wait", "redis-nowait")  # Attempt.store of the Redis writer's writes
REDIS_LABELS = (("with_wait", "with WAIT"), ("without_wait", "without WAIT"))  # JSON key, table words


@dataclass(frozen=True)
class Attempt:
    """One try of one write: key, sent and answered (seconds since the drill started), acknowledged."""

    key: str
    sent: float
    answered: float
    acked: bool
    store: str = "postgresql"  # postgresql (tickets), redis-wait, redis-nowait


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

    @property
    def passed(self) -> bool:
        """The loss targets (times are reported against their targets, never judged here)."""
        return not self.lost and self.healed

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "target": self.target, "fault_at_s": round(self.fault_at, 2),
                "restored_at_s": None if self.restored_at is None else round(self.restored_at, 2),
                "attempts": self.attempts, "acknowledged": self.acked,
                "first_ok_after_fault_s": _r(self.first_ok_after_fault_s),
                "longest_error_window_s": round(self.longest_error_window_s, 2),
                "resume_target_s": self.resume_target_s,
                "acknowledged_lost": len(self.lost), "lost_keys": self.lost[:50],
                "duplicates": len(self.duplicates), "duplicate_keys": self.duplicates[:50],
                "redis_lost": self.redis_lost, "healed": self.healed, "heal_s": _r(self.heal_s),
                "passed": self.passed, "notes": self.notes}

    def rows(self) -> list[list[str]]:
        def s(v: float | None) -> str:
            return "-" if v is None else f"{v:.1f} s"
        out = [["target", self.target],
               ["first successful write after the fault", f"{s(self.first_ok_after_fault_s)} "
                                                          f"(target <= {self.resume_target_s:.0f} s)"],
               ["longest client error window", s(self.longest_error_window_s)],
               ["acknowledged writes", str(self.acked)],
               ["acknowledged writes lost", str(len(self.lost))],
               ["duplicates", str(len(self.duplicates))]]
        for label, how in REDIS_LABELS:
            if label in self.redis_lost:
                r = self.redis_lost[label]
                out.append([f"Redis writes lost {how}",
                            f"{r['lost']} of {r['acknowledged']} acknowledged ({r['attempts']} attempts)"])
        out.append(["healed", f"yes, {s(self.heal_s)}" if self.healed else "NO"])
        return out


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


def measure(kind: Kind, target: str, attempts: list[Attempt], held: Counter[str], fault_at: float,
            restored_at: float | None, redis_held: set[str] | None = None) -> Measured:
    """Every figure of one drill. `held`: ticket key -> rows found after healing; `redis_held`: the
    Redis keys the healed primary holds (None: no Redis writer ran)."""
    tickets = [a for a in attempts if a.store == "postgresql"]
    lost, dupes = lost_and_duplicates(tickets, held)
    redis_lost = redis_losses(attempts, redis_held) if redis_held is not None else {}
    return Measured(kind.name, target, fault_at, restored_at, len(tickets), sum(a.acked for a in tickets),
                    first_ok_after(tickets, fault_at), longest_error_window(tickets), lost, dupes,
                    redis_lost, kind.resume_target_s)

