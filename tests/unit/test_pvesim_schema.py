"""Parameter validation against the official PVE schema, with PVE's messages."""

from __future__ import annotations

from typing import Any

import pytest

from pvesim import schema

CREATE = "/nodes/{node}/lxc"
BASE = {"node": "pve1", "vmid": "9000", "ostemplate": "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"}


def create_errors(**params: Any) -> dict[str, str]:
    return schema.validate(schema.endpoints()[CREATE]["POST"], {**BASE, **params})


def test_route_matching_extracts_path_parameters() -> None:
    found = schema.match("/nodes/pve1/lxc/9000/snapshot/before-upgrade/rollback")
    assert found == ("/nodes/{node}/lxc/{vmid}/snapshot/{snapname}/rollback",
                     {"node": "pve1", "vmid": "9000", "snapname": "before-upgrade"})
    assert schema.match("/nodes/pve1/lxc/9000/status/current") == (
        "/nodes/{node}/lxc/{vmid}/status/current", {"node": "pve1", "vmid": "9000"})
    assert schema.match("/nodes/pve1/no-such-thing") is None


def test_good_create_parameters_pass() -> None:
    assert create_errors(
        hostname="ct9000", memory="1024", swap="0", cores="2", unprivileged="1", start="1", onboot="0",
        rootfs="local-lvm:8", nameserver="10.0.20.1", searchdomain="sandbox.lan", tags="psa;phase0",
        features="nesting=1,keyctl=on", password="secret-pass", **{"ssh-public-keys": "ssh-ed25519 AAAA x"},
        net0="name=eth0,bridge=vmbr20,ip=10.0.20.100/24,gw=10.0.20.1,hwaddr=BC:24:11:00:00:01,firewall=1",
        net1="name=eth1,bridge=vmbr30,ip=dhcp", net31="name=eth31,bridge=vmbr30,ip=manual",
    ) == {}


@pytest.mark.parametrize(("params", "name", "message"), [
    ({"foo": "1"}, "foo", schema.NOT_IN_SCHEMA),
    ({"memory": "lots"}, "memory", "type check ('integer') failed - got 'lots'"),
    ({"memory": "8"}, "memory", "value must have a minimum value of 16"),
    ({"cpulimit": "x"}, "cpulimit", "type check ('number') failed - got 'x'"),
    ({"onboot": "True"}, "onboot", "type check ('boolean') failed - got 'True'"),
    ({"arch": "sparc"}, "arch", "value 'sparc' does not have a value in the enumeration"),
    ({"hostname": "bad_name!"}, "hostname", "invalid format - value does not look like a valid DNS name"),
    ({"password": "abc"}, "password", "value must be at least 5 characters long"),
    ({"net32": "name=eth0"}, "net32", "property is not defined in schema"),
    ({"nameserver": "10.0.20.300"}, "nameserver", "invalid format"),
])
def test_bad_values_are_named_with_pve_messages(params: dict[str, str], name: str, message: str) -> None:
    errors = create_errors(**params)
    assert list(errors) == [name]
    assert errors[name].startswith(message)


@pytest.mark.parametrize(("net0", "detail"), [
    ("name=eth0,bridge=vmbr20,ip=10.0.20.300/24",
     "net0.ip: invalid format - value does not look like a valid ipv4 network configuration"),
    ("name=eth0,ip=10.0.20.5", "net0.ip: invalid format - value does not look like a valid ipv4 network"),
    ("name=eth0,gw=10.0.20", "net0.gw: invalid format - value does not look like a valid IPv4 address"),
    ("name=eth0,hwaddr=01:00:00:00:00:01", "net0.hwaddr: invalid format - value does not look like a valid "
                                           "unicast MAC address"),
    ("name=eth0,mtu=20", "net0.mtu: value must have a minimum value of 64"),
    ("name=eth0,firewall=maybe", "net0.firewall: type check ('boolean') failed - got 'maybe'"),
    ("bridge=vmbr20", "net0.name: property is missing and it is not optional"),
])
def test_property_string_keys_are_checked(net0: str, detail: str) -> None:
    errors = create_errors(net0=net0)
    assert errors["net0"].startswith("invalid format - format error\n")
    assert detail in errors["net0"]


@pytest.mark.parametrize(("params", "message"), [
    ({"net0": "name=eth0,colour=blue"},
     "invalid format - invalid key in comma-separated list property: colour"),
    ({"net0": "eth0"}, "invalid format - value without key, but schema does not define a default key"),
    ({"features": "nesting=1,nesting=0"}, "duplicate key in comma-separated list property: nesting"),
    ({"rootfs": "local-lvm:8,size=big"},
     "rootfs.size: invalid format - value does not look like a valid disk size"),
])
def test_property_string_structure_errors(params: dict[str, str], message: str) -> None:
    errors = create_errors(**params)
    assert message in next(iter(errors.values()))


def test_rootfs_default_key_and_missing_required_parameter() -> None:
    assert create_errors(rootfs="volume=local-lvm:8,mountoptions=noatime") == {}
    errors = schema.validate(schema.endpoints()[CREATE]["POST"], {"node": "pve1", "vmid": "9000"})
    assert errors == {"ostemplate": "property is missing and it is not optional"}


def test_json_booleans_become_pve_booleans() -> None:
    method = schema.endpoints()["/nodes/{node}/lxc/{vmid}/status/stop"]["POST"]
    assert schema.validate(method, {"node": "pve1", "vmid": 9000, "skiplock": True}) == {}


@pytest.mark.parametrize(("fmt", "value", "ok"), [
    ("pve-ipv4-config", "dhcp", True), ("pve-ipv4-config", "10.0.20.5/24", True),
    ("pve-ipv4-config", "10.0.20.5/33", False), ("pve-ipv6-config", "auto", True),
    ("CIDRv4", "10.0.0.0/7", False), ("disk-size", "8G", True), ("disk-size", "8X", False),
    ("pve-configid-list", "memory,nameserver", True), ("pve-configid-list", "memory,9lives", False),
    # JSONSchema.pm: $CONFIGID_RE = qr/[a-z][a-z0-9_-]+/i (HA rule and group ids such as "psa-apart")
    ("pve-configid", "psa-apart", True), ("pve-configid", "9lives", False), ("pve-configid", "a", False),
    ("pve-tag-list", "psa;phase0", True), ("mac-addr", "bc:24:11:aa:bb:cc", True),
])
def test_named_formats(fmt: str, value: str, ok: bool) -> None:
    assert (schema.check_named_format(fmt, value) is None) is ok
