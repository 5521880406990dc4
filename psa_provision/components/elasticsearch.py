"""elasticsearch on a guest (stub: filled in next)."""

from __future__ import annotations

from ..facts import GuestFacts
from ..plan import Change
from .context import HostContext

COMPONENT = "elasticsearch"


def plan(ctx: HostContext, facts: GuestFacts) -> list[Change]:
    """Changes that bring elasticsearch on this guest to the wanted state (Noops when converged)."""
    return []
