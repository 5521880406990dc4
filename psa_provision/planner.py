"""The guest plan: every component of a container, in install order, as one Plan (pure)."""

from __future__ import annotations

from collections.abc import Callable

from .components import app, base, elasticsearch, nodejs, postgresql, rabbitmq, redis, scripts
from .components.context import Bundle, HostContext, build_context
from .facts import GuestFacts
from .plan import Change, Plan

__all__ = ["Bundle", "HostContext", "build_context", "plan_guest"]

Planner = Callable[[HostContext, GuestFacts], list[Change]]
ORDER: tuple[tuple[str, Planner], ...] = (
    ("base", base.plan),
    ("postgresql", postgresql.plan),
    ("redis", redis.plan),
    ("rabbitmq", rabbitmq.plan),
    ("elasticsearch", elasticsearch.plan),
    ("nodejs", nodejs.plan),
    ("app", app.plan),
    ("scripts", scripts.plan),
)


def plan_guest(ctx: HostContext, facts: GuestFacts) -> Plan:
    """All changes for one guest, base first, scripts last; components the container lacks are skipped."""
    plan = Plan()
    wanted = set(ctx.container.components)
    for name, component_plan in ORDER:
        if name in wanted:
            plan.add(component_plan(ctx, facts))
    return plan
