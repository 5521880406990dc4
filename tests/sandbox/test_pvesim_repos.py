"""The sandbox's package services for real: signed apt repositories readable by apt, and the package proxy.

apt runs on this host against a temporary sources.list and lists dir (the host's apt config is untouched).
The repositories are built into a temporary state dir and served on a free port of 127.0.0.1, so the test
does not collide with a running `pvesim up` (which serves the same tree on :8080).
"""

from __future__ import annotations

import http.client
import json
import shlex
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from pvesim import hostconf, proxy, repos
from pvesim.es_standin.config import ES_VERSION
from pvesim.paths import StateDir

pytestmark = pytest.mark.sandbox


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def built_state(tmp_path_factory: pytest.TempPathFactory) -> StateDir:
    state = StateDir(tmp_path_factory.mktemp("pvesim-state"))
    started = time.monotonic()
    repos.build_repos(state, print)
    print(f"repository build time: {time.monotonic() - started:.1f}s")
    return state


@pytest.fixture(scope="module")
def served(built_state: StateDir) -> Iterator[str]:
    port = _free_port()
    server = repos.RepoServer(built_state, port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def _apt(tmp: Path, base: str, key: Path, *args: str) -> str:
    """apt-get/apt-cache with only our sources.list, lists and cache under tmp."""
    node, es = repos.REPOS["nodejs"], repos.REPOS["elasticsearch"]
    (tmp / "sources.list").write_text(
        f"deb [signed-by={key}] {base}/{node['path']} {node['suite']} {node['component']}\n"
        f"deb [signed-by={key}] {base}/{es['path']} {es['suite']} {es['component']}\n"
    )
    (tmp / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (tmp / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    options = [
        f"-oDir::Etc::sourcelist={tmp / 'sources.list'}",
        "-oDir::Etc::sourceparts=-",
        f"-oDir::State::Lists={tmp / 'lists'}",
        f"-oDir::Cache={tmp / 'cache'}",
        "-oAcquire::http::Proxy::127.0.0.1=DIRECT",
        "-oAPT::Get::List-Cleanup=0",
    ]
    result = subprocess.run([args[0], *options, *args[1:]], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_second_build_is_cached(built_state: StateDir) -> None:
    messages: list[str] = []
    repos.build_repos(built_state, messages.append)
    assert messages == ["apt repositories up to date (nodejs, elasticsearch stand-in)"]


def test_apt_reads_the_signed_repositories(served: str, tmp_path: Path) -> None:
    key = tmp_path / "pvesim.asc"
    with urllib.request.urlopen(f"{served}/{repos.REPOS['nodejs']['key']}", timeout=10) as response:  # noqa: S310
        key.write_bytes(response.read())
    with urllib.request.urlopen(f"{served}/{repos.REPOS['elasticsearch']['key']}", timeout=10) as response:  # noqa: S310
        assert response.read() == key.read_bytes()
    update = _apt(tmp_path, served, key, "apt-get", "update")
    assert "NO_PUBKEY" not in update and "not signed" not in update
    policy = _apt(tmp_path, served, key, "apt-cache", "policy", "nodejs", "elasticsearch")
    assert "-1nodesource1" in policy
    assert f"{ES_VERSION}-standin" in policy
    show = _apt(tmp_path, served, key, "apt-cache", "show", "elasticsearch")
    assert "STAND-IN, not Elasticsearch: pvesim sandbox only" in show


def test_unsigned_index_is_rejected(served: str, tmp_path: Path) -> None:
    """The signature is really checked: another key makes apt refuse the repository."""
    other = tmp_path / "gnupg"
    other.mkdir(mode=0o700)
    gpg = ["gpg", "--batch", "--quiet", "--homedir", str(other)]
    subprocess.run(
        [
            *gpg,
            "--passphrase",
            "",
            "--pinentry-mode",
            "loopback",
            "--quick-gen-key",
            "other <other@localhost>",
            "rsa2048",
            "sign",
            "never",
        ],
        check=True,
    )
    wrong = tmp_path / "wrong.asc"
    wrong.write_text(
        subprocess.run([*gpg, "--armor", "--export"], check=True, capture_output=True, text=True).stdout
    )
    with pytest.raises(AssertionError, match=r"NO_PUBKEY|not signed|signature"):
        _apt(tmp_path, served, wrong, "apt-get", "update", "-oAPT::Update::Error-Mode=any")


def test_registry_download_without_npm(tmp_path: Path) -> None:
    """What a fresh host without npm does: the newest npm 10 from the registry, integrity-checked."""
    tarball = repos._registry_download(f"npm@{repos.NPM_MAJOR}", tmp_path)
    assert tarball.name.startswith(f"npm-{repos.NPM_MAJOR}.") and tarball.suffix == ".tgz"
    package = repos._untar(tarball, tmp_path / "x")
    assert json.loads((package / "package.json").read_text())["version"].startswith(f"{repos.NPM_MAJOR}.")


def test_client_info_names_the_repositories(built_state: StateDir) -> None:
    info = repos.client_info(built_state)
    assert info["proxy"] == "http://10.0.20.1:3142"
    assert info["repos"]["nodejs"]["url"] == "http://10.0.20.1:8080/node_20.x"
    assert (
        info["repos"]["elasticsearch"]["key_url"]
        == "http://10.0.20.1:8080/elasticsearch/GPG-KEY-elasticsearch"
    )


@pytest.fixture(scope="module")
def running_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StateDir]:
    """The package proxy; reuses one already running on :3142 (pvesim up) rather than colliding."""
    state = StateDir(tmp_path_factory.mktemp("pvesim-proxy"))
    try:
        with socket.create_connection(("127.0.0.1", proxy.PROXY_PORT), timeout=1):
            already = True
    except OSError:
        already = False
    if already:
        proxy.write_config(state, ["127.0.0.1"])  # only for guest-ca.crt
        yield state
        return
    proxy.start_proxy(state)
    yield state
    proxy.stop_proxy(state)
    assert not proxy.status(state)["running"]


def test_proxy_start_stop_and_a_taken_port(tmp_path: Path) -> None:
    """A second proxy on a spare port: starts, is idempotent, refuses a port another process holds, stops.

    apt-cacher-ng cannot bind ports above 32767 ("Error resolving address for binding"), so the spare
    port is looked for just above 3142 rather than taken from the kernel's ephemeral range.
    """
    port = next(p for p in range(proxy.PROXY_PORT + 1, proxy.PROXY_PORT + 100) if not proxy.listeners(p))
    state, other = StateDir(tmp_path / "a"), StateDir(tmp_path / "b")
    proxy.start_proxy(state, port=port)
    try:
        first = proxy.status(state)
        assert first["running"] and first["port"] == port
        assert first["listening"] == sorted(proxy.bind_addresses())
        proxy.start_proxy(state, port=port)
        assert proxy.status(state)["pid"] == first["pid"]  # idempotent: same process
        with pytest.raises(proxy.ProxyError, match=f"port {port} on .* is taken by pid {first['pid']}"):
            proxy.start_proxy(other, port=port)
    finally:
        proxy.stop_proxy(state)
    assert not proxy.status(state)["running"] and proxy.listeners(port) == {}


def test_proxy_serves_debian(running_proxy: StateDir) -> None:
    """The host's own Debian mirror (from its apt sources), fetched through the proxy."""
    mirror = hostconf.debian_mirror(hostconf.apt_sources())
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": "http://127.0.0.1:3142"}))
    with opener.open(f"{mirror}/dists/bookworm/Release", timeout=60) as response:
        assert b"Codename: bookworm" in response.read(400)


def test_proxy_tunnels_to_npm_registry(running_proxy: StateDir) -> None:
    context = ssl.create_default_context(cafile=str(proxy.guest_ca_file(running_proxy)))
    conn = http.client.HTTPSConnection("127.0.0.1", proxy.PROXY_PORT, context=context, timeout=30)
    conn.set_tunnel(hostconf.host_of(hostconf.npm_registry()), 443)
    conn.request("GET", "/is-number", headers={"Accept": "application/vnd.npm.install-v1+json"})
    response = conn.getresponse()
    assert response.status == 200
    assert b'"name":"is-number"' in response.read().replace(b" ", b"")
    conn.close()


# -- a guest installs both packages, as the tool does -------------------------------------------------
GUEST_VMID, GUEST_IP = 9060, "10.0.20.246"
GUEST_TEMPLATE = "debian-12-standard_12.7-1_amd64.tar.zst"


def _attach(vmid: int, script: str, timeout: float = 600, stdin: str | None = None) -> str:
    """Run a shell script in the container (lxc-attach, as root); a failure shows its output."""
    result = subprocess.run(
        ["lxc-attach", "-n", str(vmid), "--", "sh", "-ec", script],
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
    )
    assert result.returncode == 0, f"{script}\n---\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def guest() -> Iterator[int]:
    """CT 9060 on vmbr20, started, with the live sandbox's repositories built; destroyed afterwards."""
    from pvesim import network, templates
    from pvesim.lxc import LxcBackend

    state = StateDir()
    network.setup_network(state)
    proxy.start_proxy(state)
    repos.build_repos(state, print)
    template = templates.build(state, GUEST_TEMPLATE, print)
    backend = LxcBackend(state)
    if backend.exists(GUEST_VMID):
        backend.destroy(GUEST_VMID, print)
    conf = {
        "hostname": "repo-test-9060",
        "memory": "512",
        "swap": "256",
        "cores": "1",
        "unprivileged": "1",
        "ostype": "debian",
        "rootfs": f"local-lvm:vm-{GUEST_VMID}-disk-0,size=4G",
        "net0": f"name=eth0,bridge=vmbr20,ip={GUEST_IP}/24,gw=10.0.20.1,hwaddr=BC:24:11:90:60:01",
    }
    backend.create(GUEST_VMID, conf, template, None, print)
    backend.start(GUEST_VMID, print)
    deadline = time.monotonic() + 60
    while _attach(GUEST_VMID, "systemctl is-system-running --wait || true", timeout=90).strip() not in (
        "running",
        "degraded",
    ):
        assert time.monotonic() < deadline, "guest systemd did not finish booting within 60s"
    try:
        yield GUEST_VMID
    finally:
        backend.destroy(GUEST_VMID, print)


def test_guest_installs_nodejs_and_elasticsearch_through_the_repos(guest: int) -> None:
    """The tool's code path: proxy for Debian, signed-by keyrings, NodeSource/Elastic-shaped sources."""
    info = repos.client_info(StateDir())
    node, es = info["repos"]["nodejs"], info["repos"]["elasticsearch"]
    node_line = f"{node['url']} {node['suite']} {node['component']}"
    es_line = f"{es['url']} {es['suite']} {es['component']}"
    started = time.monotonic()
    _attach(
        guest,
        f"""
        printf 'Acquire::http::Proxy "{info["proxy"]}";\\nAcquire::http::Proxy::10.0.20.1 "DIRECT";\\n' \
            > /etc/apt/apt.conf.d/80proxy
        install -d /etc/apt/keyrings
        curl -fsS --noproxy '*' -o /etc/apt/keyrings/nodesource.asc {node["key_url"]}
        curl -fsS --noproxy '*' -o /etc/apt/keyrings/elastic.asc {es["key_url"]}
        cd /etc/apt/sources.list.d
        echo "deb [signed-by=/etc/apt/keyrings/nodesource.asc] {node_line}" > nodesource.list
        echo "deb [signed-by=/etc/apt/keyrings/elastic.asc] {es_line}" > elastic-8.x.list
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs elasticsearch
    """,
    )
    print(f"guest apt-get update + install nodejs elasticsearch: {time.monotonic() - started:.1f}s")
    versions = _attach(guest, "node --version; npm --version; dpkg-query -W -f '${Version}' elasticsearch")
    assert versions.startswith("v20.")
    assert versions.splitlines()[1].startswith(f"{repos.NPM_MAJOR}.")  # npm from the package, runs on node
    assert versions.strip().endswith(f"{ES_VERSION}-standin")
    assert _attach(guest, "systemctl is-active elasticsearch || true").strip() == "inactive"  # not started
    ca = Path(info["guest_ca_file"]).read_text()
    npm_view = _attach(
        guest,
        f"cat > /root/host-ca.crt; npm view is-number version --proxy {info['proxy']}"
        f" --https-proxy {info['proxy']} --cafile /root/host-ca.crt",
        stdin=ca,
    )
    assert npm_view.strip().count(".") == 2  # npm in the guest reached the registry through the proxy
    yml = (
        "cluster.name: psa-platform\nnode.name: psa-node-1\nnetwork.host: 127.0.0.1\nhttp.port: 9200\n"
        "path.data: /var/lib/elasticsearch\npath.logs: /var/log/elasticsearch\npath.repo: /srv/es-backups\n"
        "discovery.type: single-node\n"
    )
    _attach(
        guest,
        f"""
        install -d -o elasticsearch -g elasticsearch /srv/es-backups
        printf '%s' {shlex.quote(yml)} > /etc/elasticsearch/elasticsearch.yml
        printf -- '-Xms256m\\n-Xmx256m\\n' > /etc/elasticsearch/jvm.options.d/heap.options
        systemctl start elasticsearch
    """,
    )
    banner = json.loads(_attach(guest, "curl -fsS --noproxy '*' http://127.0.0.1:9200/"))
    assert banner["cluster_name"] == "psa-platform" and "STAND-IN" in banner["standin"]
    owner = _attach(guest, "ps -o user= -C python3; ls /var/log/elasticsearch")
    assert owner.split()[0] == "elasticsearch" and "psa-platform.log" in owner
    snapshot = _attach(
        guest,
        """
        curl -fsS --noproxy '*' -XPUT localhost:9200/_snapshot/b -H 'Content-Type: application/json' \
            -d '{"type":"fs","settings":{"location":"/srv/es-backups/b"}}' >/dev/null
        curl -fsS --noproxy '*' -XPUT 'localhost:9200/_snapshot/b/s1?wait_for_completion=true'
    """,
    )
    assert json.loads(snapshot)["snapshot"]["state"] == "SUCCESS"
