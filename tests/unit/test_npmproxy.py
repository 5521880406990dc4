"""pvesim's npm registry proxy: paths it serves, tarball URLs rewritten to itself, what it caches.

The upstream registry is a small local HTTP server (127.0.0.1) that counts what it is asked, so the
tests see exactly which requests reach "upstream".
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pvesim.npmproxy import ORIGIN_MARK, Cache, ProxyServer, Stats, Target, parse_target, rewrite_metadata

PACKUMENT = {
    "name": "@scope/left-pad",
    "versions": {
        "1.0.0": {"dist": {"tarball": "UP/@scope/left-pad/-/left-pad-1.0.0.tgz", "shasum": "x"}},
        "1.1.0": {"dist": {"tarball": "https://elsewhere.example/left-pad-1.1.0.tgz"}},
    },
    "readme": "see UP/ for more",
}


class Upstream(ThreadingHTTPServer):
    """A fake registry: metadata with an ETag (304 on a match), one tarball; records every path."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), UpstreamHandler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.seen: list[str] = []


class UpstreamHandler(BaseHTTPRequestHandler):
    server: Upstream

    def do_GET(self) -> None:
        self.server.seen.append(self.path)
        if self.path == "/@scope%2fleft-pad":
            if self.headers.get("If-None-Match") == '"v1"':
                self.send_response(304)
                self.end_headers()
                return
            body = json.dumps(PACKUMENT).replace("UP/", self.server.url + "/").encode()
            self.send_response(200)
            self.send_header("ETag", '"v1"')
        elif self.path == "/@scope/left-pad/-/left-pad-1.0.0.tgz":
            body = b"\x1f\x8b tarball bytes"
            self.send_response(200)
        else:
            body = b'{"error":"not found"}'
            self.send_response(404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_paths_it_serves_and_refuses() -> None:
    assert parse_target("/pm2") == Target("metadata", "pm2")
    corgi = "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*"
    assert parse_target("/@types%2fnode", corgi) == Target("metadata", "@types/node", abbreviated=True)
    node = Target("tarball", "@types/node", "node-20.1.0.tgz")
    assert parse_target("/@types/node/-/node-20.1.0.tgz") == node
    assert parse_target("/pm2/-/pm2-5.4.3.tgz?x=1") == Target("tarball", "pm2", "pm2-5.4.3.tgz")
    for bad in ("/", "/-/ping", "/-/npm/v1/security/advisories/bulk", "/../etc/passwd", "/%2e%2e/x",
                "/a/b/c", "/pm2/-/../../x.tgz", "/.hidden"):
        assert parse_target(bad) is None, bad


def test_cache_paths_stay_inside_the_cache(tmp_path: Path) -> None:
    for t in (parse_target("/@types%2fnode"), parse_target("/@types/node/-/node-20.1.0.tgz")):
        assert t is not None and t.cache_path(tmp_path).resolve().is_relative_to(tmp_path)


def test_only_tarball_urls_of_the_upstream_are_rewritten() -> None:
    body = json.dumps(PACKUMENT).replace("UP/", "https://registry.example/").encode()
    doc = json.loads(rewrite_metadata(body, "https://registry.example"))
    rewritten = f"{ORIGIN_MARK}/@scope/left-pad/-/left-pad-1.0.0.tgz"
    assert doc["versions"]["1.0.0"]["dist"]["tarball"] == rewritten
    assert doc["versions"]["1.1.0"]["dist"]["tarball"] == "https://elsewhere.example/left-pad-1.1.0.tgz"
    assert doc["readme"] == "see https://registry.example/ for more"


def test_metadata_and_tarball_fetched_once_then_served_from_the_cache(tmp_path: Path,
                                                                      upstream: Upstream) -> None:
    cache = Cache(tmp_path, upstream=upstream.url)
    meta = Target("metadata", "@scope/left-pad")
    tarball = Target("tarball", "@scope/left-pad", "left-pad-1.0.0.tgz")
    first, second = cache.get(meta), cache.get(meta)
    assert (first.result, second.result) == ("miss", "hit") and first.body == second.body
    assert first.upstream_bytes > 0 and second.upstream_bytes == 0
    assert json.loads(first.body)["versions"]["1.0.0"]["dist"]["tarball"].startswith(ORIGIN_MARK + "/")
    assert [cache.get(tarball).result for _ in range(2)] == ["miss", "hit"]
    assert cache.get(tarball).body == b"\x1f\x8b tarball bytes"
    assert upstream.seen == ["/@scope%2fleft-pad", "/@scope/left-pad/-/left-pad-1.0.0.tgz"]


def test_old_metadata_is_revalidated_and_served_stale_when_upstream_is_gone(tmp_path: Path,
                                                                           upstream: Upstream) -> None:
    meta = Target("metadata", "@scope/left-pad")
    Cache(tmp_path, upstream=upstream.url).get(meta)
    old = Cache(tmp_path, max_age=0, upstream=upstream.url)
    assert old.get(meta).result == "revalidated"  # If-None-Match -> 304: nothing downloaded
    assert upstream.seen == ["/@scope%2fleft-pad"] * 2
    upstream.shutdown()
    upstream.server_close()
    assert old.get(meta).result == "stale"
    with pytest.raises(OSError):
        old.get(Target("tarball", "@scope/left-pad", "left-pad-2.0.0.tgz"))


def test_the_proxy_rewrites_to_the_address_asked_and_counts_per_client(tmp_path: Path,
                                                                       upstream: Upstream) -> None:
    stats = Stats(tmp_path / "stats.json")
    server = ProxyServer("127.0.0.1", 0, Cache(tmp_path / "cache", upstream=upstream.url), stats,
                         tmp_path / "access.log")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        def get(path: str) -> tuple[str, bytes]:
            with urllib.request.urlopen(server.origin + path, timeout=10) as response:  # noqa: S310
                return str(response.headers["X-Cache"]), response.read()

        kind, body = get("/@scope%2fleft-pad")
        url = json.loads(body)["versions"]["1.0.0"]["dist"]["tarball"]
        assert kind == "miss" and url == f"{server.origin}/@scope/left-pad/-/left-pad-1.0.0.tgz"
        assert get(url[len(server.origin):]) == ("miss", b"\x1f\x8b tarball bytes")
        assert [get("/@scope%2fleft-pad")[0], get(url[len(server.origin):])[0]] == ["hit", "hit"]
        with pytest.raises(urllib.error.HTTPError) as missing:
            get("/no-such-package")
        assert missing.value.code == 404
    finally:
        server.shutdown()
        server.server_close()
    saved = json.loads((tmp_path / "stats.json").read_text())
    assert saved["clients"]["127.0.0.1"] == saved["total"]
    assert {k: saved["total"][k] for k in ("requests", "hits", "upstream_fetches", "errors")} == {
        "requests": 5, "hits": 2, "upstream_fetches": 2, "errors": 1}
    assert len((tmp_path / "access.log").read_text().splitlines()) == 5
