"""The guests' caching npm registry: port 4873 on the bridges, cache and counters in the state dir.

Guests have no route out. `npm` pointed at http://10.0.20.1:4873/ (inventory packages.npm_registry)
gets package metadata and tarballs from here; a miss is fetched once from this machine's own npm registry
(its npm configuration, read by hostconf.npm_registry) and kept in <state>/npm-proxy/cache, so a second
guest installing the same packages downloads nothing from the internet. Tarball URLs in the metadata
are rewritten to this proxy (the address the request came in on), tarballs are kept forever (a
version's tarball never changes), metadata is served from the cache for METADATA_MAX_AGE seconds,
then revalidated (ETag / Last-Modified: a 304 costs no download).

Counters per guest (requests, hits, upstream fetches and bytes, revalidations, errors) are written to
<state>/npm-proxy/stats.json after each request and shown by `pvesim status`; every request is one line
of <state>/npm-proxy/access.log. It runs as its own process (`python -m pvesim npm-proxy`), started by
`pvesim up` next to apt-cacher-ng and stopped by `pvesim down --purge`. Standard library only.
"""

from __future__ import annotations

import email.utils
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pvesim import hostconf, proxy
from pvesim.paths import StateDir

NPM_PORT = 4873  # Verdaccio's port: what an npm user expects a local registry on
GUEST_REGISTRY_URL = f"http://10.0.20.1:{NPM_PORT}/"
METADATA_MAX_AGE = 24 * 3600.0  # seconds a cached packument is served without asking upstream
UPSTREAM_TIMEOUT = 120.0
START_TIMEOUT = 15.0
# A placeholder origin stored in cached metadata; replaced by this proxy's own URL when served.
ORIGIN_MARK = "http://pvesim-npm-proxy.invalid"
_NAME = r"(?:@[A-Za-z0-9._~-]+/)?[A-Za-z0-9._~-]+"
_TARBALL = re.compile(rf"^/({_NAME})/-/((?:@[A-Za-z0-9._~-]+/)?[A-Za-z0-9._~-]+\.tgz)$")
_METADATA = re.compile(rf"^/({_NAME})$")
CORGI = "application/vnd.npm.install-v1+json"


class NpmProxyError(RuntimeError):
    """The npm proxy could not be started or stopped."""


# -- what a request is -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """A cacheable registry object: a package's metadata (full or abbreviated) or a tarball."""

    kind: str  # "metadata" | "tarball"
    name: str  # package name, scope included (@types/node)
    file: str = ""  # tarball file name
    abbreviated: bool = False

    def upstream_url(self, upstream: str) -> str:
        """Where the registry `upstream` serves it (scoped names as @scope%2fname for metadata)."""
        base = upstream.rstrip("/")
        if self.kind == "tarball":
            return f"{base}/{self.name}/-/{self.file.rsplit('/', 1)[-1]}"
        return f"{base}/{self.name.replace('/', '%2f')}"

    def cache_path(self, root: Path) -> Path:
        """Its file in the cache (names are validated: no `..`, no absolute parts)."""
        if self.kind == "tarball":
            return root / "tarballs" / self.name / self.file.rsplit("/", 1)[-1]
        flavour = "abbreviated" if self.abbreviated else "full"
        return root / "metadata" / flavour / (self.name.replace("/", "%2f") + ".json")


def parse_target(path: str, accept: str = "") -> Target | None:
    """The registry object a GET path names, or None (not something this proxy serves)."""
    path = urllib.parse.urlsplit(path).path
    decoded = urllib.parse.unquote(path)
    if ".." in decoded.split("/") or "//" in decoded:
        return None
    found = _TARBALL.match(decoded)
    if found:
        return Target("tarball", found[1], found[2])
    found = _METADATA.match(decoded)
    if found and not found[1].startswith(("-", ".", "_")):
        return Target("metadata", found[1], abbreviated=CORGI in accept)
    return None


def rewrite_metadata(body: bytes, upstream: str, origin: str = ORIGIN_MARK) -> bytes:
    """Metadata with every version's dist.tarball pointing at `origin` instead of the upstream registry."""
    doc = json.loads(body)
    prefix = upstream.rstrip("/") + "/"
    for version in (doc.get("versions") or {}).values():
        dist = version.get("dist") if isinstance(version, dict) else None
        if isinstance(dist, dict) and str(dist.get("tarball", "")).startswith(prefix):
            dist["tarball"] = origin.rstrip("/") + "/" + dist["tarball"][len(prefix):]
    return json.dumps(doc, separators=(",", ":")).encode()


def serve_metadata(cached: bytes, origin: str) -> bytes:
    """Cached (rewritten) metadata as served to a client that reached this proxy at `origin`."""
    return cached.replace(ORIGIN_MARK.encode(), origin.rstrip("/").encode())


# -- cache -----------------------------------------------------------------------------------------
def _root(state: StateDir) -> Path:
    return state.root / "npm-proxy"


def cache_dir(state: StateDir) -> Path:
    return _root(state) / "cache"


def stats_file(state: StateDir) -> Path:
    return _root(state) / "stats.json"


def pidfile(state: StateDir) -> Path:
    return state.root / "npm-proxy.pid"


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@dataclass
class Fetched:
    """What the cache answered: body, content type and how it was obtained."""

    body: bytes
    content_type: str
    result: str  # hit | miss | revalidated | stale (upstream failed, cached copy served)
    upstream_bytes: int = 0


Opener = Callable[[urllib.request.Request, float], Any]


def _open(request: urllib.request.Request, timeout: float) -> Any:
    return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (the host's configured registry)


class Cache:
    """The on-disk cache: one fetch per object at a time, metadata revalidated after max_age."""

    def __init__(self, root: Path, *, upstream: str, max_age: float = METADATA_MAX_AGE,
                 opener: Opener = _open) -> None:
        self.root, self.max_age, self.opener, self.upstream = root, max_age, opener, upstream
        self._locks: dict[Path, threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock(self, path: Path) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(path, threading.Lock())

    def get(self, target: Target) -> Fetched:
        """The object from the cache, fetching (or revalidating) it upstream when needed."""
        path = target.cache_path(self.root)
        with self._lock(path):
            if target.kind == "tarball":
                if path.is_file():
                    return Fetched(path.read_bytes(), "application/octet-stream", "hit")
                return self._fetch_tarball(target, path)
            return self._metadata(target, path)

    def _request(self, target: Target, headers: dict[str, str]) -> urllib.request.Request:
        url = target.upstream_url(self.upstream)
        return urllib.request.Request(url, headers={"User-Agent": "pvesim-npm-proxy", **headers})  # noqa: S310

    def _fetch_tarball(self, target: Target, path: Path) -> Fetched:
        with self.opener(self._request(target, {}), UPSTREAM_TIMEOUT) as response:
            body = response.read()
        _write_atomic(path, body)
        return Fetched(body, "application/octet-stream", "miss", len(body))

    def _metadata(self, target: Target, path: Path) -> Fetched:
        meta_path = path.with_suffix(".meta")
        info: dict[str, Any] = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        cached = path.read_bytes() if path.is_file() else None
        if cached is not None and time.time() - float(info.get("fetched", 0)) < self.max_age:
            return Fetched(cached, str(info.get("type", "application/json")), "hit")
        headers = {"Accept": CORGI if target.abbreviated else "application/json"}
        if cached is not None and info.get("etag"):
            headers["If-None-Match"] = str(info["etag"])
        if cached is not None and info.get("last_modified"):
            headers["If-Modified-Since"] = str(info["last_modified"])
        try:
            with self.opener(self._request(target, headers), UPSTREAM_TIMEOUT) as response:
                raw = response.read()
                etag, modified = response.headers.get("ETag"), response.headers.get("Last-Modified")
                ctype = response.headers.get("Content-Type") or "application/json"
        except urllib.error.HTTPError as exc:
            if exc.code == 304 and cached is not None:
                _write_atomic(meta_path, json.dumps({**info, "fetched": time.time()}).encode())
                return Fetched(cached, str(info.get("type", "application/json")), "revalidated")
            if cached is not None and exc.code >= 500:
                return Fetched(cached, str(info.get("type", "application/json")), "stale")
            raise
        except (OSError, urllib.error.URLError):
            if cached is None:
                raise
            return Fetched(cached, str(info.get("type", "application/json")), "stale")
        body = rewrite_metadata(raw, self.upstream)
        _write_atomic(path, body)
        record = {"fetched": time.time(), "etag": etag, "last_modified": modified, "type": ctype}
        _write_atomic(meta_path, json.dumps(record).encode())
        return Fetched(body, ctype, "miss", len(raw))


# -- counters --------------------------------------------------------------------------------------
COUNTERS = ("requests", "hits", "upstream_fetches", "upstream_bytes", "revalidated", "served_bytes", "errors")


class Stats:
    """Counters in total and per client address, saved to stats.json after every request."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            self.data: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError):
            self.data = {}
        self.data.setdefault("total", dict.fromkeys(COUNTERS, 0))
        self.data.setdefault("clients", {})

    def count(self, client: str, result: str, served: int, upstream: int) -> None:
        """Record one request: its result (hit, miss, revalidated, stale, error) and byte counts."""
        with self._lock:
            mine = self.data["clients"].setdefault(client, dict.fromkeys(COUNTERS, 0))
            for bucket in (self.data["total"], mine):
                bucket["requests"] += 1
                bucket["hits"] += result in ("hit", "stale")
                bucket["upstream_fetches"] += result == "miss"
                bucket["revalidated"] += result == "revalidated"
                bucket["errors"] += result == "error"
                bucket["upstream_bytes"] += upstream
                bucket["served_bytes"] += served
            _write_atomic(self.path, json.dumps(self.data, indent=1, sort_keys=True).encode())


# -- HTTP ------------------------------------------------------------------------------------------
class Handler(BaseHTTPRequestHandler):
    """GET/HEAD of metadata and tarballs; anything else is 404/405 (no publishing, no audit)."""

    server: ProxyServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._serve(send_body=True)

    def do_HEAD(self) -> None:
        self._serve(send_body=False)

    def _deny(self, status: int, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_POST(self) -> None:
        self._deny(405, "read-only registry proxy (pvesim)")

    do_PUT = do_DELETE = do_POST

    def _serve(self, *, send_body: bool) -> None:
        client = self.client_address[0]
        target = parse_target(self.path, self.headers.get("Accept", ""))
        if target is None:
            self._deny(404, f"not a package or tarball path: {self.path}")
            self.server.record(client, self.command, self.path, "error", 404, 0, 0)
            return
        try:
            got = self.server.cache.get(target)
        except urllib.error.HTTPError as exc:
            self._deny(exc.code if exc.code in (404, 401, 403) else 502, f"upstream: HTTP {exc.code}")
            self.server.record(client, self.command, self.path, "error", exc.code, 0, 0)
            return
        except (OSError, urllib.error.URLError, ValueError) as exc:
            self._deny(502, f"upstream: {exc}")
            self.server.record(client, self.command, self.path, "error", 502, 0, 0)
            return
        body = serve_metadata(got.body, self.server.origin) if target.kind == "metadata" else got.body
        self.send_response(200)
        self.send_header("Content-Type", got.content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Cache", got.result)
        self.end_headers()
        if send_body:
            self.wfile.write(body)
        self.server.record(client, self.command, self.path, got.result, 200, len(body), got.upstream_bytes)

    def log_message(self, format: str, *args: Any) -> None:
        """Requests go to access.log (ProxyServer.record), not stderr."""


class ProxyServer(ThreadingHTTPServer):
    """One listening address; every address shares the cache and the counters."""

    daemon_threads = True

    def __init__(self, address: str, port: int, cache: Cache, stats: Stats, log: Path) -> None:
        super().__init__((address, port), Handler)
        self.cache, self.stats, self.log = cache, stats, log
        self.origin = f"http://{address}:{self.server_address[1]}"

    def record(self, client: str, method: str, path: str, result: str, status: int, served: int,
               upstream: int) -> None:
        self.stats.count(client, result, served, upstream)
        line = (f"{email.utils.formatdate(usegmt=True)} {client} {method} {path} {status} {result} "
                f"served={served} upstream={upstream}\n")
        with self.log.open("a") as f:
            f.write(line)


def serve(state: StateDir, port: int = NPM_PORT) -> None:
    """Run the proxy in the foreground on every bindable bridge address until SIGTERM."""
    root = _root(state)
    root.mkdir(parents=True, exist_ok=True)
    upstream = hostconf.npm_registry()
    cache = Cache(cache_dir(state), upstream=upstream)
    stats = Stats(stats_file(state))
    servers = [ProxyServer(a, port, cache, stats, root / "access.log") for a in proxy.bind_addresses()]
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for t in threads:
        t.start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    print(f"npm proxy on {', '.join(s.origin for s in servers)} -> {upstream}", flush=True)
    done.wait()
    for s in servers:
        s.shutdown()
        s.server_close()


# -- process management (like proxy.py for apt-cacher-ng) ------------------------------------------
def _running_pid(state: StateDir) -> int | None:
    try:
        pid = int(pidfile(state).read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"npm-proxy" in cmdline else None


def _listening(pid: int | None, port: int) -> list[str]:
    return sorted(a for a, p in proxy.listeners(port).items() if pid is not None and p == pid)


def start(state: StateDir, port: int = NPM_PORT) -> None:
    """Start the proxy process (idempotent); restarted when the bindable addresses changed."""
    addresses = sorted(proxy.bind_addresses())
    pid = _running_pid(state)
    if pid is not None and _listening(pid, port) == addresses:
        return
    if pid is not None:
        stop(state)
    if proxy.listeners(port):
        raise NpmProxyError(f"port {port} is taken by another process: {proxy.listeners(port)}")
    _root(state).mkdir(parents=True, exist_ok=True)
    with (_root(state) / "daemon.log").open("ab") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "pvesim", "npm-proxy", "--state-dir", str(state.root),
             "--port", str(port)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, close_fds=True, cwd="/")
    pidfile(state).write_text(f"{child.pid}\n")
    deadline = time.monotonic() + START_TIMEOUT
    while _listening(child.pid, port) != addresses:
        if child.poll() is not None:
            tail = (_root(state) / "daemon.log").read_text(errors="replace").strip().splitlines()[-3:]
            raise NpmProxyError(f"the npm proxy exited with {child.returncode}: {' / '.join(tail)}")
        if time.monotonic() > deadline:
            stop(state)
            raise NpmProxyError(f"the npm proxy did not listen on {addresses} port {port} within "
                                f"{START_TIMEOUT:.0f}s; see {_root(state) / 'daemon.log'}")
        time.sleep(0.1)


def stop(state: StateDir) -> None:
    """Stop the proxy process if it runs (idempotent); waits until it is gone."""
    pid = _running_pid(state)
    if pid is not None:
        proxy.terminate(pid, lambda: _running_pid(state) == pid)
    pidfile(state).unlink(missing_ok=True)


def read_stats(state: StateDir) -> dict[str, Any]:
    """stats.json: {"total": {...}, "clients": {ip: {...}}} (zeros when nothing was served yet)."""
    try:
        data: dict[str, Any] = json.loads(stats_file(state).read_text())
    except (OSError, ValueError):
        data = {"total": dict.fromkeys(COUNTERS, 0), "clients": {}}
    return data


def status(state: StateDir, port: int = NPM_PORT) -> dict[str, Any]:
    """{"running", "pid", "port", "listening", "registry" (URL for guests), "upstream", "cache_dir",
    "access_log", "total" (counters)} ."""
    pid = _running_pid(state)
    return {
        "running": pid is not None,
        "pid": pid,
        "port": port,
        "listening": _listening(pid, port),
        "registry": GUEST_REGISTRY_URL,
        "upstream": hostconf.npm_registry(),
        "cache_dir": str(cache_dir(state)),
        "access_log": str(_root(state) / "access.log"),
        "total": read_stats(state)["total"],
    }
