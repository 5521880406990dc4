"""keepalived's desired state on a load balancer of the pair: the package, keepalived.conf (holding the
VRRP password: root-only), the unit running; a changed file reloads keepalived (SIGHUP: the VIP stays
where it is unless the new configuration moves it)."""

from __future__ import annotations

from ...changes import Change
from ...facts import GuestFacts
from ..common import install, put_file, restart_needed, service
from ..context import HostContext
from . import COMPONENT, CONF, PACKAGES, SECRET, UNIT
from .config import conf_content


def plan(ctx: HostContext, facts: GuestFacts) -> list[Change]:
    out: list[Change] = [*install(ctx, facts, COMPONENT, PACKAGES)]
    content = conf_content(ctx.phase, ctx.container, ctx.secrets.get(SECRET))
    conf = put_file(ctx, facts, COMPONENT, CONF, content, mode=0o600)
    out.append(conf)
    out += service(ctx, facts, COMPONENT, UNIT, reload=restart_needed(facts, UNIT, [conf], [CONF]))
    return out
