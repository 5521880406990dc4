"""HAProxy's desired state on a load balancer: the package, haproxy.cfg from the phase, the unit
running; a changed haproxy.cfg reloads HAProxy (Debian's unit checks the file first, and a reload
keeps established connections)."""

from __future__ import annotations

from ...changes import Change
from ...facts import GuestFacts
from ..common import install, put_file, restart_needed, service
from ..context import HostContext
from . import COMPONENT, CONF, PACKAGES, UNIT
from .config import conf_content


def plan(ctx: HostContext, facts: GuestFacts) -> list[Change]:
    out: list[Change] = [*install(ctx, facts, COMPONENT, PACKAGES)]
    conf = put_file(ctx, facts, COMPONENT, CONF, conf_content(ctx.phase))
    out.append(conf)
    out += service(ctx, facts, COMPONENT, UNIT, reload=restart_needed(facts, UNIT, [conf], [CONF]))
    return out
