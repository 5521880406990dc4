"""Where the VIP is: `ip -o -4 addr show` of each load balancer, and the verdict "on exactly one". Pure."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

ADDRESSES = "ip -o -4 addr show"


def addresses(text: str) -> set[str]:
    """IPv4 addresses (without prefix) from `ip -o -4 addr show`:
    `2: eth0    inet 10.0.20.240/24 brd 10.0.20.255 scope global eth0\\ ...`."""
    out = set()
    for line in text.splitlines():
        words = line.split()
        if "inet" in words and words.index("inet") + 1 < len(words):
            out.add(str(ipaddress.IPv4Interface(words[words.index("inet") + 1]).ip))
    return out


def holders(outputs: Mapping[str, str], vip: str) -> list[str]:
    """The load balancers (hostname -> their `ip -o -4 addr show`) that hold the VIP."""
    address = str(ipaddress.IPv4Interface(vip).ip)
    return sorted(host for host, text in outputs.items() if address in addresses(text))


def sole_holder(outputs: Mapping[str, str], vip: str) -> str | None:
    """The one load balancer holding the VIP; None when none or several do."""
    found = holders(outputs, vip)
    return found[0] if len(found) == 1 else None


def problem(outputs: Mapping[str, str], vip: str) -> str:
    """'' when exactly one load balancer holds the VIP, else what is wrong."""
    found = holders(outputs, vip)
    if len(found) == 1:
        return ""
    if not found:
        return f"no load balancer holds the VIP {vip} ({', '.join(sorted(outputs))} checked)"
    return f"the VIP {vip} is on {len(found)} load balancers at once ({', '.join(found)}): split brain"


def appears(vip: str, within_s: float) -> str:
    """Bash on a load balancer: poll its addresses every 0.1 s until the VIP is on it (exit 0), at most
    `within_s` seconds (exit 1). Returning is the moment: the caller times it on its own clock."""
    address = str(ipaddress.IPv4Interface(vip).ip)
    return (f"end=$((SECONDS + {int(within_s) + 1}))\n"
            f"while [ $SECONDS -lt $end ]; do\n"
            f"  {ADDRESSES} | grep -qF ' inet {address}/' && exit 0\n"
            "  sleep 0.1\ndone\nexit 1\n")
