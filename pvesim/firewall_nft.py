"""Proxmox container firewall rules -> one nftables table (`inet pvesim_fw`), pure except `load`.

How the sandbox enforces what PVE enforces with iptables/physdev on the bridge ports:
- br_netfilter is built into this kernel with bridge-nf-call-iptables=1, so traffic bridged between
  guests passes the inet `forward` hook like routed traffic between vmbr20 and vmbr30 does. The
  bridge family has neither conntrack nor reject here (no nf_conntrack_bridge), so guests are
  matched by the static IPv4 of each net[n] with firewall=1 rather than by veth name; with
  ipfilter=1 the table `bridge pvesim_fw` drops frames from veth<vmid>i<n> carrying another IPv4
  source (PVE's ipfilter), which makes that address match trustworthy.
- Per interface two chains: `..._out` (rules of type out, then policy_out, default ACCEPT) runs
  first and *returns* on accept so that the destination's `..._in` chain (rules of type in, then
  policy_in, default DROP) still decides. Established/related traffic passes both.
- Traffic from guests to the node (input hook) goes through the guest's out chain. Traffic the
  node itself sends to guests is not filtered: it is not bridged, as on a PVE node.
- Nothing is enforced unless the datacenter firewall (cluster.fw `enable: 1`) and the guest's
  (`enable: 1`) are both on, as in PVE. Interfaces without a static IPv4 are not filtered.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pvesim.firewall_conf import FirewallConf

TABLE = "pvesim_fw"
# PVE macros (pve-firewall's $pve_fw_macros), a common subset: name -> [(proto, dport)]
MACROS: dict[str, list[tuple[str, str]]] = {
    "SSH": [("tcp", "22")],
    "HTTP": [("tcp", "80")],
    "HTTPS": [("tcp", "443")],
    "Web": [("tcp", "80"), ("tcp", "443")],
    "DNS": [("udp", "53"), ("tcp", "53")],
    "NTP": [("udp", "123")],
    "SMTP": [("tcp", "25")],
    "MySQL": [("tcp", "3306")],
    "PostgreSQL": [("tcp", "5432")],
    "Rsync": [("tcp", "873")],
    "Squid": [("tcp", "3128")],
    "Syslog": [("udp", "514"), ("tcp", "514")],
    "Ping": [("icmp", "")],
}
ICMP_TYPES = {"echo-reply", "destination-unreachable", "source-quench", "redirect", "echo-request",
              "router-advertisement", "router-solicitation", "time-exceeded", "parameter-problem",
              "timestamp-request", "timestamp-reply", "info-request", "info-reply", "address-mask-request",
              "address-mask-reply"}
_PORT = re.compile(r"^(\d+)(?::(\d+))?$")


class RuleError(ValueError):
    """A rule field pve-firewall would refuse; `field` names the parameter for the 400."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Guest:
    """A container as the firewall sees it: its .fw and its interfaces {index: net props}."""

    vmid: int
    conf: FirewallConf
    nets: Mapping[int, Mapping[str, str]]


def macro_name(name: str) -> str:
    """The canonical macro name (PVE matches case-insensitively); RuleError if unknown."""
    for known in MACROS:
        if known.lower() == name.lower():
            return known
    raise RuleError("macro", f"unknown macro '{name}'")


def addresses(spec: str, conf: FirewallConf) -> list[str]:
    """A source/dest spec ('10.0.20.5', '10.0.0.0/24', 'a-b', lists, '+ipset', alias) -> nft elements."""
    out: list[str] = []
    for item in (x.strip() for x in spec.split(",")):
        if item.startswith("+"):
            ipset = conf.ipsets.get(item[1:])
            if ipset is None:
                raise ValueError(f"no such ipset '{item[1:]}'")
            out += [address for e in ipset.entries if e.get("nomatch") != "1"
                    for address in addresses(e["cidr"], conf)]
        elif item.lower() in conf.aliases:
            out += addresses(conf.aliases[item.lower()]["cidr"], conf)
        else:
            out.append(_address(item))
    return out


def _address(item: str) -> str:
    """One IPv4 address, CIDR or range a-b, normalized; ValueError otherwise."""
    if "-" in item:
        low, high = (ipaddress.IPv4Address(x) for x in item.split("-", 1))
        if high < low:
            raise ValueError(f"range '{item}' goes backwards")
        return f"{low}-{high}"
    if "/" in item:
        return str(ipaddress.IPv4Network(item, strict=False))
    return str(ipaddress.IPv4Address(item))


def ports(spec: str) -> list[str]:
    """A port spec ('5432', '80:90', '22,80', 'ssh') -> nft elements ('80-90'); ValueError if bad."""
    out = []
    for item in (x.strip() for x in spec.split(",")):
        match = _PORT.match(item)
        if match:
            low, high = int(match.group(1)), int(match.group(2) or match.group(1))
            if not 0 < low <= high < 65536:
                raise ValueError(f"invalid port '{item}'")
            out.append(str(low) if low == high else f"{low}-{high}")
        else:
            try:
                out.append(str(socket.getservbyname(item)))
            except OSError:
                raise ValueError(f"invalid port '{item}'") from None
    return out


def verify_rule(rule: Mapping[str, str], conf: FirewallConf, net_keys: Iterable[str]) -> None:
    """Check a rule as pve-firewall's verify_rule does; RuleError(field, message) on the first fault."""
    if rule["type"] == "group":
        raise RuleError("action", f"security group '{rule['action']}' does not exist")
    if rule["action"] not in ("ACCEPT", "DROP", "REJECT"):
        raise RuleError("action", f"unknown action '{rule['action']}'")
    if rule.get("macro"):
        macro_name(rule["macro"])
    if rule.get("iface") and rule["iface"] not in set(net_keys):
        raise RuleError("iface", f"no such interface '{rule['iface']}' (use net[n] names)")
    for key in ("source", "dest"):
        if rule.get(key):
            try:
                addresses(rule[key], conf)
            except ValueError as e:
                raise RuleError(key, f"invalid address: {e}") from None
    proto = rule.get("proto", "")
    for key in ("dport", "sport"):
        if rule.get(key):
            if proto not in ("tcp", "udp") and not rule.get("macro"):
                raise RuleError(key, f"protocol '{proto or 'any'}' does not support ports")
            try:
                ports(rule[key])
            except ValueError as e:
                raise RuleError(key, str(e)) from None
    if proto and protocol_number(proto) is None:
        raise RuleError("proto", f"unknown protocol '{proto}'")
    icmp_type = rule.get("icmp-type")
    if icmp_type and (proto != "icmp" or not (icmp_type in ICMP_TYPES or icmp_type.isdigit())):
        raise RuleError("icmp-type", f"icmp-type '{icmp_type}' needs proto icmp and a known type")


def protocol_number(proto: str) -> int | None:
    """'tcp' -> 6, '47' -> 47, per /etc/protocols as PVE resolves names; None if unknown."""
    if proto.isdigit():
        return int(proto) if int(proto) < 256 else None
    try:
        return socket.getprotobyname(proto)
    except OSError:
        return None


# --- translation ------------------------------------------------------------------------------


def _set(elements: list[str]) -> str:
    return elements[0] if len(elements) == 1 else "{ " + ", ".join(elements) + " }"


def _matches(rule: Mapping[str, str], conf: FirewallConf) -> list[str]:
    """nft match expressions for one rule (a macro gives one per macro entry)."""
    common = []
    if rule.get("source"):
        common.append(f"ip saddr {_set(addresses(rule['source'], conf))}")
    if rule.get("dest"):
        common.append(f"ip daddr {_set(addresses(rule['dest'], conf))}")
    entries = MACROS[macro_name(rule["macro"])] if rule.get("macro") else [("", "")]
    out = []
    for macro_proto, macro_dport in entries:
        proto = rule.get("proto") or macro_proto
        dport = rule.get("dport") or macro_dport
        parts = list(common)
        if proto in ("tcp", "udp"):
            if dport:
                parts.append(f"{proto} dport {_set(ports(dport))}")
            if rule.get("sport"):
                parts.append(f"{proto} sport {_set(ports(rule['sport']))}")
            if not dport and not rule.get("sport"):
                parts.append(f"meta l4proto {proto}")
        elif proto == "icmp":
            parts.append(f"icmp type {rule.get('icmp-type') or 'echo-request'}" if rule.get("macro")
                         or rule.get("icmp-type") else "meta l4proto icmp")
        elif proto:
            parts.append(f"meta l4proto {protocol_number(proto)}")
        out.append(" ".join(parts))
    return out


def _verdicts(action: str, inbound: bool) -> list[str]:
    """nft verdicts for ACCEPT/DROP/REJECT; an outbound accept returns so the peer's in chain decides."""
    if action == "ACCEPT":
        return ["accept" if inbound else "return"]
    if action == "REJECT":
        return ["meta l4proto tcp reject with tcp reset", "reject"]
    return ["drop"]


def chain_rules(guest: Guest, iface: str, inbound: bool) -> list[str]:
    """The body of one interface's in or out chain: conntrack, the rules in order, the policy."""
    conf = guest.conf
    kind = "in" if inbound else "out"
    lines = ["ct state established,related " + ("accept" if inbound else "return"), "ct state invalid drop"]
    for rule in conf.rules:
        if rule.get("enable", "1") != "1" or rule["type"] != kind or rule.get("iface", iface) != iface:
            continue
        for match in _matches(rule, conf):
            lines += [f"{match} {verdict}".strip() for verdict in _verdicts(rule["action"], inbound)]
    policy = conf.options.get(f"policy_{kind}", "DROP" if inbound else "ACCEPT")
    return lines + _verdicts(policy, inbound)


def static_ipv4(net: Mapping[str, str]) -> str | None:
    """The address of `ip=10.0.20.5/24`, None for dhcp/manual/none."""
    ip = net.get("ip", "")
    return ip.split("/", 1)[0] if "/" in ip else None


def filtered_interfaces(guest: Guest) -> list[tuple[str, str, str]]:
    """[(netN, veth name, IPv4)] of interfaces with firewall=1 and a static IPv4, if the guest's is on."""
    if guest.conf.options.get("enable") != "1":
        return []
    out = []
    for index, net in sorted(guest.nets.items()):
        address = static_ipv4(net)
        if net.get("firewall") == "1" and address:
            out.append((f"net{index}", f"veth{guest.vmid}i{index}", address))
    return out


def ruleset(cluster_enabled: bool, guests: Iterable[Guest]) -> str:
    """The whole nft script: replaces our two tables atomically (empty when the datacenter is off)."""
    chains: list[str] = []
    dispatch_out: list[str] = []
    dispatch_in: list[str] = []
    spoof: list[str] = []
    for guest in guests if cluster_enabled else ():
        for iface, veth, address in filtered_interfaces(guest):
            name = f"ct{guest.vmid}_{iface}"
            for inbound in (False, True):
                body = "".join(f"    {line}\n" for line in chain_rules(guest, iface, inbound))
                chains.append(f"  chain {name}_{'in' if inbound else 'out'} {{\n{body}  }}\n")
            dispatch_out.append(f"    ip saddr {address} jump {name}_out\n")
            dispatch_in.append(f"    ip daddr {address} jump {name}_in\n")
            if guest.conf.options.get("ipfilter") == "1":
                spoof += [f'    iifname "{veth}" ether type ip ip saddr != {address} drop\n',
                          f'    iifname "{veth}" ether type arp arp saddr ip != {address} drop\n']
    header = "    type filter hook {} priority filter; policy accept;\n"
    return (
        f"table inet {TABLE}\ndelete table inet {TABLE}\n"
        f"table bridge {TABLE}\ndelete table bridge {TABLE}\n"
        f"table inet {TABLE} {{\n" + "".join(chains)
        + "  chain forward {\n" + header.format("forward") + "".join(dispatch_out + dispatch_in) + "  }\n"
        + "  chain input {\n" + header.format("input") + "".join(dispatch_out) + "  }\n"
        "}\n"
        f"table bridge {TABLE} {{\n  chain prerouting {{\n"
        "    type filter hook prerouting priority filter; policy accept;\n" + "".join(spoof) + "  }\n}\n"
    )


def removal() -> str:
    """An nft script that removes our tables (whether or not they exist)."""
    return (f"table inet {TABLE}\ndelete table inet {TABLE}\n"
            f"table bridge {TABLE}\ndelete table bridge {TABLE}\n")


def load(script: str) -> None:
    """Run an nft script in one transaction; RuntimeError with nft's message if it is refused."""
    result = subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"nft refused the firewall ruleset: {result.stderr.strip()}")
