"""From a PVE container config to what LXC and the guest need: pure functions, no I/O.

Property strings ("name=eth0,bridge=vmbr20,ip=10.0.20.100/24", "local-lvm:vm-200-disk-0,size=8G")
are parsed here; lxc_config() writes the LXC config as pve-container would, with `lxc.cgroup.*`
limits on a cgroup v1 (legacy or hybrid) host and `lxc.cgroup2.*` on a unified one;
the guest files (/etc/network/interfaces, /etc/hosts, /etc/hostname, /etc/resolv.conf) follow
PVE::LXC::Setup::Debian.
Departure from Proxmox: with no `nameserver` set, PVE copies the host's resolv.conf. The host's
resolver (10.255.x) must not be used by guests, so the gateway of the first network is written
instead; guests need no DNS for packages (apt and npm go through the proxy by URL).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath

MIB = 1024 * 1024
SUBID_BASE, SUBID_COUNT = 100000, 65536
LXC_CONFIG_DIR = "/usr/share/lxc/config"
HWADDR_OUI = "BC:24:11"  # Proxmox's own OUI, used by PVE >= 8.1 for generated MACs
HOSTS_BEGIN, HOSTS_END = "# --- BEGIN PVE ---", "# --- END PVE ---"
DEFAULT_HOSTS = (
    "127.0.0.1\tlocalhost\n"
    "::1\t\tlocalhost ip6-localhost ip6-loopback\n"
    "ff02::1\t\tip6-allnodes\n"
    "ff02::2\t\tip6-allrouters\n"
)
_NET_KEY = re.compile(r"^net(\d+)$")
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)([KMGT]?)$")


class ConfigError(ValueError):
    """A PVE config value this sandbox cannot turn into an LXC config."""


@dataclass(frozen=True)
class HostCaps:
    """What the host offers that changes the generated config."""

    memsw: bool = True  # swap accounting: memory.memsw.limit_in_bytes (v1) or memory.swap.max (v2)
    cpus: int = 1  # online CPUs, to clamp the cpuset for `cores`
    cgroup: int = 1  # cgroup version of the limits: 2 on a unified host, 1 on a legacy or hybrid one


# --- property strings ------------------------------------------------------------------------


def parse_property_string(value: str, default_key: str | None = None) -> dict[str, str]:
    """'a=1,b=2' -> {'a': '1', 'b': '2'}; a bare first item goes to default_key (rootfs: 'volume')."""
    result: dict[str, str] = {}
    for index, item in enumerate(part.strip() for part in value.split(",") if part.strip()):
        key, sep, val = item.partition("=")
        if not sep:
            if index != 0 or default_key is None:
                raise ConfigError(f"'{item}' in '{value}' has no key")
            key, val = default_key, item
        if key in result:
            raise ConfigError(f"duplicate key '{key}' in '{value}'")
        result[key] = val
    return result


def format_property_string(props: Mapping[str, str], default_key: str | None = None) -> str:
    """Inverse of parse_property_string (the default key's value comes first, bare)."""
    items = [props[default_key]] if default_key and default_key in props else []
    items += [f"{k}={v}" for k, v in props.items() if k != default_key]
    return ",".join(items)


def parse_size(value: str) -> int:
    """PVE disk sizes ('1000G', '512M', '8') -> bytes; a bare number means GiB as in PVE."""
    match = _SIZE.match(value.strip().upper())
    if not match:
        raise ConfigError(f"bad size '{value}'")
    number, unit = float(match.group(1)), match.group(2) or "G"
    return int(number * 1024 ** "BKMGT".index(unit))


def is_enabled(value: str | None) -> bool:
    """PVE booleans: 1/0, also yes/no/on/off/true/false."""
    return (value or "0").strip().lower() in {"1", "yes", "on", "true"}


def networks(conf: Mapping[str, str]) -> list[tuple[int, dict[str, str]]]:
    """[(index, parsed netN)] in index order."""
    found = [(int(m.group(1)), key) for key in conf if (m := _NET_KEY.match(key))]
    return [(index, parse_property_string(conf[key])) for index, key in sorted(found)]


# --- hwaddr ----------------------------------------------------------------------------------


def generate_hwaddr(random_bytes: Callable[[int], bytes] = os.urandom) -> str:
    """A MAC like PVE generates: its OUI BC:24:11 and three random bytes."""
    tail = ":".join(f"{b:02X}" for b in random_bytes(3))
    return f"{HWADDR_OUI}:{tail}"


def ensure_hwaddr(conf: Mapping[str, str],
                  random_bytes: Callable[[int], bytes] = os.urandom) -> dict[str, str]:
    """A copy of conf where every netN has a hwaddr (generated when absent), to be stored back."""
    result = dict(conf)
    for index, net in networks(conf):
        if "hwaddr" not in net:
            net["hwaddr"] = generate_hwaddr(random_bytes)
            result[f"net{index}"] = format_property_string(net)
    return result


# --- LXC config ------------------------------------------------------------------------------


def lxc_config(vmid: int, conf: Mapping[str, str], rootfs: PurePosixPath, caps: HostCaps) -> str:
    """The LXC config text for container `vmid` (name = vmid, as pve-container does)."""
    unprivileged = is_enabled(conf.get("unprivileged"))
    features = parse_property_string(conf.get("features", ""))
    lines = [f"# generated by pvesim from the PVE config of CT {vmid}; do not edit",
             f"lxc.include = {LXC_CONFIG_DIR}/debian.common.conf"]
    if unprivileged:
        lines.append(f"lxc.include = {LXC_CONFIG_DIR}/debian.userns.conf")
    if is_enabled(features.get("nesting")):
        lines.append(f"lxc.include = {LXC_CONFIG_DIR}/nesting.conf")
    lines += [
        "lxc.apparmor.profile = unconfined",
        f"lxc.arch = {_lxc_arch(conf.get('arch', 'amd64'))}",
        f"lxc.uts.name = {conf.get('hostname', f'CT{vmid}')}",
        f"lxc.rootfs.path = dir:{rootfs}",
        f"lxc.tty.max = {conf.get('tty', '2')}",
        "lxc.signal.halt = SIGRTMIN+3",  # systemd halts cleanly on it (its default SIGPWR does not)
    ]
    if unprivileged:
        lines += [f"lxc.idmap = {kind} 0 {SUBID_BASE} {SUBID_COUNT}" for kind in ("u", "g")]
    prefix = "lxc.cgroup2" if caps.cgroup == 2 else "lxc.cgroup"
    lines += [f"{prefix}.{key} = {value}" for key, value in cgroup_limits(conf, caps).items()]
    for index, net in networks(conf):
        lines += _net_lines(vmid, index, net)
    return "\n".join(lines) + "\n"


def _lxc_arch(arch: str) -> str:
    """PVE arch names -> LXC's."""
    return {"amd64": "x86_64", "i386": "i686", "arm64": "aarch64", "armhf": "armv7l"}.get(arch, arch)


def cgroup_limits(conf: Mapping[str, str], caps: HostCaps) -> dict[str, str]:
    """cgroup settings for memory, swap, cores (cpuset), cpulimit and cpuunits, in caps.cgroup's
    version (PVE::LXC::update_lxc_config; live updates write the same files, see pvesim.cgroup)."""
    memory = int(conf.get("memory", "512")) * MIB
    swap = int(conf.get("swap", "512")) * MIB
    cpulimit = float(conf.get("cpulimit", "0"))
    if caps.cgroup == 2:
        limits = {"memory.max": str(memory), "memory.high": str(memory_high(memory))}
        if caps.memsw:
            limits["memory.swap.max"] = str(swap)  # swap alone, where v1 limits memory + swap
    else:
        limits = {"memory.limit_in_bytes": str(memory)}
        if caps.memsw:
            limits["memory.memsw.limit_in_bytes"] = str(memory + swap)
    if "cores" in conf:
        cores = max(1, min(int(conf["cores"]), caps.cpus))
        limits["cpuset.cpus"] = "0" if cores == 1 else f"0-{cores - 1}"
    if cpulimit > 0 and caps.cgroup == 2:
        limits["cpu.max"] = f"{int(cpulimit * 100000)} 100000"
    elif cpulimit > 0:
        limits["cpu.cfs_period_us"] = "100000"
        limits["cpu.cfs_quota_us"] = str(int(cpulimit * 100000))
    if "cpuunits" in conf and caps.cgroup == 2:
        limits["cpu.weight"] = str(min(int(conf["cpuunits"]), 10000))  # PVE::CGroup::clamp_cpu_shares
    elif "cpuunits" in conf:
        limits["cpu.shares"] = conf["cpuunits"]
    return limits


def memory_high(memory: int) -> int:
    """cgroup v2 memory.high for a memory.max of `memory` bytes: 1016/1024 of it, at most 128 MiB
    below it from 16 GiB up (PVE::LXC::Config::calculate_memory_constraints)."""
    return memory - 128 * MIB if memory >= 16 * 1024 * MIB else memory // 1024 * 1016


def _net_lines(vmid: int, index: int, net: Mapping[str, str]) -> list[str]:
    """A veth on the PVE bridge, host side named veth<vmid>i<n> as pve-container names it."""
    if "bridge" not in net:
        raise ConfigError(f"net{index} has no bridge")
    prefix = f"lxc.net.{index}"
    lines = [f"{prefix}.type = veth", f"{prefix}.link = {net['bridge']}", f"{prefix}.flags = up",
             f"{prefix}.name = {net.get('name', f'eth{index}')}", f"{prefix}.veth.pair = veth{vmid}i{index}"]
    if "hwaddr" in net:
        lines.append(f"{prefix}.hwaddr = {net['hwaddr']}")
    if "mtu" in net:
        lines.append(f"{prefix}.mtu = {net['mtu']}")
    return lines


# --- guest files -----------------------------------------------------------------------------


def interfaces_file(conf: Mapping[str, str]) -> str:
    """/etc/network/interfaces as PVE writes it for Debian (ifupdown)."""
    stanzas = ["auto lo\niface lo inet loopback\n"]
    for index, net in networks(conf):
        stanzas.append(_iface_stanza(net.get("name", f"eth{index}"), net))
    return "\n".join(stanzas)


def _iface_stanza(name: str, net: Mapping[str, str]) -> str:
    """One interface: ip=static CIDR (with gw), dhcp or manual; ip6 likewise (auto too)."""
    text = f"auto {name}\n"
    text += _family_stanza(name, "inet", net.get("ip"), net.get("gw"))
    if net.get("ip6"):
        text += _family_stanza(name, "inet6", net.get("ip6"), net.get("gw6"))
    return text


def _family_stanza(name: str, family: str, ip: str | None, gateway: str | None) -> str:
    """iface lines for one address family."""
    if ip in (None, "", "manual"):
        return f"iface {name} {family} manual\n"
    if ip in ("dhcp", "auto"):
        return f"iface {name} {family} {ip}\n"
    text = f"iface {name} {family} static\n\taddress {ip}\n"
    return text + (f"\tgateway {gateway}\n" if gateway else "")


def primary_ipv4(conf: Mapping[str, str]) -> str | None:
    """The first static IPv4 address (without prefix), the one /etc/hosts names."""
    for _, net in networks(conf):
        ip = net.get("ip", "")
        if "/" in ip:
            return ip.split("/", 1)[0]
    return None


def hosts_file(conf: Mapping[str, str], existing: str | None = None) -> str:
    """/etc/hosts with PVE's marked block (replaced on update; lines outside it are kept)."""
    hostname = conf.get("hostname", "localhost")
    domain = conf.get("searchdomain", "").split()[0] if conf.get("searchdomain", "").split() else ""
    names = f"{hostname}.{domain} {hostname}" if domain else hostname
    block = f"{HOSTS_BEGIN}\n{primary_ipv4(conf) or '127.0.1.1'} {names}\n{HOSTS_END}\n"
    return _replace_block(existing if existing is not None else DEFAULT_HOSTS, block)


def _replace_block(text: str, block: str) -> str:
    """Put `block` where the PVE markers are, or append it."""
    start, end = text.find(HOSTS_BEGIN), text.find(HOSTS_END)
    if start != -1 and end > start:
        return text[:start] + block + text[end + len(HOSTS_END):].lstrip("\n")
    return text + ("" if text.endswith("\n") or not text else "\n") + block


def hostname_file(conf: Mapping[str, str]) -> str:
    """/etc/hostname."""
    return f"{conf.get('hostname', 'localhost')}\n"


def resolv_conf(conf: Mapping[str, str]) -> str:
    """/etc/resolv.conf from nameserver/searchdomain; else the first gateway (see module doc)."""
    servers = conf.get("nameserver", "").split() or [
        net["gw"] for _, net in networks(conf) if net.get("gw")][:1]
    lines = [f"search {conf['searchdomain']}"] if conf.get("searchdomain") else []
    lines += [f"nameserver {server}" for server in servers]
    return "# --- BEGIN PVE ---\n" + "".join(f"{line}\n" for line in lines) + "# --- END PVE ---\n"


def guest_files(conf: Mapping[str, str], existing_hosts: str | None = None) -> dict[str, str]:
    """Path inside the guest -> content, for every file pvesim writes into it."""
    return {
        "etc/network/interfaces": interfaces_file(conf),
        "etc/hosts": hosts_file(conf, existing_hosts),
        "etc/hostname": hostname_file(conf),
        "etc/resolv.conf": resolv_conf(conf),
    }
