"""`pvesim preflight`: every host command, file, setting and kernel feature the sandbox uses, checked
before `pvesim up` changes anything. A missing one is one line naming the Debian package to install.

The lists are read from the code that uses them (module named in each `why`); `scripts/setup` installs
the packages named here. Checks are pure reads under an injectable root directory, so unit tests run
them on a sample tree. Not checked: bridge, veth and nftables support in the kernel (built in or loaded
as modules, which a file test cannot tell apart from missing); `ip link add` and `nft` say so plainly.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pvesim import hostconf

PATH_DIRS = ("usr/local/sbin", "usr/local/bin", "usr/sbin", "usr/bin", "sbin", "bin")
LXC_CONFIG = "usr/share/lxc/config"

# command -> (Debian package, what uses it)
COMMANDS: dict[str, tuple[str, str]] = {
    "lxc-start": ("lxc", "containers (lxc.py)"),
    "lxc-stop": ("lxc", "containers (lxc.py)"),
    "lxc-info": ("lxc", "containers (lxc.py)"),
    "lxc-wait": ("lxc", "containers (lxc.py)"),
    "lxc-attach": ("lxc", "containers (lxc.py, tests)"),
    "lxc-freeze": ("lxc", "suspend (lxc.py)"),
    "lxc-unfreeze": ("lxc", "resume (lxc.py)"),
    "lxc-usernsexec": ("lxc", "unprivileged rootfs extraction (lxc.py)"),
    "lxcfs": ("lxcfs", "the containers' own /proc/meminfo and cpus (lxc.py)"),
    "newuidmap": ("uidmap", "unprivileged containers"),
    "newgidmap": ("uidmap", "unprivileged containers"),
    "debootstrap": ("debootstrap", "the Debian 12 template (templates.py)"),
    "zstd": ("zstd", "template tar.zst (templates.py, lxc.py)"),
    "tar": ("tar", "templates and rootfs extraction"),
    "rsync": ("rsync", "snapshots and clones"),
    "ip": ("iproute2", "bridges and routes (network.py)"),
    "ss": ("iproute2", "the proxies' listeners (proxy.py)"),
    "nft": ("nftables", "the guests' firewall and egress rules (network.py, firewall_nft.py)"),
    "nsenter": ("util-linux", "container addresses (lxc.py)"),
    "umount": ("mount", "lxcfs (lxc.py)"),
    "chroot": ("coreutils", "the template build (templates.py)"),
    "ssh-keygen": ("openssh-client", "guest ssh host keys (lxc.py)"),
    "apt-cacher-ng": ("apt-cacher-ng", "the guests' package proxy (proxy.py)"),
    "dpkg-deb": ("dpkg", "the local apt repositories (repos.py)"),
    "dpkg-scanpackages": ("dpkg-dev", "the local apt repositories (repos.py)"),
    "gpg": ("gpg", "signing the local apt repositories (repos.py)"),
    "openssl": ("openssl", "the API's CA and certificate (daemon.py)"),
    "npm": ("npm", "the nodejs repository's npm package (repos.py), the npm registry setting"),
}

# file under the root -> (Debian package, what uses it)
FILES: dict[str, tuple[str, str]] = {
    f"{LXC_CONFIG}/common.conf": ("liblxc-common", "every container config (guestconf.py)"),
    f"{LXC_CONFIG}/userns.conf": ("liblxc-common", "unprivileged containers (guestconf.py)"),
    f"{LXC_CONFIG}/nesting.conf": ("liblxc-common", "features nesting=1 (guestconf.py)"),
    f"{LXC_CONFIG}/debian.common.conf": ("lxc-templates", "every container config (guestconf.py)"),
    f"{LXC_CONFIG}/debian.userns.conf": ("lxc-templates", "unprivileged containers (guestconf.py)"),
    "usr/lib/apt-cacher-ng": ("apt-cacher-ng", "apt-cacher-ng's SupportDir (proxy.py)"),
    "etc/ssl/certs/ca-certificates.crt": ("ca-certificates", "the CA bundle given to guests (proxy.py)"),
}


@dataclass(frozen=True)
class Problem:
    """One missing thing and what to do about it, said in one line."""

    what: str
    hint: str

    def line(self) -> str:
        return f"{self.what}: {self.hint}"


class Host:
    """Read-only view of a machine under `root` (/ for this one)."""

    def __init__(self, root: Path = Path("/"), env: Mapping[str, str] | None = None,
                 npm_get: Callable[[], str | None] | None = None) -> None:
        self.root, self.env = root, dict(os.environ if env is None else env)
        self.npm_get = npm_get

    def path(self, relative: str) -> Path:
        return self.root / relative.lstrip("/")

    def has_command(self, name: str) -> bool:
        return any(os.access(self.path(f"{d}/{name}"), os.X_OK) for d in PATH_DIRS)

    def read(self, relative: str) -> str | None:
        try:
            return self.path(relative).read_text(errors="replace")
        except OSError:
            return None


def _install(package: str) -> str:
    return f"apt-get install {package}"


def check_commands(host: Host) -> list[Problem]:
    return [Problem(f"command {name} is missing (used for {why})", _install(package))
            for name, (package, why) in COMMANDS.items() if not host.has_command(name)]


def check_files(host: Host) -> list[Problem]:
    return [Problem(f"/{rel} is missing (used by {why})", _install(package))
            for rel, (package, why) in FILES.items() if not host.path(rel).exists()]


def check_kernel(host: Host) -> list[Problem]:
    """User namespaces, a mounted cgroup hierarchy, /dev/fuse (lxcfs), the sysctls network.py sets."""
    found = []
    userns = host.read("proc/sys/user/max_user_namespaces")
    if userns is not None and userns.strip() == "0":
        found.append(Problem("user namespaces are disabled (/proc/sys/user/max_user_namespaces is 0)",
                             "sysctl -w user.max_user_namespaces=15000 (unprivileged containers need them)"))
    mounts = host.read("proc/self/mounts") or ""
    if not any(len(f) > 2 and f[1].startswith("/sys/fs/cgroup") and f[2] in ("cgroup", "cgroup2")
               for f in (line.split() for line in mounts.splitlines())):
        found.append(Problem("no cgroup hierarchy is mounted under /sys/fs/cgroup",
                             "boot with systemd, or mount cgroup2 on /sys/fs/cgroup (LXC needs it)"))
    if not host.path("dev/fuse").exists():
        found.append(Problem("/dev/fuse is missing (lxcfs needs it)", "modprobe fuse"))
    for sysctl in ("net/ipv4/ip_forward", "vm/max_map_count", "fs/inotify/max_user_instances"):
        if not host.path(f"proc/sys/{sysctl}").exists():
            found.append(Problem(f"/proc/sys/{sysctl} is missing (network.py sets it)",
                                 "run on a full Linux host (or a privileged container with /proc/sys)"))
    return found


def check_config(host: Host) -> list[Problem]:
    """The mirrors and registry the sandbox takes from this machine's configuration (hostconf.py)."""
    found = []
    sources = hostconf.apt_sources(host.root)
    for reader in (hostconf.debian_mirror, hostconf.security_mirror):
        try:
            reader(sources)
        except hostconf.HostConfigError as e:
            found.append(Problem(str(e).split(" (", 1)[0],
                                 "add it to /etc/apt/sources.list.d/debian.sources"))
    if host.has_command("npm") or "npm_config_registry" in {k.lower() for k in host.env}:
        try:
            hostconf.npm_registry(host.env, host.root, host.npm_get or hostconf.npm_config_get)
        except hostconf.HostConfigError as e:
            found.append(Problem("no npm registry is configured", str(e).split(": ", 1)[-1]))
    return found


def problems(host: Host) -> list[Problem]:
    """Everything missing on `host`, commands first (empty: the sandbox can start)."""
    return [*check_commands(host), *check_files(host), *check_kernel(host), *check_config(host)]


def report(host: Host | None = None, say: Callable[[str], None] = print) -> bool:
    """Print one line per problem (prefixed `preflight:`); True when there is none."""
    found = problems(host or Host())
    for problem in found:
        say(f"preflight: {problem.line()}")
    if found:
        say(f"preflight: {len(found)} problem(s); `bash scripts/setup` installs every package named above")
    return not found
