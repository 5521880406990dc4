"""Container templates: what aplinfo offers, and building Proxmox's Debian 12 standard template locally.

download.proxmox.com is unreachable here, so `POST aplinfo` builds the template once with
debootstrap (from the Debian mirror of this machine's apt sources, through the apt-cacher-ng proxy on
127.0.0.1:3142 when it is up, else directly) and caches it in the `local` storage's template/cache,
like a downloaded one. The template's own apt sources name the same mirrors.
Left out compared with Proxmox's template: postfix (a mail server nobody here uses) and rsyslog
(journald keeps the logs); isc-dhcp-client is left out too (containers get static IPs).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pvesim import hostconf
from pvesim.backend import BackendError, Log
from pvesim.paths import StateDir

SUITE = hostconf.SUITE
PROXY_HOST, PROXY_PORT = "127.0.0.1", 3142

# Proxmox's debian-12-standard carries these on top of minbase (postfix, rsyslog left out: see above).
PACKAGES = (
    "systemd-sysv", "openssh-server", "ifupdown", "iproute2", "iputils-ping", "ca-certificates",
    "curl", "wget", "less", "procps", "cron", "locales", "nano", "vim-tiny", "sudo", "apt-utils",
    "netbase", "logrotate", "tzdata", "dbus", "bash-completion", "lsb-release", "openssl",
)

TEMPLATES: dict[str, dict[str, str]] = {
    "debian-12-standard_12.7-1_amd64.tar.zst": {
        "os": "debian-12",
        "package": "debian-12-standard",
        "version": "12.7-1",
        "headline": "Debian 12 Bookworm (standard)",
        "description": "Debian 12 Bookworm (standard)\n"
        "A small Debian Bookworm system including all standard packages.\n"
        "pvesim: built locally with debootstrap (download.proxmox.com is unreachable here).",
    },
}

# An unprivileged container may not mount debugfs; masked so systemd reports `running`, not `degraded`.
MASKED_UNITS = ("sys-kernel-debug.mount",)
TEMPLATE_HOSTS = "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n"


def sources_list(mirrors: hostconf.Mirrors) -> str:
    """The template's /etc/apt/sources.list, as Proxmox's has it, on this machine's mirrors."""
    return (f"deb {mirrors.debian} {SUITE} main contrib\n"
            f"deb {mirrors.debian} {SUITE}-updates main contrib\n"
            f"deb {mirrors.security} {SUITE}-security main contrib\n")


def available(state: StateDir | None = None) -> list[dict[str, str]]:
    """aplinfo entries as PVE returns them; checksums are given once the template is built."""
    return [_aplinfo_entry(name, meta, state) for name, meta in TEMPLATES.items()]


def _aplinfo_entry(name: str, meta: dict[str, str], state: StateDir | None) -> dict[str, str]:
    """One aplinfo entry, shaped like those in Proxmox's aplinfo.dat."""
    entry = {
        **meta,
        "template": name,
        "section": "system",
        "type": "lxc",
        "architecture": "amd64",
        "infopage": "https://pve.proxmox.com/wiki/Linux_Container#pct_supported_distributions",
        "location": f"http://download.proxmox.com/images/system/{name}",
        "source": "http://download.proxmox.com/images/system",
        "maintainer": "Proxmox Support Team <support@proxmox.com>",
    }
    if state is not None and (state.template_cache / name).is_file():
        entry.update(_checksums(state, name))
    return entry


def cached(state: StateDir) -> list[Path]:
    """Templates present in the `local` storage's template cache."""
    if not state.template_cache.is_dir():
        return []
    return sorted(p for p in state.template_cache.glob("*.tar.zst") if p.is_file())


def build(state: StateDir, template_name: str, log: Log) -> Path:
    """Build `template_name` into the template cache once (atomically); later calls return at once."""
    if template_name not in TEMPLATES:
        raise BackendError(f"unknown template '{template_name}' (known: {', '.join(TEMPLATES)})")
    target = state.template_cache / template_name
    if target.is_file():
        return target
    state.template_cache.mkdir(parents=True, exist_ok=True)
    with _lock(state.template_cache / f".{template_name}.lock"):
        if target.is_file():  # another task built it while we waited
            log(f"template {template_name} was built by another task")
            return target
        _build_into(state, target, log)
    return target


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive flock, so two tasks never build the same template at once."""
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build_into(state: StateDir, target: Path, log: Log) -> None:
    """debootstrap, clean like Proxmox's templates, tar + zstd to a temp name, then rename."""
    work_parent = state.root / "build"
    work_parent.mkdir(parents=True, exist_ok=True)
    for stale in work_parent.glob(f"{target.name}-*"):  # left by a killed build of it (we hold its lock)
        shutil.rmtree(stale, ignore_errors=True)
    work = Path(tempfile.mkdtemp(prefix=f"{target.name}-", dir=work_parent))
    rootfs = work / "rootfs"
    try:
        mirrors = hostconf.mirrors()
        mirror = pick_mirror(mirrors.debian)
        log(f"building {target.name} with debootstrap {SUITE} from {mirror}")
        _debootstrap(rootfs, mirror, log)
        _configure(rootfs, mirrors, log)
        _clean(rootfs)
        tmp = target.with_name(f".{target.name}.tmp")
        _pack(rootfs, tmp, log)
        tmp.replace(target)
        _write_checksums(state, target)
        log(f"template {target.name} ready ({target.stat().st_size // 2**20} MiB)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def proxied(mirror: str) -> str | None:
    """The mirror's URL through apt-cacher-ng on this machine (None for an https mirror: apt-cacher-ng
    can only tunnel those, not cache them)."""
    if not mirror.startswith("http://"):
        return None
    return f"http://{PROXY_HOST}:{PROXY_PORT}/{hostconf.host_path(mirror)}"


def pick_mirror(mirror: str) -> str:
    """The mirror through apt-cacher-ng when the proxy answers for it, else the mirror directly."""
    through_proxy = proxied(mirror)
    if through_proxy is None:
        return mirror
    try:
        conn = http.client.HTTPConnection(PROXY_HOST, PROXY_PORT, timeout=5)
        conn.request("HEAD", f"/{hostconf.host_path(mirror)}/dists/{SUITE}/Release")
        ok = conn.getresponse().status == 200
        conn.close()
    except OSError:
        ok = False
    return through_proxy if ok else mirror


_DEBOOTSTRAP_STAGES = re.compile(
    r"^I: (Retrieving Release|Resolving|Checking|Installing core|Unpacking required|Unpacking the"
    r"|Configuring required|Configuring the|Base system)"
)


def _debootstrap(rootfs: Path, mirror: str, log: Log) -> None:
    """debootstrap --variant=minbase with the standard template's packages, logging its stages."""
    cmd = ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
           "--components=main,contrib", SUITE, str(rootfs), mirror]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    tail: list[str] = []
    for line in proc.stdout:
        line = line.rstrip()
        tail = [*tail[-19:], line]
        if _DEBOOTSTRAP_STAGES.match(line):
            log(line)
    if proc.wait() != 0:
        raise BackendError("debootstrap failed: " + " | ".join(tail[-5:]))


def _chroot(rootfs: Path, *argv: str) -> None:
    """Run a command inside the template's rootfs (no services start: nothing runs there)."""
    result = subprocess.run(["chroot", str(rootfs), *argv], capture_output=True, text=True,
                            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}, check=False)
    if result.returncode != 0:
        raise BackendError(f"template step {' '.join(argv)} failed: {result.stderr.strip()[-300:]}")


def _configure(rootfs: Path, mirrors: hostconf.Mirrors, log: Log) -> None:
    """Settings Proxmox's template ships: Debian sources, en_US.UTF-8 locale, UTC, plain hosts."""
    log("configuring template: apt sources, locale, timezone")
    (rootfs / "etc/apt/sources.list").write_text(sources_list(mirrors))
    (rootfs / "etc/locale.gen").write_text("en_US.UTF-8 UTF-8\n")
    (rootfs / "etc/default/locale").write_text("LANG=en_US.UTF-8\n")
    _chroot(rootfs, "locale-gen")
    (rootfs / "etc/timezone").write_text("Etc/UTC\n")
    localtime = rootfs / "etc/localtime"
    localtime.unlink(missing_ok=True)
    localtime.symlink_to("/usr/share/zoneinfo/Etc/UTC")
    (rootfs / "etc/hosts").write_text(TEMPLATE_HOSTS)
    (rootfs / "etc/hostname").write_text("localhost\n")
    for unit in MASKED_UNITS:
        link = rootfs / "etc/systemd/system" / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")


def _clean(rootfs: Path) -> None:
    """What Proxmox removes from its templates: ssh host keys, machine-id, apt lists and caches."""
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (rootfs / "etc/machine-id").write_text("")
    (rootfs / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    (rootfs / "etc/resolv.conf").unlink(missing_ok=True)  # written per container at create
    for pattern in ("var/lib/apt/lists/*", "var/cache/apt/*.bin", "var/cache/apt/archives/*.deb",
                    "var/log/*.log", "var/log/apt/*", "tmp/*", "root/.bash_history"):
        for path in rootfs.glob(pattern):
            if path.is_file() or path.is_symlink():
                path.unlink()
            elif path.is_dir():
                shutil.rmtree(path)


def _pack(rootfs: Path, out: Path, log: Log) -> None:
    """tar (numeric owners, xattrs, ACLs) piped through zstd, as Proxmox ships templates."""
    log("packing template with tar + zstd")
    cmd = ["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls", "--zstd",
           "--exclude=./dev/*", "--exclude=./proc/*", "--exclude=./sys/*", "--exclude=./run/*",
           "-C", str(rootfs), "-cf", str(out), "."]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        out.unlink(missing_ok=True)
        raise BackendError(f"packing template failed: {result.stderr.strip()[-300:]}")


def _sums_file(state: StateDir, name: str) -> Path:
    """Checksums live beside the build dir, not in the storage, so storage content lists only templates."""
    return state.root / "build" / f"{name}.sums"


def _write_checksums(state: StateDir, target: Path) -> None:
    """md5sum and sha512sum of a built template, for aplinfo."""
    md5, sha512 = hashlib.md5(usedforsecurity=False), hashlib.sha512()
    with target.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            md5.update(chunk)
            sha512.update(chunk)
    _sums_file(state, target.name).write_text(f"md5sum {md5.hexdigest()}\nsha512sum {sha512.hexdigest()}\n")


def _checksums(state: StateDir, name: str) -> dict[str, str]:
    """The recorded checksums of a built template (empty when they were not recorded)."""
    path = _sums_file(state, name)
    if not path.is_file():
        return {}
    return dict(line.split(" ", 1) for line in path.read_text().splitlines() if " " in line)
