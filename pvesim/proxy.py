"""The guests' caching package proxy: Debian's apt-cacher-ng on port 3142, config and cache in the state dir.

Guests have no route out; apt goes through this proxy (Debian and Debian security as backends) and npm
tunnels HTTPS to the npm registry through it (CONNECT, PassThroughPattern). This machine's TLS is
inspected by a CA the guests do not know, so the host's CA bundle is copied for them (guest-ca.crt).
The host's /etc/apt-cacher-ng is never touched: the daemon runs with `-c <state>/apt-cacher-ng/conf`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from pvesim.paths import StateDir

PROXY_PORT = 3142
BIND_ADDRESSES = ("127.0.0.1", "10.0.20.1", "10.0.30.1")
GUEST_PROXY_URL = f"http://10.0.20.1:{PROXY_PORT}"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
CONNECT_ALLOWED = r"^(registry\.npmjs\.org|deb\.debian\.org):443$"
START_TIMEOUT = 15.0


class ProxyError(RuntimeError):
    """apt-cacher-ng could not be started or stopped."""


def _root(state: StateDir) -> Path:
    return state.root / "apt-cacher-ng"


def pidfile(state: StateDir) -> Path:
    return state.root / "apt-cacher-ng.pid"


def guest_ca_file(state: StateDir) -> Path:
    """The host's CA bundle, copied for guests (npm --cafile, apt over HTTPS)."""
    return state.root / "guest-ca.crt"


def _local_addresses() -> set[str]:
    """IPv4 addresses configured on this machine (bridges that do not exist yet cannot be bound)."""
    cmd = ["ip", "-o", "-4", "addr", "show"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return {line.split()[3].split("/")[0] for line in out.splitlines() if len(line.split()) > 3}


def bind_addresses() -> list[str]:
    """The proxy's addresses that exist on this machine now (127.0.0.1 always)."""
    present = _local_addresses() | {"127.0.0.1"}
    return [a for a in BIND_ADDRESSES if a in present]


def config_text(state: StateDir, addresses: list[str]) -> str:
    """acng.conf for the sandbox: own cache/log dirs, Debian backends, CONNECT to the npm registry."""
    root = _root(state)
    return "\n".join(
        [
            "# Written by pvesim (sandbox package proxy); see pvesim/proxy.py.",
            f"CacheDir: {root / 'cache'}",
            f"LogDir: {root / 'log'}",
            "SupportDir: /usr/lib/apt-cacher-ng",
            f"Port: {PROXY_PORT}",
            f"BindAddress: {' '.join(addresses)}",
            "ForeGround: 1",
            f"PidFile: {root / 'acng.pid'}",
            "Remap-debrep: file:deb_mirror*.gz /debian ; file:backends_debian # Debian Archives",
            "Remap-secdeb: security.debian.org security.debian.org/debian-security"
            " deb.debian.org/debian-security /debian-security"
            " ; deb.debian.org/debian-security security.debian.org",
            "ReportPage: acng-report.html",
            "ExThreshold: 4",
            "FollowIndexFileRemoval: 1",
            f"PassThroughPattern: {CONNECT_ALLOWED}",
            "",
        ]
    )


def write_config(state: StateDir, addresses: list[str]) -> Path:
    """Write the config dir (acng.conf + backends_debian); returns it."""
    conf = _root(state) / "conf"
    for sub in (conf, _root(state) / "cache", _root(state) / "log"):
        sub.mkdir(parents=True, exist_ok=True)
    (conf / "acng.conf").write_text(config_text(state, addresses))
    (conf / "backends_debian").write_text("http://deb.debian.org/debian/\n")
    shutil.copyfile(HOST_CA_BUNDLE, guest_ca_file(state))
    return conf


def _running_pid(state: StateDir) -> int | None:
    """The pid in our pidfile if that process is alive and is apt-cacher-ng."""
    try:
        pid = int(pidfile(state).read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"apt-cacher-ng" in cmdline else None


def _listening(address: str, port: int = PROXY_PORT) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1):
            return True
    except OSError:
        return False


def start_proxy(state: StateDir) -> None:
    """Start apt-cacher-ng (idempotent); returns once it accepts connections on 127.0.0.1:3142.

    Restarts it when the set of bindable addresses changed (e.g. the bridges appeared since).
    """
    addresses = bind_addresses()
    pid = _running_pid(state)
    if pid is not None and status(state)["addresses"] == addresses:
        return
    if pid is not None:
        stop_proxy(state)
    conf = write_config(state, addresses)
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
    while not all(_listening(a) for a in addresses):
        if child.poll() is not None:
            raise ProxyError(f"apt-cacher-ng exited with {child.returncode}; see {_root(state) / 'log'}")
        if time.monotonic() > deadline:
            raise ProxyError(
                f"apt-cacher-ng did not listen on {addresses} port {PROXY_PORT} within {START_TIMEOUT:.0f}s"
            )
        time.sleep(0.1)


def stop_proxy(state: StateDir) -> None:
    """Stop apt-cacher-ng if it runs (idempotent); waits until the process is gone."""
    pid = _running_pid(state)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + START_TIMEOUT
        while Path(f"/proc/{pid}").exists() and _running_pid(state) == pid:
            _reap(pid)
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        _reap(pid)
    pidfile(state).unlink(missing_ok=True)


def _reap(pid: int) -> None:
    """Collect the exit status when the proxy is our own child (else it stays a zombie)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def status(state: StateDir) -> dict[str, Any]:
    """{"running", "pid", "port", "addresses" (configured), "listening" (answering now), "cache_dir"}."""
    pid = _running_pid(state)
    conf = _root(state) / "conf" / "acng.conf"
    addresses: list[str] = []
    if conf.is_file():
        for line in conf.read_text().splitlines():
            if line.startswith("BindAddress:"):
                addresses = line.split(":", 1)[1].split()
    return {
        "running": pid is not None,
        "pid": pid,
        "port": PROXY_PORT,
        "addresses": addresses,
        "listening": [a for a in addresses if pid is not None and _listening(a)],
        "cache_dir": str(_root(state) / "cache"),
        "guest_proxy": GUEST_PROXY_URL,
    }
