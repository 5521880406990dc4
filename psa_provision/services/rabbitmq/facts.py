"""RabbitMQ's part of the facts probe: users with their tags and the permissions on vhost / (from
`rabbitmqctl export_definitions`, password hashes blanked on the guest)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from ..parse import dicts, json_object
from . import UNIT, VHOST


@dataclass(frozen=True)
class RabbitFacts:
    users: dict[str, frozenset[str]] = field(default_factory=dict)  # name -> tags
    permissions: dict[tuple[str, str], tuple[str, str, str]] = field(default_factory=dict)  # (vhost,user)


# RabbitMQ's definitions (users with tags, permissions: one Erlang VM start) without the password hashes
_NO_HASH = r's/"password_hash":"[^"]*"/"password_hash":""/g'
# Started early on fd 4 (an Erlang VM boots slowly); READ puts it into the document.
START = f"""rabbit=""
if command -v rabbitmqctl >/dev/null && systemctl is-active -q {UNIT} 2>/dev/null; then
  rabbit=1
  exec 4< <(rabbitmqctl -q export_definitions - --format json 2>/dev/null | sed {shlex.quote(_NO_HASH)} | b64)
fi
"""
READ = """if [ -n "$rabbit" ]; then
  printf ',"rabbitmq":"%s"' "$(cat <&4)"
  exec 4<&-
fi
"""


def parse(text: str) -> RabbitFacts:
    """`rabbitmqctl export_definitions`: users with their tags (a list, or a string like `[a,b]` from older
    releases) and the permissions on vhost /."""
    doc = json_object(text)
    users: dict[str, frozenset[str]] = {}
    for u in dicts(doc.get("users")):
        tags = u.get("tags", [])
        if isinstance(tags, str):
            tags = [t for t in tags.strip("[]").replace(",", " ").split() if t]
        users[str(u["name"])] = frozenset(str(t) for t in tags)
    perms = {(VHOST, str(p["user"])): (str(p["configure"]), str(p["write"]), str(p["read"]))
             for p in dicts(doc.get("permissions")) if p.get("vhost") == VHOST}
    return RabbitFacts(users, perms)
