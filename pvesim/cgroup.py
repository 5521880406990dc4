"""The host's cgroup layout and a running container's cgroup files (limits live, usage for status).

Layouts, as PVE::CGroup::cgroup_mode tells them apart by what is mounted on /sys/fs/cgroup:
- unified: cgroup2 on /sys/fs/cgroup (Debian 12, Proxmox VE >= 7): limits are cgroup v2 files;
- hybrid: a tmpfs with v1 controllers under /sys/fs/cgroup/<controller> and cgroup2 (controllers
  bound to v1, so none for limits) on /sys/fs/cgroup/unified: limits are cgroup v1 files;
- legacy: v1 controllers only: limits are cgroup v1 files.
pve-container picks the version per controller (PVE::LXC::update_lxc_config); on the layouts
systemd sets up, memory, cpu and cpuset all sit in the one version the layout names.

The container's cgroup is lxc's default payload cgroup, `lxc.payload.<vmid>`, at the top of each
hierarchy (the LXC config sets neither lxc.cgroup.dir.* nor lxc.cgroup.relative, and lxc run as
root leaves its own cgroup for the root one): /sys/fs/cgroup/<controller>/lxc.payload.<vmid>/ on
v1, /sys/fs/cgroup/lxc.payload.<vmid>/ on unified. (pve-container's own layout is lxc/<vmid>.)
When that name is still taken at start (a cgroup an earlier stop could not remove: on a hybrid
host the guest's systemd leaves sub-cgroups behind), lxc takes `lxc.payload.<vmid>-1`, `-2`, ...
So the name is never built from the vmid alone: PVE asks the running container's LXC monitor for
its path (PVE::LXC::Command::get_cgroup_path); here its init's /proc/<pid>/cgroup tells it.
Live writes follow PVE::CGroup's change_memory_limit, change_cpu_quota and change_cpu_shares.
Usage is PVE::CGroup::get_memory_stat's: the memory in use without the page cache (memory.stat's
`file` on v2, `total_cache` on v1), swap beside it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pvesim import guestconf

Layout = Literal["unified", "hybrid", "legacy"]
CGROUP_ROOT = Path("/sys/fs/cgroup")
PAYLOAD = "lxc.payload.{vmid}"
# what PVE::CGroup writes when a setting is deleted (change_cpu_quota(undef), change_cpu_shares(undef))
LIVE_DEFAULTS = {1: {"cpu.cfs_quota_us": "-1", "cpu.shares": "1024"},
                 2: {"cpu.max": "max", "cpu.weight": "100"}}


def payload_name(vmid: int, proc_cgroup: str | None) -> str:
    """Container `vmid`'s cgroup directory as its init's /proc/<pid>/cgroup names it (the first
    component of a hierarchy's path: `lxc.payload.<vmid>` or `lxc.payload.<vmid>-N`); the plain name
    when that text is not at hand (the container does not run)."""
    own = re.compile(rf"lxc\.payload\.{vmid}(?:-\d+)?")
    for line in (proc_cgroup or "").splitlines():
        first = line.split(":", 2)[-1].lstrip("/").split("/", 1)[0]
        if own.fullmatch(first):
            return first
    return PAYLOAD.format(vmid=vmid)


class CgroupError(RuntimeError):
    """The host's cgroup layout cannot be told from its mounts."""


def detect_layout(mounts: str, root: str = str(CGROUP_ROOT)) -> Layout:
    """unified, hybrid or legacy from /proc/self/mounts text (the last mount on a path wins)."""
    fstypes: dict[str, str] = {}
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) >= 3:
            fstypes[fields[1]] = fields[2]
    if fstypes.get(root) == "cgroup2":
        return "unified"
    below = [fstype for path, fstype in fstypes.items() if path.startswith(f"{root}/")]
    if "cgroup" not in below:
        raise CgroupError(f"no cgroup hierarchy is mounted on {root}; hint: boot with systemd, "
                          "which mounts it")
    return "hybrid" if "cgroup2" in below else "legacy"


def version(layout: Layout) -> int:
    """The cgroup version that holds memory, cpu and cpuset on this layout."""
    return 2 if layout == "unified" else 1


def live_writes(limits: Mapping[str, str], cgroup: int,
                current: Callable[[str], str | None]) -> list[tuple[str, str]]:
    """(file, value) in the order to write them to change a running container's limits.

    v2 (PVE::CGroup::change_memory_limit): memory.swap.max, memory.high, then memory.max.
    v1: memory.limit_in_bytes may never exceed memory.memsw.limit_in_bytes, so a growing memory
    limit raises memsw first. A setting absent from `limits` goes back to the kernel's default,
    as a deleted cpulimit or cpuunits does in PVE (LIVE_DEFAULTS).
    """
    values = dict(limits)
    for key, default in LIVE_DEFAULTS[cgroup].items():
        values.setdefault(key, default)
    order = list(values)
    if cgroup == 2:
        memory = [key for key in ("memory.swap.max", "memory.high", "memory.max") if key in values]
        order = memory + [key for key in order if key not in memory]
    elif "memory.memsw.limit_in_bytes" in values and int(values["memory.limit_in_bytes"]) > int(
            current("memory.limit_in_bytes") or 0):
        order.remove("memory.memsw.limit_in_bytes")
        order.insert(0, "memory.memsw.limit_in_bytes")
    return [(key, values[key]) for key in order]


def config_maxima(lxc_config: str) -> tuple[int, int]:
    """(maxmem, maxswap) in bytes from a generated LXC config, either version's keys."""
    values: dict[str, str] = {}
    for line in lxc_config.splitlines():
        key, sep, value = line.partition(" = ")
        if sep and key.startswith("lxc.cgroup"):
            values[key.split(".", 2)[2]] = value.strip()
    if "memory.max" in values:
        return int(values["memory.max"]), int(values.get("memory.swap.max", "0"))
    maxmem = int(values.get("memory.limit_in_bytes", "0"))
    return maxmem, max(0, int(values.get("memory.memsw.limit_in_bytes", "0")) - maxmem)


def flat_keyed(text: str) -> dict[str, str]:
    """A cgroup 'flat keyed' file (cpu.stat, memory.stat): 'key value' per line."""
    pairs = (line.split(None, 1) for line in text.splitlines())
    return {pair[0]: pair[1].strip() for pair in pairs if len(pair) == 2}


@dataclass(frozen=True)
class Usage:
    """What a running container uses: memory and swap in bytes, CPU time in nanoseconds, bytes read
    from and written to block devices."""

    mem: int
    swap: int
    cpu_ns: int
    io_read: int = 0
    io_written: int = 0


@dataclass(frozen=True)
class Cgroups:
    """The cgroup files of this host's containers, for its layout."""

    layout: Layout
    root: Path = CGROUP_ROOT
    proc: Path = Path("/proc")

    @classmethod
    def of_host(cls, mounts: Path = Path("/proc/self/mounts"), root: Path = CGROUP_ROOT) -> Cgroups:
        return cls(detect_layout(mounts.read_text(), str(root)), root)

    @property
    def version(self) -> int:
        return version(self.layout)

    def caps(self) -> guestconf.HostCaps:
        """What the host offers for the generated limits (swap accounting, CPUs, cgroup version)."""
        if self.version == 2:  # the root cgroup has no memory.swap.max; its children have it
            memsw = any(self.root.glob("*/memory.swap.max"))
        else:
            memsw = (self.root / "memory" / "memory.memsw.limit_in_bytes").exists()
        return guestconf.HostCaps(memsw=memsw, cpus=os.cpu_count() or 1, cgroup=self.version)

    def payload(self, vmid: int, pid: int | None) -> str:
        """The cgroup directory of container `vmid` whose init is `pid` (payload_name): read once by a
        caller and handed to the methods below (None there: the plain name)."""
        text = None
        if pid is not None:
            try:
                text = (self.proc / str(pid) / "cgroup").read_text()
            except OSError:
                text = None
        return payload_name(vmid, text)

    def path(self, vmid: int, key: str, payload: str | None = None) -> Path:
        """The file `key` (memory.max, cpuset.cpus ...) of container `vmid`'s cgroup `payload`."""
        payload = payload or PAYLOAD.format(vmid=vmid)
        if self.version == 2:
            return self.root / payload / key
        return self.root / key.split(".", 1)[0] / payload / key

    def read(self, vmid: int, key: str, payload: str | None = None) -> str | None:
        """A cgroup file's content, None when it cannot be read (the container is not running)."""
        try:
            return self.path(vmid, key, payload).read_text().strip()
        except OSError:
            return None

    def write(self, vmid: int, key: str, value: str, payload: str | None = None) -> None:
        self.path(vmid, key, payload).write_text(value)

    def writes(self, vmid: int, limits: Mapping[str, str],
               payload: str | None = None) -> list[tuple[str, str]]:
        """live_writes for container `vmid`, reading its current values where the order needs them."""
        return live_writes(limits, self.version, lambda key: self.read(vmid, key, payload))

    def usage(self, vmid: int, payload: str | None = None) -> Usage:
        """Memory, swap and CPU time used by container `vmid` (its cgroup `payload`), as PVE::CGroup's
        get_memory_stat reads them: v2 memory.current less memory.stat's `file`, memory.swap.current,
        cpu.stat's usage_usec; v1 memory.usage_in_bytes less memory.stat's `total_cache`, memsw minus
        usage, cpuacct.usage."""
        def read(key: str) -> str | None:
            return self.read(vmid, key, payload)

        stat = flat_keyed(read("memory.stat") or "")
        if self.version == 2:
            mem = int(read("memory.current") or 0)
            swap = int(read("memory.swap.current") or 0)
            cpu_us = flat_keyed(read("cpu.stat") or "").get("usage_usec", "0")
            return Usage(max(0, mem - int(stat.get("file", "0"))), swap, int(cpu_us) * 1000,
                         *io_stat_bytes(read("io.stat")))
        mem = int(read("memory.usage_in_bytes") or 0)
        memsw = int(read("memory.memsw.usage_in_bytes") or mem)
        return Usage(max(0, mem - int(stat.get("total_cache", "0"))), max(0, memsw - mem),
                     int(read("cpuacct.usage") or 0),
                     *blkio_bytes(read("blkio.throttle.io_service_bytes_recursive")))

def blkio_bytes(text: str | None) -> tuple[int, int]:
    """(read, written) bytes from blkio.throttle.io_service_bytes_recursive, summed over devices
    (PVE/CGroup.pm get_io_stats, cgroup v1: the `<major>:<minor> Read|Write <bytes>` lines)."""
    read = written = 0
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2].isdigit():
            if parts[1] == "Read":
                read += int(parts[2])
            elif parts[1] == "Write":
                written += int(parts[2])
    return read, written


def io_stat_bytes(text: str | None) -> tuple[int, int]:
    """(read, written) bytes from cgroup v2 io.stat, summed over devices (PVE/CGroup.pm get_io_stats,
    cgroup v2: `<major>:<minor> rbytes=N wbytes=N rios=N ...` lines)."""
    read = written = 0
    for line in (text or "").splitlines():
        fields = dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)
        read += int(fields.get("rbytes", "0") or 0)
        written += int(fields.get("wbytes", "0") or 0)
    return read, written
