"""Base of every guest: apt proxy, extra CA certificates, the packages every other component needs."""

from __future__ import annotations

from ...changes import Change, Noop, PutFile
from ...facts import GuestFacts
from ...render import render
from ..common import command, content_changed, install, put_file, service
from ..context import HostContext
from . import APT_PROXY, CA_DIR, COMPONENT, PACKAGES, TEMPLATES, UNITS


def plan(ctx: HostContext, facts: GuestFacts) -> list[Change]:
    """Proxy conf first (apt needs it), then base packages, then CA files + update-ca-certificates."""
    pk = ctx.inventory.packages
    out: list[Change] = []
    if pk.proxy:
        out.append(put_file(ctx, facts, COMPONENT, APT_PROXY,
                            render(TEMPLATES[APT_PROXY], proxy=pk.proxy, no_proxy=pk.no_proxy)))
    else:
        out.append(Noop(ctx.host, COMPONENT, "no package proxy configured"))
    out += install(ctx, facts, COMPONENT, PACKAGES)
    cas = [put_file(ctx, facts, COMPONENT, f"{CA_DIR}/{name}", pem) for name, pem in ctx.extra_cas]
    out.extend(cas)
    if content_changed(facts, cas):
        files = " ".join(c.path for c in cas if isinstance(c, PutFile))
        out.append(command(ctx, COMPONENT, f"update-ca-certificates ({files})", "update-ca-certificates\n"))
    out.extend(service(ctx, facts, COMPONENT, UNITS[0]))
    return out
