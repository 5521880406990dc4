"""UPID encoding and parsing in Proxmox's exact format."""

from __future__ import annotations

import pytest

from pvesim.tasks import Upid, parse_upid


def test_upid_text_is_pve_format() -> None:
    upid = Upid("pve1", 0x1A2B, 0x3C4D5E, 0x6553F100, "vzcreate", "200", "root@pam")
    assert str(upid) == "UPID:pve1:00001A2B:003C4D5E:6553F100:vzcreate:200:root@pam:"


@pytest.mark.parametrize("user", ["root@pam", "root@pam!psa-provision"])
def test_upid_round_trip(user: str) -> None:
    upid = Upid("pve2", 4242, 99, 1700000000, "vzstart", "9001", user)
    assert parse_upid(str(upid)) == upid


def test_real_pve_upid_parses() -> None:
    text = "UPID:pve:000B1C3D:0561A0B7:65F0A1B2:download:debian-12-standard_12.7-1_amd64.tar.zst:root@pam:"
    parsed = parse_upid(text)
    assert (parsed.node, parsed.pid, parsed.type, parsed.user) == ("pve", 0xB1C3D, "download", "root@pam")
    assert parsed.id == "debian-12-standard_12.7-1_amd64.tar.zst"


@pytest.mark.parametrize("bad", ["", "UPID:pve1", "XPID:a:1:2:3:t:i:u:", "UPID:pve1:zz:1:2:t:i:u:",
                                 "UPID:pve1:1:2:3:t:i:u"])
def test_malformed_upids_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="unable to parse worker upid"):
        parse_upid(bad)
