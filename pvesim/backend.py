"""The contract between the API layer (server/handlers/tasks) and what really runs containers.

The API layer owns PVE configs (etc/pve/nodes/<node>/lxc/<vmid>.conf, parsed as dict[str, str]
with PVE's keys: hostname, cores, memory, swap, rootfs, net0, nameserver, features,
unprivileged, onboot, ostype, arch, digest is computed, not stored) and calls the backend from
inside task workers. Every backend method is blocking and may raise BackendError, whose text
becomes the task's exitstatus (`TASK ERROR: <text>`). `log` appends one line to the task log.

LxcBackend in lxc.py implements this on real LXC (container name = vmid, lxcpath /var/lib/lxc).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

Log = Callable[[str], None]


class BackendError(Exception):
    """A failure that ends a task in error; str(e) is the task's error text."""


@dataclass(frozen=True)
class RuntimeStatus:
    """What `status/current` needs from the running container."""

    status: str  # "running" | "stopped"
    pid: int | None = None
    uptime: int = 0  # seconds
    cpu: float = 0.0  # fraction of one core, recent
    mem: int = 0  # bytes used (cgroup)
    maxmem: int = 0  # bytes (limit)
    swap: int = 0
    maxswap: int = 0
    disk: int = 0  # bytes used in rootfs
    netin: int = 0
    netout: int = 0
    cputime: float = 0.0  # seconds of CPU used since the container started (a counter)
    diskread: int = 0  # bytes read by the container's block I/O (a counter)
    diskwrite: int = 0


class Backend(Protocol):
    def create(self, vmid: int, conf: Mapping[str, str], template: Path, ssh_public_keys: str | None,
               log: Log) -> None:
        """`pct create`: extract template (shift ids when unprivileged=1), write LXC config and
        guest files (network/interfaces, hosts, hostname, resolv.conf, authorized_keys)."""

    def update(self, vmid: int, conf: Mapping[str, str], log: Log) -> None:
        """Regenerate LXC config + guest files from conf; apply live limits (memory, swap, cores)
        to a running container's cgroup where Proxmox would hot-plug them."""

    def start(self, vmid: int, log: Log) -> None: ...

    def stop(self, vmid: int, log: Log) -> None:
        """Hard stop (pct stop)."""

    def shutdown(self, vmid: int, timeout: int, log: Log) -> None:
        """Clean shutdown, then hard stop after timeout (pct shutdown --forceStop)."""

    def destroy(self, vmid: int, log: Log) -> None:
        """Remove the LXC container, its volume and its snapshots."""

    def status(self, vmid: int) -> RuntimeStatus: ...

    def is_running(self, vmid: int) -> bool:
        """status(vmid).status == "running", without the figures (the HA manager asks every second)."""

    def interfaces(self, vmid: int) -> list[dict[str, str]]:
        """[{name, hwaddr, inet, inet6}] as GET .../interfaces returns."""

    def snapshot(self, vmid: int, name: str, log: Log) -> None:
        """Copy the rootfs (consistent: freeze a running container while copying)."""

    def rollback(self, vmid: int, name: str, log: Log) -> None:
        """Restore the rootfs from the snapshot (container stopped first, as pct does)."""

    def delete_snapshot(self, vmid: int, name: str, log: Log) -> None: ...

    def resize(self, vmid: int, disk: str, size_bytes: int, log: Log) -> None: ...

    def exists(self, vmid: int) -> bool: ...

    def suspend_copy(self, vmid: int, conf: Mapping[str, str], target: Path, excludes: list[str],
                     log: Log) -> None:
        """vzdump's suspend mode: rsync the running guest's rootfs to target, a first pass live and a
        final one with the guest frozen, logged as VZDump/LXC.pm does (`starting first sync ...`)."""

    def archive(self, vmid: int, conf: Mapping[str, str], mode: str, tmpdir: Path, target: Path,
                compress: list[str] | None, excludes: list[str], log: Log) -> None:
        """vzdump's archive step: tar (| compress) > target of the rootfs, ids as the guest sees them,
        with tmpdir's ./etc/vzdump/pct.conf and pct.fw first. mode `snapshot`: from the copy taken
        by snapshot(vmid, "vzdump"); `suspend`: from tmpdir/rootfs, which suspend_copy filled;
        `stop`: the volume itself (the caller stopped the guest)."""

    def restore(self, vmid: int, conf: Mapping[str, str], archive: Path, log: Log) -> None:
        """`pct restore`'s disk part: a fresh volume for conf's rootfs, the archive unpacked into it
        (in the guest's id namespace when unprivileged=1), then the LXC config and guest files."""
