"""RabbitMQ's part of the facts probe: users with their tags and the permissions on vhost / (from
`rabbitmqctl export_definitions`, password hashes blanked on the guest)."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field

from ..parse import dicts, json_object
from . import UNIT, VHOST


@dataclass(frozen=True)
class ClusterStatus:
    """`rabbitmqctl cluster_status` of a member, and the quorum queues' members (`list_queues`)."""

    nodes: tuple[str, ...] = ()  # disk nodes: the cluster's members
    running: tuple[str, ...] = ()
    partitions: dict[str, tuple[str, ...]] = field(default_factory=dict)
    queues: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)  # name -> (type, members)
    queues_error: str = ""  # list_queues answered no JSON (e.g. its 60 s timeout): the queues are unknown


@dataclass(frozen=True)
class RabbitFacts:
    users: dict[str, frozenset[str]] = field(default_factory=dict)  # name -> tags
    permissions: dict[tuple[str, str], tuple[str, str, str]] = field(default_factory=dict)  # (vhost,user)
    cluster: ClusterStatus | None = None  # asked of cluster members only


# RabbitMQ's definitions (users with tags, permissions: one Erlang VM start) without the password hashes
_NO_HASH = r's/"password_hash":"[^"]*"/"password_hash":""/g'
# Started early on fd 4 (an Erlang VM boots slowly); READ puts it into the document.
START = f"""rabbit=""
if command -v rabbitmqctl >/dev/null && systemctl is-active -q {UNIT} 2>/dev/null; then
  rabbit=1
  exec 4< <(rabbitmqctl -q export_definitions - --format json 2>/dev/null | sed {shlex.quote(_NO_HASH)} | b64)
fi
"""
# Members of a cluster: the cluster's state and the queues' types and members, on fd 5 beside fd 4.
CLUSTER_START = """if [ -n "$rabbit" ]; then
  exec 5< <( { rabbitmqctl -q cluster_status --formatter json </dev/null 2>/dev/null | tr -d '\\n'
             echo
             rabbitmqctl -q list_queues name type members --formatter json </dev/null 2>/dev/null |
               tr -d '\\n'
           } | b64)
fi
"""
CLUSTER_READ = """if [ -n "$rabbit" ]; then
  printf ',"rabbitmq_cluster":"%s"' "$(cat <&5)"
  exec 5<&-
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


def _names(value: object) -> tuple[str, ...]:
    return tuple(sorted(str(v) for v in value)) if isinstance(value, list) else ()


def parse_cluster(text: str) -> ClusterStatus:
    """`cluster_status --formatter json` on the first line, `list_queues name type members --formatter
    json` after it (a classic queue's members are empty)."""
    first, _, rest = text.strip().partition("\n")
    status = json_object(first)
    parts = status.get("partitions")
    partitions = {str(k): _names(v) for k, v in parts.items()} if isinstance(parts, dict) else {}
    queues: dict[str, tuple[str, tuple[str, ...]]] = {}
    error = ""
    if rest.strip():
        try:
            listed = json.loads(rest)
        except ValueError:  # a timeout prints an Elixir term after the rows: a member's facts still count
            error = "list_queues did not answer in JSON: " + " ".join(rest.split())[-160:]
            listed = []
        for q in dicts(listed):
            queues[str(q.get("name"))] = (str(q.get("type", "classic")), _names(q.get("members")))
    return ClusterStatus(_names(status.get("disk_nodes")), _names(status.get("running_nodes")),
                         {k: v for k, v in partitions.items() if v}, queues, error)
