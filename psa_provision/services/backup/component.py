"""The backup container's desired state: the pgBackRest repository host and the sets directory."""

from __future__ import annotations

from ...changes import Change, Noop
from ...facts import GuestFacts
from ..common import command
from ..context import HostContext
from ..pgbackrest.component import repository
from . import COMPONENT, ROOT, SETS_DIR


def plan(ctx: HostContext, facts: GuestFacts) -> list[Change]:
    out = repository(ctx, facts, COMPONENT)
    have = [facts.dirs.get(d) for d in (ROOT, SETS_DIR)]
    if all(d is not None and (d.mode, d.owner) == (0o700, "root") for d in have):
        out.append(Noop(ctx.host, COMPONENT, f"{SETS_DIR} in place"))
    else:
        out.append(command(ctx, COMPONENT, f"directory {SETS_DIR} (0700 root): the other stores' sets",
                           f"install -d -m 0700 -o root -g root {ROOT} {SETS_DIR}\n"))
    return out
