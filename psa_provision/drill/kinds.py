"""The drills of phase 3 (issue: "drill phase3 KIND") and the targets each reports against."""

from __future__ import annotations

from dataclasses import dataclass

from psa_provision.errors import InputError


@dataclass(frozen=True)
class Kind:
    """One drill: what it takes down, and the seconds within which what the issue names should resume:
    ticket writes, RabbitMQ publishing for `rabbitmq-node`, the VIP's move to the other load balancer
    for `lb-active` (reported, not asserted: a time on a shared 2-core machine is a measurement, not a
    property)."""

    name: str
    loses: str
    resume_target_s: float
    lost_target: int = 0  # acknowledged writes and confirmed publishes that may be lost: none, every kind
    resume_target_of: str = "writes"  # writes | publishing | vip: the figure resume_target_s is compared with
    # the ticket writes show, while the fault lasts, whether the platform has ridden it out (a ticket is
    # acknowledged only after its commit and its publish's confirm); the Redis writer's figures are read
    # only at the end, so a Redis drill holds its fault for the longest time
    seen_in_tickets: bool = True

    @property
    def longest_hold_s(self) -> float:
        """The longest the fault is held: twice the resume target, at least 30 s."""
        return max(2 * self.resume_target_s, 30.0)


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("postgresql-primary", "the Patroni leader's container", 30.0),
    Kind("redis-primary", "the Redis primary's container (Sentinel promotes a replica)", 15.0,
         seen_in_tickets=False),
    Kind("rabbitmq-node", "one RabbitMQ member's container (not the app's first node)", 10.0,
         resume_target_of="publishing"),
    Kind("lb-active", "the load balancer holding the VIP", 5.0, resume_target_of="vip"),
    Kind("app-container", "the first container of the tickets service", 5.0),
    Kind("node", "a Proxmox node: every container on it", 60.0),
)}


def parse_kind(text: str) -> Kind:
    """The Kind named `text`; InputError naming the choices otherwise."""
    kind = KINDS.get(text.strip().lower())
    if kind is None:
        raise InputError(f"unknown drill {text!r}", hint=f"one of: {', '.join(KINDS)}")
    return kind
