"""HAProxy's `show stat` (CSV from the stats socket) and the verdict on it: every backend server UP. Pure.

The first line is the header, `# pxname,svname,qcur,...`; each further line is one frontend, backend or
server (svname FRONTEND / BACKEND, else the server's name); `status` is UP, DOWN, MAINT, `UP 1/2`
(going down), `DOWN 1/2` (going up), no check...
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping


def parse(text: str) -> list[dict[str, str]]:
    """Rows of `show stat` as dicts keyed by the header's field names."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("# "):
        raise ValueError(f"not HAProxy `show stat` output: {text[:80]!r}")
    header = lines[0][2:].split(",")
    return [dict(zip(header, row, strict=False)) for row in csv.reader(lines[1:])]


def servers(rows: Iterable[Mapping[str, str]]) -> dict[str, dict[str, str]]:
    """backend -> {server: status} (FRONTEND and BACKEND summary rows left out)."""
    out: dict[str, dict[str, str]] = {}
    for row in rows:
        if row.get("svname") in ("FRONTEND", "BACKEND"):
            continue
        out.setdefault(row["pxname"], {})[row["svname"]] = row.get("status", "")
    return out


def problems(rows: Iterable[Mapping[str, str]], expected: Mapping[str, Iterable[str]]) -> list[str]:
    """Why not every expected server of every expected backend is UP (empty when all are)."""
    found = servers(rows)
    out: list[str] = []
    for backend, names in sorted(expected.items()):
        have = found.get(backend)
        if have is None:
            out.append(f"backend {backend} is not configured")
            continue
        for name in sorted(names):
            status = have.get(name)
            if status is None:
                out.append(f"{backend}/{name} is not configured")
            elif status != "UP":
                out.append(f"{backend}/{name} is {status}")
    return out
