"""The host's figures that pvestatd records for a node every 10 s (PVE/Service/pvestatd.pm
update_node_status): load, CPU and iowait fractions, memory, swap, root filesystem, traffic of the
physical network cards and the pressure stall averages. Every pvesim node is this machine.

Parsing is pure (text in, numbers out); HostReader reads the files and keeps the previous
/proc/stat reading that the CPU fractions need.
"""

from __future__ import annotations

import os
from pathlib import Path

PROC = Path("/proc")
SYS_NET = Path("/sys/class/net")

CpuTimes = tuple[int, int, int]  # (used, total, iowait) jiffies since boot


def cpu_times(proc_stat: str) -> CpuTimes:
    """The `cpu` line of /proc/stat as PVE/ProcFSTools.pm read_proc_stat sums it: used is
    user+nice+system+irq+softirq+steal, total adds idle and iowait (guest time is inside user)."""
    for line in proc_stat.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
            used = user + nice + system + irq + softirq + steal
            return used, used + idle + iowait, iowait
    raise ValueError("no cpu line in /proc/stat")


def cpu_fractions(before: CpuTimes | None, after: CpuTimes) -> tuple[float, float]:
    """(cpu, iowait) as fractions of all the host's CPU time between two readings; (0, 0) for the
    first reading, as read_proc_stat answers before it has a previous one."""
    if before is None or after[1] <= before[1]:
        return 0.0, 0.0
    total = after[1] - before[1]
    return (after[0] - before[0]) / total, (after[2] - before[2]) / total


def memory(meminfo: str) -> dict[str, float]:
    """PVE/ProcFSTools.pm read_meminfo: memused is total - available (the kernel's estimate),
    swapused total - free, arcsize 0 without ZFS."""
    kib = {}
    for line in meminfo.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            kib[name.lower()] = int(parts[0]) * 1024
    total, available = kib.get("memtotal", 0), kib.get("memavailable", kib.get("memfree", 0))
    swaptotal = kib.get("swaptotal", 0)
    return {"memtotal": total, "memused": total - available, "memavailable": available,
            "swaptotal": swaptotal, "swapused": swaptotal - kib.get("swapfree", 0), "arcsize": 0}


def pressure(text: str) -> dict[str, float]:
    """`some` and `full` avg10 of one /proc/pressure file (PVE/ProcFSTools.pm read_pressure)."""
    out = {}
    for line in text.splitlines():
        kind, *pairs = line.split()
        for pair in pairs:
            key, _, value = pair.partition("=")
            if key == "avg10":
                out[kind] = float(value)
    return out


class HostReader:
    """Reads the node's values for the RRD (names as in rrd_def_node_pve9_0)."""

    def __init__(self, proc: Path = PROC, sys_net: Path = SYS_NET) -> None:
        self.proc, self.sys_net = proc, sys_net
        self._cpu: CpuTimes | None = None

    def values(self) -> dict[str, float | None]:
        """One sample of every node source that this machine can answer."""
        times = cpu_times((self.proc / "stat").read_text())
        cpu, iowait = cpu_fractions(self._cpu, times)
        self._cpu = times
        disk = os.statvfs("/")
        netin, netout = self._physical_traffic()
        values: dict[str, float | None] = {
            "loadavg": float((self.proc / "loadavg").read_text().split()[0]),
            "maxcpu": os.cpu_count() or 1, "cpu": cpu, "iowait": iowait,
            **memory((self.proc / "meminfo").read_text()),
            "roottotal": disk.f_blocks * disk.f_frsize,
            "rootused": (disk.f_blocks - disk.f_bfree) * disk.f_frsize,  # pvestatd: not free is used
            "netin": netin, "netout": netout,
        }
        for resource, kinds in (("cpu", ("some",)), ("io", ("some", "full")), ("memory", ("some", "full"))):
            try:
                avg10 = pressure((self.proc / "pressure" / resource).read_text())
            except OSError:
                continue
            for kind in kinds:
                values[f"pressure{resource}{kind}"] = avg10.get(kind)
        return values

    def _physical_traffic(self) -> tuple[int, int]:
        """(received, sent) bytes of the physical network cards: update_node_status counts only
        links that are physical (here: those with a `device`), not bridges, veths or tunnels."""
        received = sent = 0
        for dev in self.sys_net.iterdir():
            if (dev / "device").exists():
                try:
                    received += int((dev / "statistics" / "rx_bytes").read_text())
                    sent += int((dev / "statistics" / "tx_bytes").read_text())
                except (OSError, ValueError):
                    continue
        return received, sent
