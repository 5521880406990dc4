"""What verify holds Redis to: the seed's `maxmemory 2gb` (for a 64 GB system), scaled to the
container's memory (floor 64mb), or the inventory's tuning as written."""

from __future__ import annotations

SEED_MEMORY_MB = 65536
SEED_MAXMEMORY_MB = 2048
FLOOR_MB = 64


def maxmemory(override: str | None, memory_mb: int) -> str:
    if override:
        return override
    mb = max(FLOOR_MB, round(SEED_MAXMEMORY_MB * memory_mb / SEED_MEMORY_MB))
    return f"{mb // 1024}gb" if mb % 1024 == 0 else f"{mb}mb"
