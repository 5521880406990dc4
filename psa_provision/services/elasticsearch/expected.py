"""What verify holds Elasticsearch to: the seed's cluster name and heap (`-Xms4g -Xmx4g` "for 64GB
system"), the heap scaled to the container's memory (floor 256m, cap 31g: Elastic's compressed-oops
limit), or the inventory's tuning as written; a cluster's members (seed, phase 3: "Elasticsearch cluster
(3 nodes)")."""

from __future__ import annotations

SEED_CLUSTER_NAME = "psa-platform"
SEED_MEMORY_MB = 65536
SEED_HEAP_MB = 4096
FLOOR_MB = 256
CAP_MB = 31 * 1024


def heap(override: str | None, memory_mb: int) -> str:
    if override:
        return override
    mb = min(CAP_MB, max(FLOOR_MB, round(SEED_HEAP_MB * memory_mb / SEED_MEMORY_MB)))
    return f"{mb // 1024}g" if mb % 1024 == 0 else f"{mb}m"


def expected(override: str | None, memory_mb: int, members: list[str] | None = None) -> dict[str, object]:
    """`members`: the hostnames of a cluster's containers (phase 3); the seed asks for 3 nodes, each
    index with a replica, health green."""
    out: dict[str, object] = {"cluster_name": SEED_CLUSTER_NAME, "heap": heap(override, memory_mb)}
    if members and len(members) > 1:
        out["members"] = sorted(members)
    return out
