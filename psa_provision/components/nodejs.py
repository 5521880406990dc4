"""Node.js 20 (NodeSource's apt repository, or the sandbox's) and PM2 installed globally with npm."""

from __future__ import annotations

from ..facts import GuestFacts
from ..plan import Change, Noop
from .catalog import KEYRINGS
from .common import apt_repo, changed, command, install, proxy_env
from .context import HostContext

COMPONENT = "nodejs"
KEYRING = f"{KEYRINGS}/nodesource.asc"
LIST = "/etc/apt/sources.list.d/nodesource.list"
PM2_VERSION = "5"


def plan(ctx: HostContext, facts: GuestFacts) -> list[Change]:
    repo = apt_repo(ctx, facts, COMPONENT, ctx.inventory.packages.nodejs, keyring=KEYRING, list_file=LIST)
    out: list[Change] = [*repo, *install(ctx, facts, COMPONENT, ("nodejs",), refresh=changed(repo))]
    if "pm2" in facts.npm_globals:
        out.append(Noop(ctx.host, COMPONENT, "pm2 installed"))
    else:
        out.append(command(ctx, COMPONENT, f"npm install -g pm2@{PM2_VERSION}",
                           proxy_env(ctx) + f"npm install -g --no-fund --no-audit pm2@{PM2_VERSION}\n"))
    return out
