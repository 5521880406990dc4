"""Who is the Redis primary: pure functions over the phase file and one guest's live facts.

The desired state of a replicated set (phase 3) is "a primary elected by Sentinel", not "the first
container is primary": after a failover the tool keeps the primary Sentinel chose. Only a set that
never ran (no Sentinel answer, no replica following anyone) starts with the phase's first member.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from ...phases import ContainerSpec, Phase
from . import COMPONENT, passwords


@dataclass(frozen=True)
class RedisFacts:
    """The live replication state of one guest's Redis and its Sentinel ("" / 0: not known)."""

    role: str = ""  # "master" or "slave" (INFO replication)
    master_host: str = ""
    link_up: bool = False
    connected_replicas: int = 0
    sentinel_master: str = ""  # SENTINEL get-master-addr-by-name: the primary's address
    config: dict[str, str] = field(default_factory=dict)  # CONFIG GET of the settings the tool owns
    # each password line of redis.conf / sentinel.conf as a digest (passwords.py), read whether or not
    # the units run
    passwords: dict[str, str] = field(default_factory=dict)


def members(phase: Phase, spec: ContainerSpec) -> list[ContainerSpec]:
    """The replicated set `spec` belongs to (its `cluster` in the phase file), in phase order;
    [] for a standalone Redis (no cluster)."""
    if spec.cluster is None or COMPONENT not in spec.components:
        return []
    return [c for c in phase.containers if c.cluster == spec.cluster and COMPONENT in c.components]


def replicated(phase: Phase, spec: ContainerSpec) -> bool:
    return len(members(phase, spec)) > 1


def current_primary(phase: Phase, spec: ContainerSpec, redis: RedisFacts | None) -> str:
    """The primary's address as this guest sees it: its Sentinel's answer, else the primary its Redis
    follows, else itself if it serves replicas, else the phase's first member (a set never started)."""
    ips = {c.ip for c in members(phase, spec)}
    first = members(phase, spec)[0].ip
    if redis is not None:
        if redis.sentinel_master in ips:
            return redis.sentinel_master
        if redis.role == "slave" and redis.master_host in ips:
            return redis.master_host
        if redis.role == "master" and redis.connected_replicas > 0:
            return spec.ip
    return first


# The live settings a replicated member is held to (CONFIG GET names).
OWNED_LIVE = ("bind", "maxmemory", "appendonly", "min-replicas-to-write", "min-replicas-max-lag")
MARK_CONFIG, MARK_SENTINEL = "@@config", "@@sentinel"


def probe(conf: str, sentinel_conf: str, unit: str, sentinel_unit: str, name: str) -> str:
    """bash adding `"redis": <base64>` to the facts document: INFO replication, CONFIG GET of the owned
    settings and the local Sentinel's primary while Redis runs, then the digests of the passwords in
    both files. The password is read on the guest from the config files (root only) into
    REDISCLI_AUTH, never into argv or the facts."""
    q = shlex.quote
    return f"""if [ -f {q(conf)} ] || [ -f {q(sentinel_conf)} ]; then
  redis="$( (
    {passwords.CONF_VALUE.rstrip().replace(chr(10), chr(10) + '    ')}
    if command -v redis-cli >/dev/null && systemctl is-active -q {unit} 2>/dev/null; then
      REDISCLI_AUTH="$(conf_value {q(conf)} requirepass)"; export REDISCLI_AUTH
      timeout 5 redis-cli -h 127.0.0.1 --no-auth-warning INFO replication 2>/dev/null
      echo {MARK_CONFIG}
      timeout 5 redis-cli -h 127.0.0.1 --no-auth-warning CONFIG GET {' '.join(OWNED_LIVE)} 2>/dev/null
      if systemctl is-active -q {sentinel_unit} 2>/dev/null; then
        REDISCLI_AUTH="$(conf_value {q(sentinel_conf)} requirepass)"
        echo {MARK_SENTINEL}
        timeout 5 redis-cli -p 26379 --no-auth-warning SENTINEL get-master-addr-by-name {q(name)} 2>/dev/null
      fi
    fi
    {passwords.probe().rstrip().replace(chr(10), chr(10) + '    ')}
  ) | b64)"
  printf ',"redis":"%s"' "$redis"
fi
"""


def parse(text: str) -> RedisFacts:
    """The probe's output: INFO replication lines, then CONFIG GET name/value lines, then Sentinel's
    address/port lines, then the password digests (absent sections: unknown)."""
    text, _, digests = text.replace("\r", "").partition(passwords.MARK)
    info_part, _, rest = text.partition(MARK_CONFIG)
    config_part, _, sentinel_part = rest.partition(MARK_SENTINEL)
    info = dict(line.split(":", 1) for line in info_part.splitlines() if ":" in line)
    words = [line for line in config_part.splitlines()]
    while words and words[0] == "":
        words.pop(0)
    config = dict(zip(words[0::2], words[1::2], strict=False))
    sentinel = [w for w in sentinel_part.split() if w]
    master = sentinel[0] if len(sentinel) == 2 and sentinel[1].isdigit() else ""
    replicas = info.get("connected_slaves", "0")
    return RedisFacts(role=info.get("role", ""), master_host=info.get("master_host", ""),
                      link_up=info.get("master_link_status") == "up",
                      connected_replicas=int(replicas) if replicas.isdigit() else 0,
                      sentinel_master=master, config=config, passwords=passwords.parse(digests))
