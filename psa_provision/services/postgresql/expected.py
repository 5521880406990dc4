"""What verify holds PostgreSQL to: the seed's settings ("Install PostgreSQL", for a 64 GB system).

Data, not the renderer: the memory settings are the seed's values scaled to the container's memory
(a 32 GiB container gets half of each), whole MB, within the tool's stated floor and cap; a value
the inventory's tuning sets is expected as written there.
"""

from __future__ import annotations

from typing import Any

SEED_MEMORY_MB = 65536  # the seed's container 200: 64 GB
SEED: dict[str, str] = {
    "max_connections": "200",
    "shared_buffers": "4GB",
    "effective_cache_size": "12GB",
    "maintenance_work_mem": "1GB",
    "work_mem": "20MB",
    "random_page_cost": "1.1",
    "effective_io_concurrency": "200",
}
SEED_PORT = "5432"
# memory settings: (seed MB at 64 GiB, floor MB, cap MB or None)
MEMORY: dict[str, tuple[int, int, int | None]] = {
    "shared_buffers": (4096, 128, None),
    "effective_cache_size": (12288, 256, None),
    "maintenance_work_mem": (1024, 64, 2048),
    "work_mem": (20, 4, None),
}


def _mb_text(mb: int) -> str:
    return f"{mb // 1024}GB" if mb % 1024 == 0 and mb >= 1024 else f"{mb}MB"


def scaled(name: str, memory_mb: int) -> str:
    """The seed's value of a memory setting for a container of `memory_mb` (to the whole MB)."""
    seed, floor, cap = MEMORY[name]
    mb = max(floor, round(seed * memory_mb / SEED_MEMORY_MB))
    return _mb_text(min(cap, mb) if cap is not None else mb)


def expected(tuning: Any, memory_mb: int, listen: str) -> dict[str, str]:
    """Setting -> value `SHOW` must answer (memory values compared in bytes, to the MB).

    listen: where clients reach the server from this container (127.0.0.1 when only local apps do).
    """
    out = {"listen_addresses": "localhost" if listen == "127.0.0.1" else f"{listen},localhost",
           "port": SEED_PORT, **SEED}
    out.update({name: scaled(name, memory_mb) for name in MEMORY})
    for name in ("max_connections", *MEMORY):
        override = getattr(tuning, name, None)
        if override:
            out[name] = str(override)
    return out
