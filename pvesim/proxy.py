"""The guests' caching package proxy: Debian's apt-cacher-ng on port 3142, config and cache in the state dir.

Guests have no route out; apt goes through this proxy (backends: the Debian and Debian security mirrors
of this machine's apt sources, see hostconf.py) and HTTPS to those mirrors and to this machine's npm
registry is tunnelled through it (CONNECT, PassThroughPattern); this machine's own proxy, if it has one,
is apt-cacher-ng's upstream `Proxy`. This machine's TLS may be
inspected by a CA the guests do not know: the CAs this machine trusts beyond Debian's ca-certificates
are copied for them (guest-ca.crt), as an admin lists a site's own CA in the inventory.
The host's /etc/apt-cacher-ng is never touched: the daemon runs with `-c <state>/apt-cacher-ng/conf`.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pvesim import hostconf
from pvesim.paths import StateDir

PROXY_PORT = 3142  # apt-cacher-ng cannot bind ports above 32767
BIND_ADDRESSES = ("127.0.0.1", "10.0.20.1", "10.0.30.1")
GUEST_PROXY_URL = f"http://10.0.20.1:{PROXY_PORT}"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
STOCK_CAS = Path("/usr/share/ca-certificates")  # Debian's ca-certificates package (mozilla/*.crt)
_PEM = re.compile(r"-----BEGIN CERTIFICATE-----\s*(.*?)\s*-----END CERTIFICATE-----", re.S)
START_TIMEOUT = 15.0


class ProxyError(RuntimeError):
    """apt-cacher-ng could not be started or stopped."""


def _root(state: StateDir) -> Path:
    return state.root / "apt-cacher-ng"


def pidfile(state: StateDir) -> Path:
    return state.root / "apt-cacher-ng.pid"


def guest_ca_file(state: StateDir) -> Path:
    """The CAs guests need beyond their own bundle (guest_cas), for apt and npm through the proxy."""
    return state.root / "guest-ca.crt"


def _certificates(text: str) -> list[tuple[bytes, str]]:
    """(DER, PEM block) of each certificate in a PEM text; a block that is not base64 is skipped."""
    out: list[tuple[bytes, str]] = []
    for m in _PEM.finditer(text):
        try:
            out.append((base64.b64decode("".join(m.group(1).split()), validate=True), m.group(0)))
        except (binascii.Error, ValueError):
            continue
    return out


def guest_cas(bundle: Path = HOST_CA_BUNDLE, stock: Path = STOCK_CAS) -> str:
    """The certificates of this machine's CA bundle that Debian's ca-certificates does not ship (those
    of /usr/local/share/ca-certificates: a TLS-inspecting proxy's, a site's own), one PEM text. A
    guest has Debian's set already. A machine that trusts none beyond it gets its whole bundle: the
    inventory names the file, and the stock certificates are harmless."""
    text = bundle.read_text(encoding="utf-8", errors="replace")
    known = {der for path in sorted(stock.rglob("*.crt"))
             for der, _ in _certificates(path.read_text(encoding="utf-8", errors="replace"))}
    own = [block for der, block in _certificates(text) if der not in known]
    return "\n".join(own) + "\n" if own else text


def _local_addresses() -> set[str]:
    """IPv4 addresses configured on this machine (bridges that do not exist yet cannot be bound)."""
    cmd = ["ip", "-o", "-4", "addr", "show"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return {line.split()[3].split("/")[0] for line in out.splitlines() if len(line.split()) > 3}


def bind_addresses() -> list[str]:
    """The proxy's addresses that exist on this machine now (127.0.0.1 always)."""
    present = _local_addresses() | {"127.0.0.1"}
    return [a for a in BIND_ADDRESSES if a in present]


def connect_allowed(mirrors: hostconf.Mirrors) -> str:
    """PassThroughPattern: CONNECT to port 443 of the mirrors' and the npm registry's hosts only."""
    return "^(" + "|".join(re.escape(host) for host in mirrors.hosts()) + "):443$"


def _with_slash(url: str) -> str:
    return url.rstrip("/") + "/"


def config_text(state: StateDir, addresses: list[str], mirrors: hostconf.Mirrors,
                port: int = PROXY_PORT) -> str:
    """acng.conf for the sandbox: own cache/log dirs, the host's Debian and security mirrors as
    backends (requests for them, and for Debian's own mirror list, are served from the cache),
    CONNECT to the mirrors and the npm registry."""
    root = _root(state)
    debian, security = hostconf.host_path(mirrors.debian), hostconf.host_path(mirrors.security)
    upstream_proxy = [f"Proxy: {mirrors.http_proxy}"] if mirrors.http_proxy else []
    return "\n".join(
        [
            "# Written by pvesim (sandbox package proxy); see pvesim/proxy.py.",
            f"CacheDir: {root / 'cache'}",
            f"LogDir: {root / 'log'}",
            "SupportDir: /usr/lib/apt-cacher-ng",
            f"Port: {port}",
            f"BindAddress: {' '.join(addresses)}",
            "ForeGround: 1",
            f"PidFile: {root / 'acng.pid'}",
            f"Remap-debrep: file:deb_mirror*.gz /debian {debian} ; file:backends_debian # Debian Archives",
            f"Remap-secdeb: {security} /debian-security ; {_with_slash(mirrors.security)}",
            "ReportPage: acng-report.html",
            "ExThreshold: 4",
            "FollowIndexFileRemoval: 1",
            f"PassThroughPattern: {connect_allowed(mirrors)}",
            *upstream_proxy,
            "",
        ]
    )


def write_config(state: StateDir, addresses: list[str], port: int = PROXY_PORT,
                 mirrors: hostconf.Mirrors | None = None) -> Path:
    """Write the config dir (acng.conf + backends_debian) for `mirrors` (default: this machine's)."""
    mirrors = mirrors or hostconf.mirrors()
    conf = _root(state) / "conf"
    for sub in (conf, _root(state) / "cache", _root(state) / "log"):
        sub.mkdir(parents=True, exist_ok=True)
    (conf / "acng.conf").write_text(config_text(state, addresses, mirrors, port))
    (conf / "backends_debian").write_text(_with_slash(mirrors.debian) + "\n")
    guest_ca_file(state).write_text(guest_cas())
    return conf


def _running_pid(state: StateDir) -> int | None:
    """The pid in our pidfile if that process is alive and is apt-cacher-ng."""
    try:
        pid = int(pidfile(state).read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"apt-cacher-ng" in cmdline else None


def listeners(port: int = PROXY_PORT) -> dict[str, int]:
    """Which process listens on port, per local address: {"127.0.0.1": pid, ...} (from `ss`)."""
    out = subprocess.run(
        ["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    found: dict[str, int] = {}
    for line in out.splitlines():
        fields = line.split()
        pid = re.search(r"pid=(\d+)", line)
        if len(fields) >= 4 and pid:
            found[fields[3].rsplit(":", 1)[0].strip("[]")] = int(pid.group(1))
    return found


def _refuse_foreign(port: int) -> None:
    """The port held by another process (e.g. Debian's apt-cacher-ng service) -> a clear error."""
    foreign = listeners(port)
    if foreign:
        address, pid = next(iter(foreign.items()))
        comm = Path(f"/proc/{pid}/comm").read_text().strip() if Path(f"/proc/{pid}/comm").exists() else "?"
        raise ProxyError(
            f"port {port} on {address} is taken by pid {pid} ({comm}); stop it first "
            "(Debian's own service: systemctl disable --now apt-cacher-ng)"
        )


def start_proxy(state: StateDir, port: int = PROXY_PORT) -> None:
    """Start apt-cacher-ng (idempotent); returns once it listens on every bindable address.

    Restarts it when the set of bindable addresses changed (e.g. the bridges appeared since).
    """
    addresses = bind_addresses()
    pid = _running_pid(state)
    current = status(state)
    wanted = (sorted(addresses), sorted(addresses), port)
    if pid is not None and (sorted(current["addresses"]), current["listening"], current["port"]) == wanted:
        return
    if pid is not None:
        stop_proxy(state)
    _refuse_foreign(port)
    conf = write_config(state, addresses, port)
    log = open(_root(state) / "log" / "daemon.log", "ab")  # noqa: SIM115 (owned by the child)
    with log:
        child = subprocess.Popen(
            ["apt-cacher-ng", "-c", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            close_fds=True,
        )
    pidfile(state).write_text(f"{child.pid}\n")
    deadline = time.monotonic() + START_TIMEOUT
    while sorted(a for a, p in listeners(port).items() if p == child.pid) != sorted(addresses):
        if child.poll() is not None:
            tail = (_root(state) / "log" / "daemon.log").read_text(errors="replace").strip().splitlines()[-3:]
            raise ProxyError(f"apt-cacher-ng exited with {child.returncode}: {' / '.join(tail)}")
        if time.monotonic() > deadline:
            stop_proxy(state)
            raise ProxyError(
                f"apt-cacher-ng did not listen on {addresses} port {port} within {START_TIMEOUT:.0f}s;"
                f" see {_root(state) / 'log' / 'daemon.log'}"
            )
        time.sleep(0.1)


def stop_proxy(state: StateDir) -> None:
    """Stop apt-cacher-ng if it runs (idempotent); waits until the process is gone."""
    pid = _running_pid(state)
    if pid is not None:
        terminate(pid, lambda: _running_pid(state) == pid)
    pidfile(state).unlink(missing_ok=True)


def terminate(pid: int, still_ours: Callable[[], bool]) -> None:
    """SIGTERM a daemon pvesim started, SIGKILL after START_TIMEOUT, until its pid is gone (or no
    longer ours); reaped when it is our child. Shared by apt-cacher-ng and the npm proxy."""
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + START_TIMEOUT
    while Path(f"/proc/{pid}").exists() and still_ours():
        _reap(pid)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    _reap(pid)


def _reap(pid: int) -> None:
    """Collect the exit status when the proxy is our own child (else it stays a zombie)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def status(state: StateDir) -> dict[str, Any]:
    """{"running", "pid", "port", "addresses" (configured), "listening" (bound by our pid now), ...}."""
    pid = _running_pid(state)
    conf = _root(state) / "conf" / "acng.conf"
    settings: dict[str, str] = {}
    if conf.is_file():
        for line in conf.read_text().splitlines():
            key, sep, value = line.partition(":")
            if sep and not key.startswith("#"):
                settings[key.strip()] = value.strip()
    port = int(settings.get("Port", PROXY_PORT))
    return {
        "running": pid is not None,
        "pid": pid,
        "port": port,
        "addresses": settings.get("BindAddress", "").split(),
        "listening": sorted(a for a, p in listeners(port).items() if pid is not None and p == pid),
        "cache_dir": str(_root(state) / "cache"),
        "guest_proxy": GUEST_PROXY_URL,
    }
