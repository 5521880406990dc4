"""Redis 7 (Debian 12's redis-server): full redis.conf with requirepass, maxmemory, AOF + RDB."""

from __future__ import annotations

from ...changes import Change
from ...facts import GuestFacts
from ...render import render
from ..common import install, put_file, restart_needed, service
from ..context import HostContext
from . import COMPONENT, CONF, PACKAGES, SECRET, TEMPLATES, UNIT


def maxmemory(ctx: HostContext) -> str:
    """Inventory override, else 1/32 of the container's memory (2gb at 64 GiB, the seed's value)."""
    override = ctx.inventory.tuning.redis.maxmemory
    if override:
        return override
    mb = max(64, ctx.container.memory_mb // 32)
    return f"{mb // 1024}gb" if mb % 1024 == 0 else f"{mb}mb"


def content(ctx: HostContext) -> str:
    bind = ctx.listen_address()
    bind = "127.0.0.1" if bind == "127.0.0.1" else f"{bind} 127.0.0.1"
    return render(TEMPLATES[CONF], bind=bind, password=conf_word(ctx.secrets.get(SECRET).value),
                  maxmemory=maxmemory(ctx))


def conf_word(value: str) -> str:
    """One redis.conf argument: as is when plain, else double-quoted with \\, \\" and \\xHH escapes.

    Redis splits config lines like a shell (sdssplitargs): whitespace ends a word and a quote starts a
    quoted section, so a password holding either must be quoted to reach Redis whole.
    """
    if value and not any(c.isspace() or c in "\"'" or not c.isprintable() for c in value):
        return value
    out = []
    for c in value:
        if c in "\\\"":
            out.append("\\" + c)
        elif c == " " or (c.isprintable() and c.isascii() and not c.isspace()):
            out.append(c)
        else:
            out.extend(f"\\x{b:02x}" for b in c.encode())
    return '"' + "".join(out) + '"'


def plan(ctx: HostContext, facts: GuestFacts) -> list[Change]:
    out: list[Change] = [*install(ctx, facts, COMPONENT, PACKAGES)]
    conf = put_file(ctx, facts, COMPONENT, CONF, content(ctx), mode=0o640, owner="redis", group="redis")
    out.append(conf)
    restart = restart_needed(facts, UNIT, [conf], [CONF])
    out.extend(service(ctx, facts, COMPONENT, UNIT, restart=restart))
    return out
