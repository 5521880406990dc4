"""RabbitMQ's part of the facts probe: users with their tags and the permissions on vhost / (the
definitions, password hashes blanked on the guest), and a cluster member's view of its cluster; from
the management API on loopback, or rabbitmqctl when the API does not answer."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field

from ...secrets import Secrets
from ...sensitive import Sensitive
from ..mover import curl_quote
from ..parse import dicts, json_object
from . import ADMIN, ADMIN_SECRET, API, UNIT, VHOST

# the API's view of the cluster (a JSON list each), asked only of a cluster's members
NODES_PATH = "nodes?columns=name,type,running,partitions"
QUEUES_PATH = "queues/%2F?columns=name,type,members"


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


# RabbitMQ's definitions (users with tags, permissions) without the password hashes
_NO_HASH = shlex.quote(r's/"password_hash":[[:space:]]*"[^"]*"/"password_hash":""/g')
# The facts' stdin is one line: the admin's credentials as a curl config line (facts_input), or empty.
# With them the facts come from the management API on loopback, in milliseconds; each rabbitmqctl boots
# an Erlang VM (about half a CPU-second). rabbitmqctl stays the way when the API does not answer (no
# credentials, the plugin not up yet, a password the broker does not have yet): started early on fd 4
# and fd 5, side by side with the other slow probes.
AUTH_READ = "IFS= read -r rabbit_auth || true\n"
START = f"""rabbit="" rabbit_defs=""
rabbit_api() {{ curl -sSf --max-time 10 -K - "{API}/$1" <<<"$rabbit_auth"; }}
if command -v rabbitmqctl >/dev/null && systemctl is-active -q {UNIT} 2>/dev/null; then
  rabbit=1
  if [ -n "$rabbit_auth" ]; then
    rabbit_defs=$(set -o pipefail; rabbit_api definitions | sed {_NO_HASH} | b64) || rabbit_defs=""
  fi
  if [ -z "$rabbit_defs" ]; then
    exec 4< <(rabbitmqctl -q export_definitions - --format json 2>/dev/null | sed {_NO_HASH} | b64)
  fi
fi
"""
# Members of a cluster: the cluster's nodes and the queues' types and members (parse_cluster's two
# lines), from the API when the definitions came from it, else from rabbitmqctl on fd 5.
CLUSTER_START = f"""rabbit_cluster=""
if [ -n "$rabbit_defs" ]; then
  rabbit_cluster=$(set -o pipefail
                   {{ rabbit_api {shlex.quote(NODES_PATH)} | tr -d '\\n' && echo &&
                      rabbit_api {shlex.quote(QUEUES_PATH)} | tr -d '\\n'; }} | b64) || rabbit_cluster=""
fi
if [ -n "$rabbit" ] && [ -z "$rabbit_cluster" ]; then
  exec 5< <( {{ rabbitmqctl -q cluster_status --formatter json </dev/null 2>/dev/null | tr -d '\\n'
             echo
             rabbitmqctl -q list_queues name type members --formatter json </dev/null 2>/dev/null |
               tr -d '\\n'
           }} | b64)
fi
"""
CLUSTER_READ = """if [ -n "$rabbit_cluster" ]; then
  printf ',"rabbitmq_cluster":"%s"' "$rabbit_cluster"
elif [ -n "$rabbit" ]; then
  printf ',"rabbitmq_cluster":"%s"' "$(cat <&5)"
  exec 5<&-
fi
"""
READ = """if [ -n "$rabbit_defs" ]; then
  printf ',"rabbitmq":"%s"' "$rabbit_defs"
elif [ -n "$rabbit" ]; then
  printf ',"rabbitmq":"%s"' "$(cat <&4)"
  exec 4<&-
fi
"""


def facts_input(secrets: Secrets) -> Sensitive:
    """The facts script's stdin: the admin's `user = "admin:…"` curl config line when the secrets hold
    its password (else an empty line: rabbitmqctl answers)."""
    if ADMIN_SECRET not in secrets:
        return Sensitive("\n")
    password = secrets.get(ADMIN_SECRET).value
    return Sensitive(f"user = {curl_quote(f'{ADMIN}:{password}')}\n", [password])


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
    """The cluster's nodes on the first line, the queues of vhost / after it (a classic queue's members
    are empty): `cluster_status --formatter json` and `list_queues name type members --formatter json`,
    or the management API's nodes (NODES_PATH: disc nodes are the members) and queues (QUEUES_PATH)."""
    first, _, rest = text.strip().partition("\n")
    if first.startswith("["):
        listed_nodes = dicts(json.loads(first))
        members = [n for n in listed_nodes if n.get("type", "disc") == "disc"]
        nodes = _names([n.get("name") for n in members])
        running = _names([n.get("name") for n in listed_nodes if n.get("running") is True])
        partitions = {str(n.get("name")): _names(n.get("partitions")) for n in listed_nodes}
    else:
        status = json_object(first)
        parts = status.get("partitions")
        partitions = {str(k): _names(v) for k, v in parts.items()} if isinstance(parts, dict) else {}
        nodes, running = _names(status.get("disk_nodes")), _names(status.get("running_nodes"))
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
    return ClusterStatus(nodes, running, {k: v for k, v in partitions.items() if v}, queues, error)
