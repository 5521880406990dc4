"""Redis's `psa-provision health` probe: an authenticated PING answers PONG.

The password comes on the probe script's stdin ($REDIS_PASSWORD); export is a shell builtin, so it
never becomes a process argument (env VAR=... would).
"""

PROBE = 'export REDISCLI_AUTH="$REDIS_PASSWORD"; probe redis redis-cli -h 127.0.0.1 --no-auth-warning PING'


def judge(code: int, detail: str) -> tuple[bool, str]:
    return detail == "PONG", "PING answered PONG" if detail == "PONG" else f"PING answered {detail!r}"
