"""The sandbox's host networking: bridges vmbr20/vmbr30, routing between them, no egress for guests.

Everything set up here is recorded in the state dir (network.json) so teardown removes exactly
what pvesim created and restores what it changed: bridges, the `unreachable 10.0.0.0/16` route,
the nftables table `inet pvesim` (only that table; the rest of the ruleset is never touched),
ip_forward, vm.max_map_count (Elasticsearch in an LXC needs >= 262144 on the host: it is not
namespaced), fs.inotify.max_user_instances (every unprivileged container's root is host uid 100000, so
all their systemds share one per-user limit: Debian's 128 runs out at about 15 containers and the next
one's systemd never finishes booting) and root's subordinate id range in /etc/subuid and /etc/subgid.
eth0 and 10.255.0.0/16 (this machine's resolver) are never touched.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pvesim import firewall_nft
from pvesim.backend import BackendError
from pvesim.paths import StateDir


@dataclass(frozen=True)
class Bridge:
    name: str
    address: str
    prefix: int = 24

    @property
    def cidr(self) -> str:
        return f"{self.address}/{self.prefix}"


BRIDGES = (Bridge("vmbr20", "10.0.20.1"), Bridge("vmbr30", "10.0.30.1"))
UNREACHABLE = "10.0.0.0/16"
NFT_TABLE = "pvesim"
SUBID_LINE = "root:100000:65536"
SUBID_FILES = (Path("/etc/subuid"), Path("/etc/subgid"))
MAX_MAP_COUNT = 262144
SYSCTL_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
SYSCTL_MAX_MAP = Path("/proc/sys/vm/max_map_count")
INOTIFY_INSTANCES = 1024
SYSCTL_INOTIFY = Path("/proc/sys/fs/inotify/max_user_instances")


def _record_path(state: StateDir) -> Path:
    return state.root / "network.json"


def _load_record(state: StateDir) -> dict[str, Any]:
    """What earlier setups created or changed (empty when nothing is recorded)."""
    path = _record_path(state)
    return dict(json.loads(path.read_text())) if path.is_file() else {}


def _save_record(state: StateDir, record: dict[str, Any]) -> None:
    """Write the record atomically: a crash never leaves half a record behind."""
    state.root.mkdir(parents=True, exist_ok=True)
    tmp = _record_path(state).with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    tmp.replace(_record_path(state))


def _run(*argv: str, stdin: str | None = None) -> str:
    """Run a command; failure becomes a BackendError naming it."""
    result = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BackendError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return result.stdout


def setup_network(state: StateDir) -> None:
    """Create bridges, route, nft table, sysctls and subids if missing (idempotent), recording each."""
    record = _load_record(state)
    for bridge in BRIDGES:
        if _ensure_bridge(bridge):
            _remember(record, "bridges", bridge.name)
        _save_record(state, record)
    if _ensure_unreachable_route():
        record["route"] = UNREACHABLE
    _apply_nft()
    record["nft_table"] = NFT_TABLE
    _raise_sysctl(record, "ip_forward", SYSCTL_FORWARD, 1)
    _raise_sysctl(record, "max_map_count", SYSCTL_MAX_MAP, MAX_MAP_COUNT)
    _raise_sysctl(record, "inotify_instances", SYSCTL_INOTIFY, INOTIFY_INSTANCES)
    for path in SUBID_FILES:
        if _ensure_line(path, SUBID_LINE):
            _remember(record, "subid_added", str(path))
    _save_record(state, record)


def _remember(record: dict[str, Any], key: str, item: str) -> None:
    """Add item to the record's list under key, once (a bridge re-created after a reboot, say)."""
    items = record.setdefault(key, [])
    if item not in items:
        items.append(item)


def teardown_network(state: StateDir) -> None:
    """Undo exactly what setup_network recorded; a second call does nothing."""
    record = _load_record(state)
    if record.get("nft_table"):
        _run("nft", "-f", "-", stdin=f"table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\n")
        _run("nft", "-f", "-", stdin=firewall_nft.removal())  # the guests' firewall (handlers_firewall)
    if record.get("route") and _route_exists():
        _run("ip", "route", "del", "unreachable", UNREACHABLE)
    for name in record.get("bridges", []):
        if _link_exists(name):
            _run("ip", "link", "del", name)
    for key, path in (("ip_forward", SYSCTL_FORWARD), ("max_map_count", SYSCTL_MAX_MAP),
                      ("inotify_instances", SYSCTL_INOTIFY)):
        if key in record:
            path.write_text(f"{record[key]}\n")
    for path in record.get("subid_added", []):
        _remove_line(Path(path), SUBID_LINE)
    _record_path(state).unlink(missing_ok=True)


def _link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def _ensure_bridge(bridge: Bridge) -> bool:
    """Create the bridge with its address and bring it up; True when it had to be created."""
    created = not _link_exists(bridge.name)
    if created:
        _run("ip", "link", "add", "name", bridge.name, "type", "bridge")
    addrs = json.loads(_run("ip", "-j", "-4", "addr", "show", "dev", bridge.name))
    have = {f"{a['local']}/{a['prefixlen']}" for link in addrs for a in link.get("addr_info", [])}
    if bridge.cidr not in have:
        _run("ip", "addr", "add", bridge.cidr, "dev", bridge.name)
    _run("ip", "link", "set", bridge.name, "up")
    return created


def _route_exists() -> bool:
    return bool(_run("ip", "route", "show", "type", "unreachable", UNREACHABLE).strip())


def _ensure_unreachable_route() -> bool:
    """Nothing for 10.0.0.0/16 leaves the machine; the bridges' /24s are more specific and win."""
    if _route_exists():
        return False
    _run("ip", "route", "add", "unreachable", UNREACHABLE)
    return True


def nft_ruleset() -> str:
    """Our one table: forward between the bridges, drop other forwarding to or from them,
    and let guests reach only the bridge addresses of the host (proxy, local repos)."""
    names = ", ".join(f'"{b.name}"' for b in BRIDGES)
    addrs = ", ".join(b.address for b in BRIDGES)
    return (
        f"table inet {NFT_TABLE}\n"
        f"delete table inet {NFT_TABLE}\n"  # replace atomically, whatever was there before
        f"table inet {NFT_TABLE} {{\n"
        "  chain forward {\n"
        "    type filter hook forward priority filter; policy accept;\n"
        f"    iifname {{ {names} }} oifname {{ {names} }} accept\n"
        f"    iifname {{ {names} }} drop\n"
        f"    oifname {{ {names} }} drop\n"
        "  }\n"
        "  chain input {\n"
        "    type filter hook input priority filter; policy accept;\n"
        f"    iifname {{ {names} }} fib daddr type local ip daddr != {{ {addrs} }} drop\n"
        "  }\n"
        "}\n"
    )


def _apply_nft() -> None:
    """Load our table in one nft transaction (never flushes anything else)."""
    _run("nft", "-f", "-", stdin=nft_ruleset())


def _raise_sysctl(record: dict[str, Any], key: str, path: Path, minimum: int) -> None:
    """Raise a sysctl to at least `minimum`, remembering the value it had the first time."""
    current = int(path.read_text().strip())
    if current < minimum:
        record.setdefault(key, current)
        path.write_text(f"{minimum}\n")


def _ensure_line(path: Path, line: str) -> bool:
    """Append `line` to the file unless present; True when it was added."""
    text = path.read_text() if path.exists() else ""
    if line in text.splitlines():
        return False
    path.write_text(text + ("" if text.endswith("\n") or not text else "\n") + line + "\n")
    return True


def _remove_line(path: Path, line: str) -> None:
    """Remove `line` from the file (it was added by setup_network)."""
    if path.exists():
        kept = [x for x in path.read_text().splitlines() if x != line]
        path.write_text("".join(f"{x}\n" for x in kept))


def bridges() -> list[dict[str, Any]]:
    """GET /nodes/{node}/network entries for the sandbox's bridges, as Proxmox lists them."""
    return [_bridge_entry(i, b) for i, b in enumerate(BRIDGES)]


def _bridge_entry(index: int, bridge: Bridge) -> dict[str, Any]:
    """One bridge as PVE's network API returns it (booleans as 0/1)."""
    exists = int(_link_exists(bridge.name))
    return {
        "iface": bridge.name,
        "type": "bridge",
        "method": "static",
        "method6": "manual",
        "families": ["inet"],
        "active": exists,
        "exists": exists,
        "autostart": 1,
        "cidr": bridge.cidr,
        "address": bridge.address,
        "netmask": "255.255.255.0",
        "bridge_ports": "",
        "bridge_stp": "off",
        "bridge_fd": "0",
        "priority": index + 10,
        "comments": "pvesim sandbox bridge (no egress)\n",
    }
