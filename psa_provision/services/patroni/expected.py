"""What verify holds Patroni and etcd members to: the phase file's membership (data, not the renderer)."""

from __future__ import annotations

from typing import Any

from . import listen_addresses, patroni_managed


def expected(phase: Any, container: Any) -> dict[str, Any]:
    """`patroni`: the cluster's member names (container hostnames) and this member's address;
    `etcd`: the etcd cluster's member names. Keys only for the components the container runs."""
    out: dict[str, Any] = {}
    if patroni_managed(container.components, container.cluster):
        names = [c.hostname for c in phase.containers if patroni_managed(c.components, c.cluster)]
        out["patroni"] = {"members": names, "ip": container.ip,
                          "listen_addresses": listen_addresses(container.ip)}
    if "etcd" in container.components:
        out["etcd"] = {"members": [c.hostname for c in phase.with_component("etcd")]}
    return out
