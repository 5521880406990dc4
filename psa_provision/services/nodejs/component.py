"""Node.js 20 (NodeSource's apt repository, or the sandbox's) and PM2 installed globally with npm."""

from __future__ import annotations

import shlex

from ...changes import Change, Noop
from ...facts import GuestFacts
from ..common import apt_repo, command, install, proxy_env
from ..context import HostContext
from . import COMPONENT, KEYRING, LIST, PACKAGES, PM2_VERSION


def npm_env(ctx: HostContext) -> str:
    """proxy_env plus the inventory's npm registry (packages.npm_registry, e.g. a caching mirror), and no
    update check (one registry request less per npm command)."""
    registry = ctx.inventory.packages.npm_registry
    lines = "export npm_config_update_notifier=false\n"
    if registry:
        lines += f"export npm_config_registry={shlex.quote(registry)}\n"
    return proxy_env(ctx) + lines


def plan(ctx: HostContext, facts: GuestFacts) -> list[Change]:
    repo = apt_repo(ctx, facts, COMPONENT, ctx.inventory.packages.nodejs, keyring=KEYRING, list_file=LIST)
    out: list[Change] = [*repo, *install(ctx, facts, COMPONENT, PACKAGES)]
    if "pm2" in facts.npm_globals:
        out.append(Noop(ctx.host, COMPONENT, "pm2 installed"))
    else:
        out.append(command(ctx, COMPONENT, f"npm install -g pm2@{PM2_VERSION}",
                           npm_env(ctx) + f"npm install -g --no-fund --no-audit pm2@{PM2_VERSION}\n"))
    return out
