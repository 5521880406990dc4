"""pvesim.guestconf: PVE config -> LXC config and guest files, property strings, hwaddr."""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest

from pvesim import guestconf
from pvesim.guestconf import ConfigError, HostCaps

ROOTFS = PurePosixPath("/var/lib/pvesim/storage/local-lvm/vm-200-disk-0")
WEB = {
    "hostname": "web",
    "cores": "2",
    "memory": "2048",
    "swap": "512",
    "rootfs": "local-lvm:vm-200-disk-0,size=1000G",
    "net0": "name=eth0,bridge=vmbr20,ip=10.0.20.100/24,gw=10.0.20.1,hwaddr=BC:24:11:AA:BB:CC",
    "features": "nesting=1",
    "unprivileged": "1",
}

PROPERTY_CASES = [
    ("name=eth0,bridge=vmbr20,ip=10.0.20.100/24,gw=10.0.20.1", None,
     {"name": "eth0", "bridge": "vmbr20", "ip": "10.0.20.100/24", "gw": "10.0.20.1"}),
    ("local-lvm:vm-200-disk-0,size=1000G", "volume", {"volume": "local-lvm:vm-200-disk-0", "size": "1000G"}),
    ("volume=local-lvm:vm-1-disk-0,size=8G", "volume", {"volume": "local-lvm:vm-1-disk-0", "size": "8G"}),
    ("nesting=1,keyctl=1", None, {"nesting": "1", "keyctl": "1"}),
    ("", None, {}),
]


@pytest.mark.parametrize(("text", "default_key", "expected"), PROPERTY_CASES)
def test_parse_property_string(text: str, default_key: str | None, expected: dict[str, str]) -> None:
    assert guestconf.parse_property_string(text, default_key) == expected


@pytest.mark.parametrize(("text", "default_key"),
                         [("nesting", None), ("a=1,bare", "volume"), ("a=1,a=2", None)])
def test_parse_property_string_rejects(text: str, default_key: str | None) -> None:
    with pytest.raises(ConfigError):
        guestconf.parse_property_string(text, default_key)


@pytest.mark.parametrize(("text", "default_key", "_"), PROPERTY_CASES)
def test_format_round_trips(text: str, default_key: str | None, _: dict[str, str]) -> None:
    parsed = guestconf.parse_property_string(text, default_key)
    assert guestconf.parse_property_string(guestconf.format_property_string(parsed, default_key),
                                           default_key) == parsed


@pytest.mark.parametrize(("text", "size"), [("1000G", 1000 * 2**30), ("512M", 512 * 2**20), ("8", 8 * 2**30),
                                            ("1.5T", int(1.5 * 2**40)), ("4096K", 4 * 2**20)])
def test_parse_size(text: str, size: int) -> None:
    assert guestconf.parse_size(text) == size


def test_parse_size_rejects_garbage() -> None:
    with pytest.raises(ConfigError):
        guestconf.parse_size("ten gigs")


def test_ensure_hwaddr_adds_a_pve_mac_only_where_missing() -> None:
    conf = {"net0": "name=eth0,bridge=vmbr20,ip=dhcp",
            "net1": "name=eth1,bridge=vmbr30,hwaddr=BC:24:11:00:00:01"}
    result = guestconf.ensure_hwaddr(conf, random_bytes=lambda n: bytes([0x12, 0xAB, 0x03][:n]))
    assert result["net0"] == "name=eth0,bridge=vmbr20,ip=dhcp,hwaddr=BC:24:11:12:AB:03"
    assert result["net1"] == conf["net1"]
    assert "hwaddr" not in conf["net0"]  # the input is not modified


def test_generated_macs_differ() -> None:
    macs = {guestconf.generate_hwaddr() for _ in range(20)}
    assert len(macs) > 1
    assert all(mac.startswith("BC:24:11:") and len(mac) == 17 for mac in macs)


LXC_CASES = [
    ("unprivileged web with nesting", WEB, HostCaps(memsw=True, cpus=2), [
        "lxc.include = /usr/share/lxc/config/debian.common.conf",
        "lxc.include = /usr/share/lxc/config/debian.userns.conf",
        "lxc.include = /usr/share/lxc/config/nesting.conf",
        "lxc.apparmor.profile = unconfined",
        "lxc.arch = x86_64",
        "lxc.uts.name = web",
        f"lxc.rootfs.path = dir:{ROOTFS}",
        "lxc.idmap = u 0 100000 65536",
        "lxc.idmap = g 0 100000 65536",
        "lxc.cgroup.memory.limit_in_bytes = 2147483648",
        "lxc.cgroup.memory.memsw.limit_in_bytes = 2684354560",
        "lxc.cgroup.cpuset.cpus = 0-1",
        "lxc.net.0.type = veth",
        "lxc.net.0.link = vmbr20",
        "lxc.net.0.flags = up",
        "lxc.net.0.name = eth0",
        "lxc.net.0.veth.pair = veth200i0",
        "lxc.net.0.hwaddr = BC:24:11:AA:BB:CC",
    ], ["lxc.cgroup.cpu.cfs_quota_us"]),
    ("privileged, no swap accounting, cores clamped, cpulimit",
     {"hostname": "db", "memory": "1024", "cores": "8", "cpulimit": "1.5",
      "net0": "name=eth0,bridge=vmbr30,ip=10.0.30.5/24"}, HostCaps(memsw=False, cpus=2), [
        "lxc.cgroup.memory.limit_in_bytes = 1073741824",
        "lxc.cgroup.cpuset.cpus = 0-1",
        "lxc.cgroup.cpu.cfs_period_us = 100000",
        "lxc.cgroup.cpu.cfs_quota_us = 150000",
        "lxc.net.0.link = vmbr30",
     ], ["lxc.idmap = u 0 100000 65536", "lxc.cgroup.memory.memsw.limit_in_bytes = 1610612736",
         "lxc.include = /usr/share/lxc/config/debian.userns.conf",
         "lxc.include = /usr/share/lxc/config/nesting.conf"]),
    ("defaults: 512 MiB + 512 MiB swap, one core", {"hostname": "x", "cores": "1"}, HostCaps(cpus=2), [
        "lxc.cgroup.memory.limit_in_bytes = 536870912",
        "lxc.cgroup.memory.memsw.limit_in_bytes = 1073741824",
        "lxc.cgroup.cpuset.cpus = 0",
    ], ["lxc.net.0.type = veth"]),
    # unified host: lxc.cgroup2.* keys as PVE::LXC::update_lxc_config writes them
    ("unified: memory.max/high, swap alone, cpuset", WEB, HostCaps(cpus=2, cgroup=2), [
        "lxc.cgroup2.memory.max = 2147483648",
        "lxc.cgroup2.memory.high = 2130706432",  # 2048 MiB * 1016/1024
        "lxc.cgroup2.memory.swap.max = 536870912",  # swap only, not memory + swap
        "lxc.cgroup2.cpuset.cpus = 0-1",
    ], ["lxc.cgroup.memory.limit_in_bytes = 2147483648", "lxc.cgroup2.cpu.max = max",
        "lxc.cgroup.cpuset.cpus = 0-1"]),
    ("unified: cpulimit as cpu.max, cpuunits as cpu.weight clamped to 10000, 16 GiB high",
     {"hostname": "db", "memory": "16384", "swap": "0", "cores": "8", "cpulimit": "1.5",
      "cpuunits": "20000"}, HostCaps(cpus=4, cgroup=2), [
        "lxc.cgroup2.memory.max = 17179869184",
        "lxc.cgroup2.memory.high = 17045651456",  # 128 MiB below max from 16 GiB up
        "lxc.cgroup2.memory.swap.max = 0",
        "lxc.cgroup2.cpuset.cpus = 0-3",
        "lxc.cgroup2.cpu.max = 150000 100000",
        "lxc.cgroup2.cpu.weight = 10000",
     ], ["lxc.cgroup.cpu.cfs_quota_us = 150000", "lxc.cgroup.cpu.shares = 20000"]),
    ("unified without swap accounting: no memory.swap.max", {"hostname": "x", "cpuunits": "50"},
     HostCaps(memsw=False, cgroup=2), [
        "lxc.cgroup2.memory.max = 536870912",
        "lxc.cgroup2.cpu.weight = 50",
    ], ["lxc.cgroup2.memory.swap.max = 536870912"]),
]


@pytest.mark.parametrize(("conf", "caps", "present", "absent"), [c[1:] for c in LXC_CASES],
                         ids=[c[0] for c in LXC_CASES])
def test_lxc_config(conf: dict[str, str], caps: HostCaps, present: list[str], absent: list[str]) -> None:
    lines = guestconf.lxc_config(200, conf, ROOTFS, caps).splitlines()
    assert [line for line in present if line not in lines] == []
    assert [line for line in absent if line in lines] == []


def test_lxc_config_needs_a_bridge() -> None:
    with pytest.raises(ConfigError, match="net0 has no bridge"):
        guestconf.lxc_config(200, {"net0": "name=eth0,ip=dhcp"}, ROOTFS, HostCaps())


INTERFACES_CASES = [
    ("static with gateway", WEB["net0"],
     "auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet static\n"
     "\taddress 10.0.20.100/24\n\tgateway 10.0.20.1\n"),
    ("static without gateway", "name=eth0,bridge=vmbr30,ip=10.0.30.7/24",
     "auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet static\n\taddress 10.0.30.7/24\n"),
    ("dhcp + ipv6 auto", "name=eth0,bridge=vmbr20,ip=dhcp,ip6=auto",
     "auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet dhcp\niface eth0 inet6 auto\n"),
    ("no ip", "name=eth0,bridge=vmbr20",
     "auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet manual\n"),
]


@pytest.mark.parametrize(("net0", "expected"), [c[1:] for c in INTERFACES_CASES],
                         ids=[c[0] for c in INTERFACES_CASES])
def test_interfaces_file(net0: str, expected: str) -> None:
    assert guestconf.interfaces_file({"net0": net0}) == expected


def test_interfaces_file_orders_networks_by_index() -> None:
    text = guestconf.interfaces_file({"net1": "name=eth1,bridge=vmbr30,ip=10.0.30.2/24",
                                      "net0": "name=eth0,bridge=vmbr20,ip=10.0.20.2/24"})
    assert text.index("auto eth0") < text.index("auto eth1")


def test_hosts_file_fresh_has_localhost_and_pve_block() -> None:
    hosts = guestconf.hosts_file(WEB)
    assert hosts.startswith("127.0.0.1\tlocalhost\n")
    assert hosts.endswith("# --- BEGIN PVE ---\n10.0.20.100 web\n# --- END PVE ---\n")


def test_hosts_file_replaces_only_the_pve_block() -> None:
    existing = "127.0.0.1 localhost\n# --- BEGIN PVE ---\n10.0.20.9 old\n# --- END PVE ---\n10.0.30.5 db\n"
    hosts = guestconf.hosts_file({**WEB, "searchdomain": "psa.lan"}, existing)
    assert hosts == ("127.0.0.1 localhost\n# --- BEGIN PVE ---\n10.0.20.100 web.psa.lan web\n"
                     "# --- END PVE ---\n10.0.30.5 db\n")


def test_hosts_file_without_static_ip_uses_127_0_1_1() -> None:
    assert "127.0.1.1 box\n" in guestconf.hosts_file({"hostname": "box", "net0": "bridge=vmbr20,ip=dhcp"})


@pytest.mark.parametrize(("conf", "expected"), [
    ({"nameserver": "10.0.20.1 10.0.30.1", "searchdomain": "psa.lan"},
     "# --- BEGIN PVE ---\nsearch psa.lan\nnameserver 10.0.20.1\nnameserver 10.0.30.1\n# --- END PVE ---\n"),
    (WEB, "# --- BEGIN PVE ---\nnameserver 10.0.20.1\n# --- END PVE ---\n"),
    ({"hostname": "x"}, "# --- BEGIN PVE ---\n# --- END PVE ---\n"),
])
def test_resolv_conf_never_names_the_hosts_resolver(conf: dict[str, str], expected: str) -> None:
    assert guestconf.resolv_conf(conf) == expected


def test_guest_files_cover_what_pve_writes() -> None:
    files = guestconf.guest_files(WEB)
    assert set(files) == {"etc/network/interfaces", "etc/hosts", "etc/hostname", "etc/resolv.conf"}
    assert files["etc/hostname"] == "web\n"
