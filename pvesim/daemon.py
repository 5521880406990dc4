"""The API daemon: TLS material, secrets, credentials, and running/starting/stopping the server.

`pvesim up` calls ensure_ca / ensure_secrets / write_credentials / start_detached; the detached
process (`python -m pvesim daemon`) runs `serve`, which also serves the local apt repositories.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pvesim import auth
from pvesim.paths import API_PORT, StateDir

DEFAULT_NODES = ["pve1", "pve2", "pve3"]
HOST = "127.0.0.1"


def secrets_file(state: StateDir) -> Path:
    """HMAC key, root password and token secrets (0600)."""
    return state.root / "auth.json"


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def ensure_ca(state: StateDir) -> bool:
    """Create the sandbox CA and the API server certificate once; True if created now."""
    ca = state.ca
    files = [ca / n for n in ("ca.pem", "ca.key", "server.pem", "server.key")]
    if all(f.exists() for f in files):
        return False
    ca.mkdir(parents=True, exist_ok=True)
    os.chmod(ca, 0o700)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
             "-subj", "/CN=pvesim sandbox CA", "-keyout", str(ca / "ca.key"), "-out", str(ca / "ca.pem"),
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=pvesim API",
             "-keyout", str(ca / "server.key"), "-out", str(ca / "server.csr"))
    ext = ca / "server.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
                   "extendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n")
    _openssl("x509", "-req", "-in", str(ca / "server.csr"), "-CA", str(ca / "ca.pem"),
             "-CAkey", str(ca / "ca.key"), "-CAcreateserial", "-days", "825",
             "-out", str(ca / "server.pem"), "-extfile", str(ext))
    for key in ("ca.key", "server.key"):
        os.chmod(ca / key, 0o600)
    return True


def ensure_secrets(state: StateDir) -> dict[str, Any]:
    """Secrets created once and kept (0600)."""
    path = secrets_file(state)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(auth.new_secrets(), f)
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def load_settings(state: StateDir) -> dict[str, Any]:
    """settings.json written by `up` (nodes, ...)."""
    if state.settings.exists():
        data: dict[str, Any] = json.loads(state.settings.read_text())
        return data
    return {"nodes": DEFAULT_NODES}


def save_settings(state: StateDir, settings: dict[str, Any]) -> bool:
    """Write settings.json if it changed; True when written."""
    text = json.dumps(settings, indent=1, sort_keys=True)
    if state.settings.exists() and state.settings.read_text() == text:
        return False
    state.settings.write_text(text)
    return True


def credentials(state: StateDir, extra: dict[str, Any]) -> dict[str, Any]:
    """What a client needs (`pvesim credentials --json`).

    url, host, port, ca_file (the sandbox CA; verify TLS with it), nodes, user + password (ticket
    login), token_id/token_secret (Administrator), readonly_token_id/readonly_token_secret
    (PVEAuditor), restricted_token_id/restricted_token_secret (no VM.Allocate, no
    Datastore.AllocateTemplate), access_log, state_dir, and from `extra` (written by `pvesim up`):
    token_secret_file (the full token's secret alone, for inventories), proxy_service = {guest_proxy,
    port, addresses, cache_dir} (apt-cacher-ng), and repos.client_info(): proxy (URL for guests),
    no_proxy, guest_ca_file, repos: {nodejs|elasticsearch: {url, suite, component, key_url, package}}.
    """
    sec = ensure_secrets(state)
    tokens = sec["tokens"]
    settings = load_settings(state)
    return {
        "url": f"https://{HOST}:{API_PORT}",
        "host": HOST,
        "port": API_PORT,
        "ca_file": str(state.ca / "ca.pem"),
        "nodes": settings["nodes"],
        "user": auth.USER,
        "password": sec["password"],
        "token_id": f"{auth.USER}!psa-provision",
        "token_secret": tokens["psa-provision"],
        "readonly_token_id": f"{auth.USER}!readonly",
        "readonly_token_secret": tokens["readonly"],
        "restricted_token_id": f"{auth.USER}!restricted",
        "restricted_token_secret": tokens["restricted"],
        "token_secret_file": str(token_file(state, "psa-provision")),
        "access_log": str(state.access_log),
        "state_dir": str(state.root),
        **extra,
    }


def token_file(state: StateDir, name: str) -> Path:
    """tokens/<name>: one token's secret alone (0600), for clients that read secrets from files."""
    return state.root / "tokens" / name


def _write_private(path: Path, text: str) -> bool:
    """Write text to path with mode 0600 from the start; True when the content changed."""
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)
    return True


def write_credentials(state: StateDir, extra: dict[str, Any]) -> bool:
    """credentials.json (0600); True when its content changed."""
    creds = credentials(state, extra)
    changed = False
    for name, secret in ensure_secrets(state)["tokens"].items():
        changed |= _write_private(token_file(state, name), f"{secret}\n")
    return _write_private(state.credentials, json.dumps(creds, indent=1, sort_keys=True)) or changed


# --- process management ----------------------------------------------------------------------

def daemon_pid(state: StateDir) -> int | None:
    """PID of the running daemon, or None (stale pidfiles are ignored)."""
    try:
        pid = int(state.pidfile.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    return pid if b"pvesim" in cmdline else None


def answers(state: StateDir, timeout: float = 2.0) -> bool:
    """True when https://127.0.0.1:8006/api2/json/version answers over verified TLS."""
    ctx = ssl.create_default_context(cafile=str(state.ca / "ca.pem"))
    conn = http.client.HTTPSConnection(HOST, API_PORT, context=ctx, timeout=timeout)
    try:
        conn.request("GET", "/api2/json/version")
        return conn.getresponse().status in (200, 401)
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def wait_until(predicate: Callable[[], bool], what: str, deadline_s: float) -> None:
    """Poll until `predicate` holds; TimeoutError naming `what` after the deadline."""
    deadline = time.monotonic() + deadline_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {deadline_s:.0f}s waiting for {what}")
        time.sleep(0.2)


def start_detached(state: StateDir) -> bool:
    """Start the daemon in its own session unless it runs; wait until the API answers."""
    if daemon_pid(state) is not None and answers(state):
        return False
    log = state.api_log.open("a")
    proc = subprocess.Popen([sys.executable, "-m", "pvesim", "daemon", "--state-dir", str(state.root)],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                            cwd="/")
    log.close()

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"the API daemon exited with {proc.returncode}; see {state.api_log}")
        return answers(state)

    wait_until(up, "the API on https://127.0.0.1:8006", 30)
    return True


def stop(state: StateDir) -> bool:
    """Stop the daemon (SIGTERM, then wait); True if one was running."""
    pid = daemon_pid(state)
    if pid is None:
        state.pidfile.unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except OSError:
            return True
        return False

    wait_until(gone, f"the API daemon (pid {pid}) to exit", 20)
    state.pidfile.unlink(missing_ok=True)
    return True


def _backend(state: StateDir) -> Any:
    """The LXC backend (real containers through lxc-* commands)."""
    from pvesim.lxc import LxcBackend

    return LxcBackend(state)


def _repo_server(state: StateDir) -> Any:
    """The local apt repositories' HTTP server, if that module is present."""
    try:
        repos = importlib.import_module("pvesim.repos")
    except ImportError:
        return None
    server = repos.RepoServer(state)
    server.start()
    return server


def _host_rebooted(state: StateDir) -> bool:
    """True once per host boot (kernel boot_id changed since the daemon last ran): time for onboot."""
    current = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    record = state.root / "boot_id"
    previous = record.read_text().strip() if record.exists() else None
    record.write_text(current)
    return previous is not None and previous != current


def serve(state: StateDir) -> None:
    """Run the API in the foreground until SIGTERM/SIGINT (what the detached process does)."""
    from pvesim import handlers  # noqa: F401 - registers every endpoint
    from pvesim.server import App, make_server

    settings = load_settings(state)
    app = App(state, list(settings["nodes"]), _backend(state), auth.Auth(ensure_secrets(state)),
              settings)
    server = make_server(app, state.ca / "server.pem", state.ca / "server.key", HOST, API_PORT)
    if _host_rebooted(state):
        from pvesim.handlers_lxc import start_onboot

        print(f"host booted since the last run: onboot containers start in {start_onboot(app)}", flush=True)
    from pvesim.handlers_firewall import sync as sync_firewall

    try:
        sync_firewall(app)  # the .fw files are the truth; the nft tables follow them after any restart
    except Exception as e:  # the API must come up to let the caller fix a bad rule through it
        print(f"firewall not enforced: {e}", file=sys.stderr, flush=True)
    repo_server = _repo_server(state)
    from pvesim.rrd_sampler import start as start_rrd_sampler

    start_rrd_sampler(app)  # pvestatd's 10 s samples, what rrddata answers from
    from pvesim.ha_manager import start as start_ha_manager

    start_ha_manager(app)  # pve-ha-crm + pve-ha-lrm: drives HA resources, fences down nodes
    state.pidfile.write_text(str(os.getpid()))

    def on_signal(signum: int, frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"pvesim API on https://{HOST}:{API_PORT} nodes={settings['nodes']} pid={os.getpid()}", flush=True)
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
        if repo_server is not None:
            with contextlib.suppress(Exception):
                repo_server.stop()
        if state.pidfile.exists() and state.pidfile.read_text().strip() == str(os.getpid()):
            state.pidfile.unlink()
