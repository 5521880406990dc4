"""Elasticsearch's `psa-provision health` probe: /_cluster/health answers green or yellow."""

from __future__ import annotations

import re

from . import PORT

PROBE = f"probe elasticsearch curl -sS --max-time 10 http://127.0.0.1:{PORT}/_cluster/health"
HEALTHY = ("green", "yellow")  # yellow: a single node holds no replica, as the seed's setup has it


def judge(code: int, detail: str) -> tuple[bool, str] | None:
    """The cluster status when curl succeeded; None (the default judgement) when it failed."""
    if code != 0:
        return None
    m = re.search(r'"status"\s*:\s*"(\w+)"', detail)
    if m is None:
        return False, f"/_cluster/health has no status: {detail[:80]}"
    return m.group(1) in HEALTHY, f"cluster status {m.group(1)}"
