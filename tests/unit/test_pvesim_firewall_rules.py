"""pvesim's Proxmox firewall: .fw files (parse/write) and rules -> nftables (pure, no nft run)."""

from __future__ import annotations

import pytest

from pvesim import firewall_conf, firewall_nft
from pvesim.firewall_conf import FirewallConf, FirewallConfError
from pvesim.firewall_nft import Guest, RuleError
from pvesim.handlers_firewall import moved

DB_FW = """\
[OPTIONS]

enable: 1
ipfilter: 1
policy_in: DROP

[IPSET apps] # app servers

10.0.20.100 # app
!10.0.20.9

[RULES]

IN ACCEPT -source 10.0.20.100 -p tcp -dport 5432 # app -> postgres
IN SSH(ACCEPT) -i net0
|IN DROP -source +apps
IN REJECT -source 10.0.20.0/24 -p udp
OUT DROP -dest 10.0.30.0/24 -p tcp -dport 80:90,ssh
"""
DB_NET = {0: {"name": "eth0", "bridge": "vmbr30", "ip": "10.0.30.10/24", "firewall": "1"}}


def _db(text: str = DB_FW, nets: dict[int, dict[str, str]] | None = None) -> Guest:
    return Guest(130, firewall_conf.parse(text), DB_NET if nets is None else nets)


def test_file_round_trip_keeps_every_section() -> None:
    conf = firewall_conf.parse(DB_FW)
    assert conf.options == {"enable": "1", "ipfilter": "1", "policy_in": "DROP"}
    assert conf.ipsets["apps"].comment == "app servers"
    assert conf.ipsets["apps"].entries == [{"cidr": "10.0.20.100", "comment": "app"},
                                           {"cidr": "10.0.20.9", "nomatch": "1"}]
    assert firewall_conf.write(conf) == DB_FW
    assert firewall_conf.write(FirewallConf()) == ""


@pytest.mark.parametrize(("line", "rule"), [
    ("IN ACCEPT -source 10.0.20.100 -p tcp -dport 5432 # app -> postgres",
     {"enable": "1", "type": "in", "action": "ACCEPT", "source": "10.0.20.100", "proto": "tcp",
      "dport": "5432", "comment": "app -> postgres"}),
    ("|OUT PostgreSQL(REJECT) -i net1", {"enable": "0", "type": "out", "macro": "PostgreSQL",
                                         "action": "REJECT", "iface": "net1"}),
    ("GROUP webservers", {"enable": "1", "type": "group", "action": "webservers"}),
])
def test_rule_lines(line: str, rule: dict[str, str]) -> None:
    assert firewall_conf.parse_rule(line) == rule
    assert firewall_conf.format_rule(rule) == line


@pytest.mark.parametrize("text", ["[RULES]\nSIDEWAYS ACCEPT", "[RULES]\nIN ACCEPT -dport", "[RULES]\nIN",
                                  "[RULES]\nIN ACCEPT -frobnicate 1", "enable: 1"])
def test_bad_lines_are_refused_with_their_number(text: str) -> None:
    with pytest.raises(FirewallConfError, match="line"):
        firewall_conf.parse(text)


def test_digest_is_sha1_of_the_file() -> None:
    assert firewall_conf.digest("") == "da39a3ee5e6b4b0d3255bfef95601890afd80709"


@pytest.mark.parametrize(("rule", "field"), [
    ({"type": "in", "action": "ACCEPT", "dport": "5432"}, "dport"),
    ({"type": "in", "action": "ACCEPT", "proto": "tcp", "dport": "70000"}, "dport"),
    ({"type": "in", "action": "ACCEPT", "source": "10.0.20.300"}, "source"),
    ({"type": "in", "action": "ACCEPT", "dest": "+nosuchset"}, "dest"),
    ({"type": "in", "action": "ACCEPT", "macro": "Gopher"}, "macro"),
    ({"type": "in", "action": "ACCEPT", "iface": "net7"}, "iface"),
    ({"type": "in", "action": "MAYBE"}, "action"),
    ({"type": "group", "action": "webservers"}, "action"),
    ({"type": "in", "action": "ACCEPT", "proto": "gre!"}, "proto"),
    ({"type": "in", "action": "ACCEPT", "proto": "300"}, "proto"),
    ({"type": "in", "action": "ACCEPT", "proto": "icmp", "icmp-type": "echo-please"}, "icmp-type"),
    ({"type": "in", "action": "ACCEPT", "proto": "tcp", "icmp-type": "echo-request"}, "icmp-type"),
])
def test_verify_rule_names_the_bad_field(rule: dict[str, str], field: str) -> None:
    with pytest.raises(RuleError) as err:
        firewall_nft.verify_rule(rule, firewall_conf.parse(DB_FW), ["net0"])
    assert err.value.field == field


def test_verify_rule_accepts_pve_specs() -> None:
    conf = firewall_conf.parse(DB_FW)
    firewall_nft.verify_rule({"type": "in", "action": "ACCEPT", "source": "+apps,10.0.20.1-10.0.20.5",
                              "proto": "tcp", "dport": "5432,8000:8010,ssh", "iface": "net0"}, conf, ["net0"])
    firewall_nft.verify_rule({"type": "in", "action": "ACCEPT", "macro": "PostgreSQL"}, conf, [])
    firewall_nft.verify_rule({"type": "in", "action": "ACCEPT", "proto": "icmp", "icmp-type": "echo-request"},
                             conf, [])


def test_protocol_names_become_numbers() -> None:
    guest = _db("[OPTIONS]\nenable: 1\n[RULES]\nIN ACCEPT -p gre\nIN DROP -p icmp -icmp-type echo-request\n")
    assert firewall_nft.chain_rules(guest, "net0", inbound=True)[2:4] == [
        "meta l4proto 47 accept", "icmp type echo-request drop"]


def test_in_chain_rules_in_order_then_policy() -> None:
    assert firewall_nft.chain_rules(_db(), "net0", inbound=True) == [
        "ct state established,related accept",
        "ct state invalid drop",
        "ip saddr 10.0.20.100 tcp dport 5432 accept",
        "tcp dport 22 accept",
        # the disabled rule (|IN DROP) is left out
        "ip saddr 10.0.20.0/24 meta l4proto udp meta l4proto tcp reject with tcp reset",
        "ip saddr 10.0.20.0/24 meta l4proto udp reject",
        "drop",
    ]


def test_out_chain_returns_on_accept_so_the_peer_decides() -> None:
    assert firewall_nft.chain_rules(_db(), "net0", inbound=False) == [
        "ct state established,related return",
        "ct state invalid drop",
        "ip daddr 10.0.30.0/24 tcp dport { 80-90, 22 } drop",
        "return",  # policy_out defaults to ACCEPT
    ]


def test_rules_for_another_interface_are_left_out() -> None:
    lines = firewall_nft.chain_rules(_db(), "net1", inbound=True)
    assert "tcp dport 22 accept" not in lines
    assert "ip saddr 10.0.20.100 tcp dport 5432 accept" in lines


def test_macro_with_several_entries_and_ipset_source() -> None:
    guest = _db("[OPTIONS]\nenable: 1\npolicy_in: ACCEPT\n"
                "[IPSET apps]\n10.0.20.100\n10.0.20.101\n!10.0.20.9\n"
                "[RULES]\nIN DNS(DROP) -source +apps\n")
    assert firewall_nft.chain_rules(guest, "net0", inbound=True)[2:] == [
        "ip saddr { 10.0.20.100, 10.0.20.101 } udp dport 53 drop",
        "ip saddr { 10.0.20.100, 10.0.20.101 } tcp dport 53 drop",
        "accept",
    ]


@pytest.mark.parametrize(("nets", "options", "expected"), [
    (DB_NET, "enable: 1", [("net0", "veth130i0", "10.0.30.10")]),
    ({0: {"ip": "10.0.30.10/24"}}, "enable: 1", []),  # net0 without firewall=1
    ({0: {"ip": "dhcp", "firewall": "1"}}, "enable: 1", []),  # no static address to match
    (DB_NET, "enable: 0", []),
    ({0: {"ip": "10.0.30.10/24"}, 1: {"ip": "10.0.20.10/24", "firewall": "1"}}, "enable: 1",
     [("net1", "veth130i1", "10.0.20.10")]),
])
def test_filtered_interfaces_honour_net_firewall_flag(nets: dict[int, dict[str, str]], options: str,
                                                      expected: list[tuple[str, str, str]]) -> None:
    assert firewall_nft.filtered_interfaces(_db(f"[OPTIONS]\n{options}\n", nets)) == expected


def test_ruleset_dispatches_out_before_in_and_drops_spoofed_sources() -> None:
    script = firewall_nft.ruleset(True, [_db()])
    forward = script[script.index("chain forward"):script.index("chain input")]
    assert forward.index("ip saddr 10.0.30.10 jump ct130_net0_out") < forward.index(
        "ip daddr 10.0.30.10 jump ct130_net0_in")
    assert 'iifname "veth130i0" ether type ip ip saddr != 10.0.30.10 drop' in script  # ipfilter: 1
    assert script.startswith("table inet pvesim_fw\ndelete table inet pvesim_fw\n")


def test_nothing_is_filtered_while_the_datacenter_firewall_is_off() -> None:
    script = firewall_nft.ruleset(False, [_db()])
    assert "jump" not in script and "ct130" not in script and "drop" not in script.split("delete table")[-1]


@pytest.mark.parametrize(("pos", "moveto", "order"), [
    (0, 2, "BAC"), (0, 3, "BCA"), (0, 9, "BCA"), (2, 0, "CAB"), (2, 1, "ACB"), (1, 1, "ABC")])
def test_moveto_places_the_rule_before_the_one_at_moveto(pos: int, moveto: int, order: str) -> None:
    rules = [{"comment": name} for name in "ABC"]
    assert "".join(r["comment"] for r in moved(rules, pos, moveto)) == order
