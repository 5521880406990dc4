"""keepalived's `psa-provision health` probe (its unit is active) and the pair's verdict across its
members: the VIP on exactly one load balancer (vip.py), from each one's `ip -o -4 addr show` gathered
with its health probe (services/members.py)."""

from __future__ import annotations

from ...phases import Phase
from ..members import MemberFacts, unanswered
from . import UNIT, vip
from .config import vip as phase_vip

PROBE = f"probe keepalived systemctl is-active {UNIT}"
FACTS = f"fact addresses {vip.ADDRESSES}"


def cluster_verdict(phase: Phase, members: list[MemberFacts]) -> tuple[bool, str]:
    """The phase's VIP on exactly one member; a member that does not answer is a problem too (it may
    hold the VIP as well, and a pair with one member down has no spare)."""
    want = phase_vip(phase)
    outputs = {m.hostname: m.text("addresses") for m in members if not m.absent and m.code("addresses") == 0}
    silent = unanswered(members, "addresses")
    holder = vip.sole_holder(outputs, want) if outputs else None
    if not silent and holder is not None:
        return True, f"VIP {want} on {holder} only"
    found = [*silent]
    if outputs and holder is None:
        found.append(vip.problem(outputs, want))
    elif holder is not None:
        found.append(f"VIP {want} on {holder}")
    return False, "; ".join(found)
