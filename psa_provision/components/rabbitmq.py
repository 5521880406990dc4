"""rabbitmq on a guest (stub: filled in next)."""

from __future__ import annotations

from ..facts import GuestFacts
from ..plan import Change
from .context import HostContext

COMPONENT = "rabbitmq"


def plan(ctx: HostContext, facts: GuestFacts) -> list[Change]:
    """Changes that bring rabbitmq on this guest to the wanted state (Noops when converged)."""
    return []
