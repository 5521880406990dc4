"""PVE container configs: parse/write round trip with snapshots, pending, digest, sizes."""

from __future__ import annotations

from pathlib import Path

import pytest

from pvesim import pveconf

CONF = """#PSA platform%3A phase 0
#all in one
arch: amd64
cores: 2
hostname: psa-app
memory: 4096
net0: name=eth0,bridge=vmbr20,gw=10.0.20.1,hwaddr=BC:24:11:5E:4A:01,ip=10.0.20.100/24,type=veth
ostype: debian
parent: s2
rootfs: local-lvm:vm-200-disk-0,size=32G
swap: 512
unprivileged: 1
lxc.apparmor.profile: unconfined

[pve:pending]
delete: nameserver
hostname: psa-app2

[s1]
#before install
arch: amd64
hostname: psa-app
memory: 2048
snaptime: 1700000000

[s2]
arch: amd64
hostname: psa-app
memory: 4096
parent: s1
snaptime: 1700000100
"""


def test_parse_sections() -> None:
    conf = pveconf.parse(CONF)
    assert conf.main.description == "PSA platform%3A phase 0\nall in one"
    assert conf.main.values["memory"] == "4096"
    assert conf.main.values["lxc.apparmor.profile"] == "unconfined"
    assert conf.pending == {"hostname": "psa-app2"}
    assert conf.pending_delete == ["nameserver"]
    assert list(conf.snapshots) == ["s1", "s2"]
    assert conf.snapshots["s1"].description == "before install"
    assert conf.snapshots["s2"].values["parent"] == "s1"


def test_round_trip_is_stable() -> None:
    text = pveconf.dump(pveconf.parse(CONF))
    assert pveconf.parse(text) == pveconf.parse(CONF)
    assert pveconf.dump(pveconf.parse(text)) == text


def test_digest_is_sha1_of_file_and_changes_with_content(tmp_path: Path) -> None:
    path = tmp_path / "200.conf"
    conf = pveconf.parse(CONF)
    first = pveconf.write(path, conf)
    assert first == pveconf.read(path)[1]
    assert len(first) == 40
    conf.main.values["memory"] = "8192"
    assert pveconf.write(path, conf) != first


@pytest.mark.parametrize(("text", "size"), [("8G", 8 * 1024**3), ("512M", 512 * 1024**2),
                                            ("1.5G", 1610612736), ("100", 100), ("8X", None), ("", None)])
def test_parse_size(text: str, size: int | None) -> None:
    assert pveconf.parse_size(text) == size


@pytest.mark.parametrize(("size", "text"), [(8 * 1024**3, "8G"), (1536 * 1024**2, "1536M"), (1024**4, "1T")])
def test_format_size(size: int, text: str) -> None:
    assert pveconf.format_size(size) == text


def test_property_strings() -> None:
    props = pveconf.parse_property_string("local-lvm:vm-200-disk-0,size=32G", "volume")
    assert props == {"volume": "local-lvm:vm-200-disk-0", "size": "32G"}
    assert pveconf.print_property_string(props, "volume") == "local-lvm:vm-200-disk-0,size=32G"
    net = {"type": "veth", "bridge": "vmbr20", "name": "eth0", "ip": "10.0.20.5/24"}
    expected = "name=eth0,bridge=vmbr20,ip=10.0.20.5/24,type=veth"
    assert pveconf.print_property_string(net, first=("name",)) == expected
