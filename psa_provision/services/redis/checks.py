"""Redis's verify checks (seed: "Install Redis"): unit, auth required, FLUSH* renamed away, AOF, maxmemory,
loopback. The password reaches redis-cli on stdin (REDISCLI_AUTH), never argv."""

from __future__ import annotations

from typing import Any

import pytest

from psa_provision.suites.checks import assert_running_and_enabled, listening_ports, loopback_only, size_bytes

REDIS_AUTH = 'REDISCLI_AUTH="$(cat)" redis-cli -h 127.0.0.1 --no-auth-warning'
MB = 1024**2

@pytest.mark.component("redis")
def test_redis_running_and_enabled(host: Any) -> None:
    assert_running_and_enabled(host, "redis-server")


@pytest.mark.component("redis")
def test_redis_requires_auth(host: Any) -> None:
    out = host.run("redis-cli -h 127.0.0.1 PING").stdout.strip()
    assert out.startswith("NOAUTH"), f"unauthenticated PING answered {out!r}, expected NOAUTH"


@pytest.mark.component("redis")
def test_redis_password_works(run_stdin: Any, secrets: Any) -> None:
    result = run_stdin(f"{REDIS_AUTH} PING", secrets.get("redis.password").value)
    assert result.stdout.strip() == "PONG", f"PING with the password answered {result.stdout.strip()!r}"


@pytest.mark.component("redis")
@pytest.mark.parametrize("command", ["FLUSHALL", "FLUSHDB"])
def test_redis_flush_commands_unavailable(run_stdin: Any, secrets: Any, command: str) -> None:
    # COMMAND INFO asks without running it: an unknown (renamed-away) command yields an empty reply.
    result = run_stdin(f"{REDIS_AUTH} COMMAND INFO {command}", secrets.get("redis.password").value)
    assert result.returncode == 0, f"COMMAND INFO failed: {result.stdout.strip()} {result.stderr.strip()}"
    assert result.stdout.strip() == "", f"{command} is still available"


@pytest.mark.component("redis")
def test_redis_aof_on_and_bound_to_loopback(run_stdin: Any, secrets: Any, host: Any,
                                            expected: dict[str, Any]) -> None:
    result = run_stdin(f"{REDIS_AUTH} CONFIG GET appendonly", secrets.get("redis.password").value)
    assert result.stdout.split() == ["appendonly", "yes"], f"CONFIG GET appendonly: {result.stdout.split()}"
    sockets = listening_ports(host.socket.get_listening_sockets(), 6379)
    also = expected.get("listen", "127.0.0.1")
    assert sockets and loopback_only(sockets, also), f"redis listens on {sockets or 'nothing'}"


@pytest.mark.component("redis")
def test_redis_maxmemory_is_the_seeds(run_stdin: Any, secrets: Any, expected: dict[str, Any]) -> None:
    # The seed's `maxmemory 2gb` at 64 GB, scaled to the container (services/redis/expected.py).
    want = expected.get("redis", {}).get("maxmemory")
    assert want, "no seed Redis maxmemory in the verify context"
    result = run_stdin(f"{REDIS_AUTH} CONFIG GET maxmemory", secrets.get("redis.password").value)
    found = result.stdout.split()
    assert len(found) == 2 and found[1].isdigit(), f"CONFIG GET maxmemory: {found}"
    assert abs(int(found[1]) - size_bytes(want)) < MB, f"maxmemory is {found[1]} bytes, the seed's is {want}"
