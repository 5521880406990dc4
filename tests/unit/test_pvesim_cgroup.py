"""pvesim.cgroup: layout detection, live limit writes and usage on v1 and v2, on a fake cgroup tree."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from pvesim import guestconf
from pvesim.cgroup import (
    CgroupError,
    Cgroups,
    Layout,
    config_maxima,
    detect_layout,
    flat_keyed,
    live_writes,
    payload_name,
)
from pvesim.guestconf import HostCaps
from pvesim.lxc import LxcBackend
from pvesim.paths import StateDir

SYSFS = "sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0\n"
UNIFIED = SYSFS + "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate 0 0\n"
V1 = "".join(f"cgroup /sys/fs/cgroup/{c} cgroup rw,relatime,{c} 0 0\n"
             for c in ("cpu", "cpuacct", "cpuset", "memory"))
LEGACY = SYSFS + "tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0\n" + V1
HYBRID = LEGACY + "cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n"
CONF = {"memory": "1024", "swap": "256", "cores": "2", "cpulimit": "0.5", "cpuunits": "200"}
MIB = 2**20


@pytest.mark.parametrize(("mounts", "layout"), [
    (UNIFIED, "unified"), (HYBRID, "hybrid"), (LEGACY, "legacy"),
    (HYBRID + "cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n", "unified"),  # the last mount on a path wins
])
def test_detect_layout(mounts: str, layout: str) -> None:
    assert detect_layout(mounts) == layout


def test_detect_layout_without_cgroups_says_so() -> None:
    with pytest.raises(CgroupError, match="no cgroup hierarchy"):
        detect_layout(SYSFS + "tmpfs /sys/fs/cgroup tmpfs rw 0 0\n")


@pytest.mark.parametrize(("cgroup", "other"), [(1, "lxc.cgroup2."), (2, "lxc.cgroup.")])
def test_config_holds_one_version_only(cgroup: int, other: str) -> None:
    text = guestconf.lxc_config(200, CONF, PurePosixPath("/r"), HostCaps(cpus=4, cgroup=cgroup))
    assert [line for line in text.splitlines() if line.startswith(other)] == []
    assert config_maxima(text) == (1024 * MIB, 256 * MIB)


def test_config_maxima_without_swap_accounting() -> None:
    for cgroup in (1, 2):
        text = guestconf.lxc_config(200, CONF, PurePosixPath("/r"), HostCaps(memsw=False, cgroup=cgroup))
        assert config_maxima(text) == (1024 * MIB, 0)


def test_v2_writes_swap_high_max_first_and_resets_deleted_cpu_settings() -> None:
    limits = guestconf.cgroup_limits({"memory": "1024", "swap": "0", "cores": "1"}, HostCaps(cgroup=2))
    assert live_writes(limits, 2, lambda key: None) == [
        ("memory.swap.max", "0"), ("memory.high", str(1016 * MIB)), ("memory.max", str(1024 * MIB)),
        ("cpuset.cpus", "0"), ("cpu.max", "max"), ("cpu.weight", "100")]


@pytest.mark.parametrize(("current_mem", "first"), [
    (512 * MIB, "memory.memsw.limit_in_bytes"),  # growing: memsw first, memory may never exceed it
    (2048 * MIB, "memory.limit_in_bytes"),  # shrinking: memory first
])
def test_v1_order_keeps_memory_below_memsw(current_mem: int, first: str) -> None:
    limits = guestconf.cgroup_limits(CONF, HostCaps(cgroup=1))
    writes = live_writes(limits, 1, {"memory.limit_in_bytes": str(current_mem)}.get)
    assert writes[0][0] == first
    assert dict(writes) == {**limits, "cpu.shares": "200"}


def test_v1_resets_deleted_cpulimit_and_cpuunits() -> None:
    writes = dict(live_writes(guestconf.cgroup_limits({}, HostCaps()), 1, lambda key: None))
    assert writes["cpu.cfs_quota_us"] == "-1" and writes["cpu.shares"] == "1024"


def test_flat_keyed() -> None:
    assert flat_keyed("usage_usec 1500\nuser_usec 1000\n\n") == {"usage_usec": "1500", "user_usec": "1000"}


def _tree(cgroups: Cgroups, files: dict[str, str]) -> None:
    for key, value in files.items():
        path = cgroups.path(200, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value)


@pytest.mark.parametrize(("layout", "files", "expected"), [
    ("unified", {"memory.current": "300\n", "memory.swap.current": "20\n",
                 "cpu.stat": "usage_usec 7\nuser_usec 5\nsystem_usec 2\n"}, (300, 20, 7000)),
    ("hybrid", {"memory.usage_in_bytes": "300\n", "memory.memsw.usage_in_bytes": "320\n",
                "cpuacct.usage": "7000\n"}, (300, 20, 7000)),
    # PVE::CGroup::get_memory_stat: the page cache is not memory in use (swap still from the whole usage)
    ("unified", {"memory.current": "300\n", "memory.swap.current": "20\n", "cpu.stat": "usage_usec 7\n",
                 "memory.stat": "anon 80\nfile 200\nkernel 20\n"}, (100, 20, 7000)),
    ("hybrid", {"memory.usage_in_bytes": "300\n", "memory.memsw.usage_in_bytes": "320\n",
                "cpuacct.usage": "7000\n", "memory.stat": "cache 150\nrss 80\ntotal_cache 200\n"},
     (100, 20, 7000)),
])
def test_usage_reads_the_layouts_files(tmp_path: Path, layout: Layout, files: dict[str, str],
                                       expected: tuple[int, int, int]) -> None:
    cgroups = Cgroups(layout, tmp_path)
    _tree(cgroups, files)
    usage = cgroups.usage(200)
    assert (usage.mem, usage.swap, usage.cpu_ns) == expected


def test_paths_per_layout(tmp_path: Path) -> None:
    assert Cgroups("unified", tmp_path).path(200, "memory.max") == tmp_path / "lxc.payload.200/memory.max"
    hybrid = Cgroups("hybrid", tmp_path)
    assert hybrid.path(200, "cpuset.cpus") == tmp_path / "cpuset/lxc.payload.200/cpuset.cpus"


HYBRID_INIT = """9:name=systemd:/lxc.payload.200-3/init.scope
4:memory:/lxc.payload.200-3/init.scope
2:cpuacct:/lxc.payload.200-3
0::/lxc.payload.200-3/init.scope
"""


def test_payload_name_is_the_one_the_containers_init_is_in() -> None:
    """lxc takes lxc.payload.<vmid>-N when an earlier cgroup of that name was left behind: the name comes
    from the init's /proc/<pid>/cgroup, the plain one only when that is not at hand."""
    assert payload_name(200, HYBRID_INIT) == "lxc.payload.200-3"
    assert payload_name(200, "0::/lxc.payload.200/init.scope\n") == "lxc.payload.200"
    assert payload_name(200, None) == "lxc.payload.200"
    assert payload_name(20, HYBRID_INIT) == "lxc.payload.20"  # another container's path is not its own
    assert payload_name(200, "0::/user.slice\n") == "lxc.payload.200"


def test_usage_reads_the_live_cgroup_not_one_left_behind(tmp_path: Path) -> None:
    """A stale lxc.payload.200 (0.5 MiB, nothing in it) beside the live lxc.payload.200-3: status reads the
    live one, and a live limit goes to it."""
    cgroups = Cgroups("hybrid", tmp_path / "cgroup", proc=tmp_path / "proc")
    (tmp_path / "proc/4242").mkdir(parents=True)
    (tmp_path / "proc/4242/cgroup").write_text(HYBRID_INIT)
    for payload, mem in (("lxc.payload.200", "532480"), ("lxc.payload.200-3", "416595968")):
        for key, value in (("memory.usage_in_bytes", mem), ("cpuacct.usage", "9"),
                           ("memory.limit_in_bytes", str(512 * MIB))):
            path = tmp_path / "cgroup" / key.split(".")[0] / payload / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(value + "\n")
    live = cgroups.payload(200, 4242)
    assert cgroups.usage(200, live).mem == 416595968
    assert cgroups.usage(200).mem == 532480  # no pid: the plain name, as before
    cgroups.write(200, "memory.limit_in_bytes", str(1024 * MIB), live)
    assert cgroups.read(200, "memory.limit_in_bytes", live) == str(1024 * MIB)
    assert cgroups.read(200, "memory.limit_in_bytes") == str(512 * MIB)


def test_caps_see_swap_accounting_per_version(tmp_path: Path) -> None:
    caps = Cgroups("unified", tmp_path).caps()
    assert (caps.memsw, caps.cgroup) == (False, 2)
    (tmp_path / "init.scope").mkdir()
    (tmp_path / "init.scope/memory.swap.max").write_text("max\n")
    assert Cgroups("unified", tmp_path).caps().memsw
    assert not Cgroups("legacy", tmp_path).caps().memsw
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory/memory.memsw.limit_in_bytes").write_text("0\n")
    assert Cgroups("legacy", tmp_path).caps().memsw


@pytest.mark.parametrize("layout", ["unified", "hybrid"])
def test_update_applies_limits_live_to_the_payload_cgroup(tmp_path: Path, layout: Layout) -> None:
    cgroups = Cgroups(layout, tmp_path / "cgroup")
    current = ({"memory.limit_in_bytes": str(512 * MIB)} if layout == "hybrid" else
               {"memory.swap.max": "max"})  # the kernel's file: swap accounting is on
    _tree(cgroups, current)
    if layout == "hybrid":
        (tmp_path / "cgroup/memory/memory.memsw.limit_in_bytes").write_text("max\n")
    keys = guestconf.cgroup_limits(CONF, HostCaps(cgroup=cgroups.version))
    for key, _ in live_writes(keys, cgroups.version, lambda key: None):
        cgroups.path(200, key).parent.mkdir(parents=True, exist_ok=True)
    cgroups.path(200, "cpuset.cpus").mkdir()  # a write that fails as an EBUSY cpuset would
    backend = LxcBackend(StateDir(tmp_path / "state"), tmp_path / "lxc", cgroups)
    lines: list[str] = []
    backend._apply_limits(200, CONF, lines.append, None)
    expected = ({"memory.max": str(1024 * MIB), "memory.swap.max": str(256 * MIB),
                 "cpu.max": "50000 100000", "cpu.weight": "200"} if layout == "unified" else
                {"memory.limit_in_bytes": str(1024 * MIB), "memory.memsw.limit_in_bytes": str(1280 * MIB),
                 "cpu.cfs_quota_us": "50000", "cpu.shares": "200"})
    assert {key: cgroups.read(200, key) for key in expected} == expected
    assert "cpuset.cpus=0-1 not applied live" in lines[0] and "applied live:" in lines[-1]


def test_running_is_the_containers_command_socket_as_pve_lists_active_containers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pve-container's list_active_containers: an `@<lxcpath>/<vmid>/command` socket in /proc/net/unix."""
    from pvesim import lxc

    lxcpath = tmp_path / "lxc"
    table = tmp_path / "unix"
    table.write_text(
        "Num       RefCount Protocol Flags    Type St Inode Path\n"
        f"00000000a5785346: 00000002 00000000 00010000 0001 01 9547594 @{lxcpath}/200/command\n"
        f"00000000a5785347: 00000002 00000000 00010000 0001 01 9547595 @{lxcpath}/201/command\n"
        f"00000000a5785348: 00000002 00000000 00010000 0001 01 9547596 @{lxcpath}/202/monitor-sock\n"
        "00000000a5785349: 00000002 00000000 00010000 0001 01 9547597 @/var/lib/other/203/command\n"
        f"00000000a578534a: 00000002 00000000 00010000 0001 01 9547598 @{lxcpath}/psa/command\n"
        "00000000a578534b: 00000003 00000000 00000000 0001 03 9547599\n")
    monkeypatch.setattr(lxc, "PROC_NET_UNIX", str(table))
    backend = LxcBackend(StateDir(tmp_path / "state"), lxcpath)
    assert backend.active() == {200, 201}
    for vmid in (200, 202):
        (lxcpath / str(vmid)).mkdir(parents=True)
        (lxcpath / str(vmid) / "config").write_text("")
    assert [backend.is_running(v) for v in (200, 201, 202)] == [True, False, False]  # 201: no config
