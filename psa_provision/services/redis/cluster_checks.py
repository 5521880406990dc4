"""Redis's phase-3 verify checks, on each member of the replicated set: its Sentinel names a primary
that really is one and serves every other member as a replica, and reaches the quorum. Run on every
member, they hold all Sentinels to the same primary (only one Redis can have both others as replicas).
Passwords reach redis-cli on stdin (REDISCLI_AUTH), never argv."""

from __future__ import annotations

import shlex
from typing import Any

import pytest

from . import MASTER_NAME, MIN_REPLICAS_TO_WRITE, SENTINEL_PORT

AUTH = 'REDISCLI_AUTH="$(cat)" redis-cli --no-auth-warning'


def info(text: str) -> dict[str, str]:
    return dict(line.split(":", 1) for line in text.replace("\r", "").splitlines() if ":" in line)


@pytest.mark.component("redis")
def test_sentinel_running_and_enabled(host: Any) -> None:
    service = host.service("redis-sentinel")
    assert service.is_running, "redis-sentinel is not running"
    assert service.is_enabled, "redis-sentinel is not enabled at boot"


@pytest.mark.component("redis")
def test_sentinel_reaches_the_quorum(run_stdin: Any, secrets: Any) -> None:
    out = run_stdin(f"{AUTH} -h 127.0.0.1 -p {SENTINEL_PORT} SENTINEL ckquorum {MASTER_NAME}",
                    secrets.get("redis.password").value).stdout.strip()
    assert out.startswith("OK 3 usable Sentinels"), f"SENTINEL ckquorum: {out!r}"


@pytest.mark.component("redis")
def test_sentinels_primary_is_primary_with_every_replica(run_stdin: Any, secrets: Any, container: Any,
                                                         ctx: dict[str, Any]) -> None:
    password = secrets.get("redis.password").value
    addr = run_stdin(f"{AUTH} -h 127.0.0.1 -p {SENTINEL_PORT} SENTINEL get-master-addr-by-name {MASTER_NAME}",
                     password).stdout.split()
    assert len(addr) == 2, f"the Sentinel names no primary: {addr}"
    members = sorted(c["ip"] for c in ctx["containers"].values()
                     if c.get("cluster") == container.get("cluster") and "redis" in c["components"])
    assert addr[0] in members, f"the Sentinel's primary {addr[0]} is not a member ({members})"
    primary = info(run_stdin(f"{AUTH} -h {shlex.quote(addr[0])} INFO replication", password).stdout)
    assert primary.get("role") == "master", f"{addr[0]} has role {primary.get('role')}"
    online = [v for k, v in primary.items() if k.startswith("slave") and "state=online" in v]
    assert len(online) == len(members) - 1, f"{addr[0]} serves {len(online)} replicas online: {online}"
    assert int(primary.get("min_slaves_good_slaves", "0")) >= MIN_REPLICAS_TO_WRITE, primary


@pytest.mark.component("redis")
def test_member_follows_the_sentinels_primary(run_stdin: Any, secrets: Any, container: Any) -> None:
    password = secrets.get("redis.password").value
    addr = run_stdin(f"{AUTH} -h 127.0.0.1 -p {SENTINEL_PORT} SENTINEL get-master-addr-by-name {MASTER_NAME}",
                     password).stdout.split()
    own = info(run_stdin(f"{AUTH} -h 127.0.0.1 INFO replication", password).stdout)
    if addr and addr[0] == container["ip"]:
        assert own.get("role") == "master", f"the Sentinels' primary has role {own.get('role')}"
    else:
        assert (own.get("role"), own.get("master_host"), own.get("master_link_status")) == (
            "slave", addr[0] if addr else "?", "up"), f"replication: {own}"
