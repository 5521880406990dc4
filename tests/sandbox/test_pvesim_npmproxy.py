"""pvesim's npm registry proxy as `pvesim up` runs it: reported by status/credentials, on every bridge,
tarball URLs rewritten to the address asked, a second request answered from the cache."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from pvesim import npmproxy, proxy
from pvesim.paths import StateDir

pytestmark = pytest.mark.sandbox

PACKAGE = "is-number"  # tiny, no dependencies


def pvesim(*args: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "pvesim", *args], capture_output=True, text=True,
                          check=False, timeout=60)
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def get(url: str, accept: str = "application/json") -> tuple[str, bytes]:
    request = urllib.request.Request(url, headers={"Accept": accept})  # noqa: S310 - the sandbox's proxy
    with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310
        return str(response.headers["X-Cache"]), response.read()


def test_status_and_credentials_report_the_proxy_on_every_bridge() -> None:
    status = pvesim("status")["npm_proxy"]
    assert status["running"] and status["port"] == 4873
    assert set(status["listening"]) >= {"127.0.0.1", "10.0.20.1", "10.0.30.1"}
    creds = pvesim("credentials", "--json")
    assert creds["npm_registry"] == "http://10.0.20.1:4873/" == status["registry"]


@pytest.mark.parametrize("address", ["10.0.20.1", "10.0.30.1"])
def test_metadata_points_at_the_proxy_asked_and_repeats_come_from_the_cache(address: str) -> None:
    base = f"http://{address}:4873"
    get(f"{base}/{PACKAGE}")  # a miss the first time ever, then cached
    kind, body = get(f"{base}/{PACKAGE}")
    assert kind == "hit"
    tarballs = [v["dist"]["tarball"] for v in json.loads(body)["versions"].values()]
    assert tarballs and all(t.startswith(f"{base}/{PACKAGE}/-/") for t in tarballs)
    get(tarballs[-1])
    kind, data = get(tarballs[-1], accept="*/*")
    assert kind == "hit" and data[:2] == b"\x1f\x8b"  # a gzip'd tarball


def test_start_and_stop_a_second_proxy_process(tmp_path: Path) -> None:
    """What `pvesim up` and `down --purge` do, on another state dir and port: listening on the same
    addresses as the sandbox's one once started, gone (port free, pidfile removed) once stopped."""
    state = StateDir(tmp_path)
    port = 4874
    npmproxy.start(state, port)
    try:
        info = npmproxy.status(state, port)
        assert info["running"] and info["listening"] == sorted(proxy.bind_addresses())
        npmproxy.start(state, port)  # idempotent: the same process keeps running
        assert npmproxy.status(state, port)["pid"] == info["pid"]
    finally:
        npmproxy.stop(state)
    assert not npmproxy.status(state, port)["running"] and not proxy.listeners(port)
    assert not npmproxy.pidfile(state).exists()
