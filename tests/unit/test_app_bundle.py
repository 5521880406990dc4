"""The bundled app (psa_provision/data/psa-platform): its shape, its env contract, and a real build.

psa-provision ships this directory to /opt/psa-platform and runs `npm ci && npm run build` there,
then PM2 starts services/<name>/dist/index.js with the ports below. These tests check that shape
without a guest, build the bundle with the host's npm in a temporary copy, and start the built
gateway and auth on loopback to see their answers when every store is missing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from psa_provision.packaged import APP_BUNDLE, TEMPLATES_DIR
from psa_provision.phases import APP_SERVICES

REPO = Path(__file__).resolve().parents[2]
BUNDLE = APP_BUNDLE
ENV_TEMPLATE = TEMPLATES_DIR / "env.j2"

# The seed's port table ("Application Services"); the tool's own table must agree.
PORTS = {
    "api-gateway": 3000, "auth": 3010, "crm": 3020, "tickets": 3030,
    "billing": 3040, "projects": 3050, "assets": 3060, "reports": 3070,
}
SHARED = ("database", "redis", "rabbitmq", "utils")

# The .env contract with templates/env.j2 (rendered by the tool), plus optional tuning knobs.
CONTRACT_ENV = {
    "NODE_ENV", "PORT",
    "POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_DB", "POSTGRES_USER", "POSTGRES_PASSWORD",
    "REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD",
    "RABBITMQ_HOST", "RABBITMQ_PORT", "RABBITMQ_USER", "RABBITMQ_PASSWORD", "RABBITMQ_VHOST",
    "ELASTICSEARCH_HOST", "ELASTICSEARCH_PORT",
    "JWT_SECRET", "APP_ADMIN_EMAIL", "APP_ADMIN_PASSWORD",
    "AUTH_SERVICE_URL", "CRM_SERVICE_URL", "TICKETS_SERVICE_URL", "BILLING_SERVICE_URL",
    "PROJECTS_SERVICE_URL", "ASSETS_SERVICE_URL", "REPORTS_SERVICE_URL",
    "SERVICE_BIND", "GATEWAY_BIND",
}
OPTIONAL_ENV = {
    "LOG_LEVEL", "PG_POOL_MAX", "PG_CONNECT_TIMEOUT_MS", "PG_QUERY_TIMEOUT_MS", "REDIS_COMMAND_TIMEOUT_MS",
    "GATEWAY_TIMEOUT_MS", "SHUTDOWN_TIMEOUT_MS",
    # phase 3's store clusters (absent: one Redis at REDIS_HOST, one RabbitMQ at RABBITMQ_HOST)
    "REDIS_SENTINELS", "REDIS_SENTINEL_NAME", "RABBITMQ_NODES", "RABBITMQ_QUEUE_TYPE", "ELASTICSEARCH_NODES",
}
ENV_READ = re.compile(r"\benv(?:Int)?\(\s*['\"`]([A-Z0-9_]+)['\"`]\s*(,)?")
PROCESS_ENV_READ = re.compile(r"process\.env\.([A-Z0-9_]+)")


def _package(path: Path) -> dict[str, object]:
    data = json.loads((path / "package.json").read_text())
    assert isinstance(data, dict)
    return data


def _sources() -> list[Path]:
    return sorted(p for p in BUNDLE.glob("*/*/src/*.ts"))


# --- shape ------------------------------------------------------------------------------------------


def test_services_are_the_seeds_eight_with_the_tools_ports() -> None:
    present = {p.name for p in (BUNDLE / "services").iterdir() if p.is_dir()}
    assert present == set(PORTS), f"services/ holds {sorted(present)}, want {sorted(PORTS)}"
    assert dict(APP_SERVICES) == PORTS, "psa_provision.phases.APP_SERVICES disagrees with the seed's ports"


@pytest.mark.parametrize("service", sorted(PORTS))
def test_service_package_builds_its_entry_point(service: str) -> None:
    root = BUNDLE / "services" / service
    package = _package(root)
    scripts = package.get("scripts")
    assert isinstance(scripts, dict) and scripts.get("build"), f"{service}/package.json has no build script"
    main = package.get("main")
    assert main == "dist/index.js", f"{service}: PM2 runs dist/index.js, main is {main}"
    assert (root / "tsconfig.json").is_file()
    source = (root / "src" / "index.ts").read_text()
    port = PORTS[service]
    assert f"defaultPort: {port}," in source, f"{service}/src/index.ts does not default to {port}"


@pytest.mark.parametrize("name", SHARED)
def test_shared_package_present(name: str) -> None:
    root = BUNDLE / "shared" / name
    assert _package(root).get("name") == f"@psa/{name}"
    assert (root / "src" / "index.ts").is_file() and (root / "tsconfig.json").is_file()


def test_root_is_one_workspace_building_shared_before_services() -> None:
    package = _package(BUNDLE)
    workspaces = package.get("workspaces")
    assert isinstance(workspaces, list)
    assert workspaces.index("services/*") > max(workspaces.index(f"shared/{n}") for n in SHARED)
    scripts = package.get("scripts")
    assert isinstance(scripts, dict) and "tsc -b" in str(scripts.get("build"))
    solution = (BUNDLE / "tsconfig.json").read_text()
    refs = re.findall(r'"path":\s*"([^"]+)"', solution)
    assert refs[: len(SHARED)] == ["shared/utils", "shared/database", "shared/redis", "shared/rabbitmq"]
    assert sorted(refs[len(SHARED):]) == sorted(f"services/{s}" for s in PORTS)


def test_lock_file_pins_every_package_by_hash_and_names_no_registry() -> None:
    """Each dependency is pinned by version and sha512 integrity only: no `resolved` address, so `npm ci`
    fetches it from the registry the guest's npm is configured with (the inventory's packages.npm_registry,
    or the machine's own npm configuration), and no registry's host name is committed."""
    lock = json.loads((BUNDLE / "package-lock.json").read_text())
    assert lock.get("lockfileVersion") == 3
    external = {k: v for k, v in lock["packages"].items()
                if k.startswith("node_modules/") and not v.get("link")}
    assert external, "package-lock.json lists no dependencies"
    for name, entry in external.items():
        assert entry.get("integrity", "").startswith("sha512-"), f"{name} has no integrity hash"
        assert re.fullmatch(r"\d+\.\d+\.\d+\S*", entry.get("version", "")), f"{name} has no version"
        assert "resolved" not in entry, f"{name} names where to fetch it: {entry['resolved']!r}"
    text = (BUNDLE / "package-lock.json").read_text()
    assert "file:" not in text


def test_no_build_output_or_modules_committed() -> None:
    listed = subprocess.run(["git", "ls-files", str(BUNDLE)], cwd=REPO, capture_output=True, text=True,
                            check=True)
    bad = [f for f in listed.stdout.split() if "/node_modules/" in f or "/dist/" in f]
    assert not bad, f"build output committed: {bad[:5]}"


def test_code_reads_only_the_env_contract() -> None:
    read: set[str] = set()
    for path in _sources():
        text = path.read_text()
        read |= {m.group(1) for m in ENV_READ.finditer(text)}
        read |= set(PROCESS_ENV_READ.findall(text))
    assert read, "found no environment reads: the pattern is stale"
    unknown = read - CONTRACT_ENV - OPTIONAL_ENV
    assert not unknown, f"the app reads variables outside the .env contract: {sorted(unknown)}"


def test_required_variables_are_rendered_by_the_tool() -> None:
    if not ENV_TEMPLATE.is_file():
        pytest.skip(f"{ENV_TEMPLATE} not written yet")
    required = {m.group(1) for p in _sources() for m in ENV_READ.finditer(p.read_text()) if not m.group(2)}
    assert {"JWT_SECRET", "POSTGRES_PASSWORD", "APP_ADMIN_EMAIL"} <= required, "scan is stale"
    template = ENV_TEMPLATE.read_text()
    rendered = set(re.findall(r"^([A-Z0-9_]+)=", template, re.MULTILINE))
    if "service_urls" in template:
        rendered |= {f"{s.upper()}_SERVICE_URL" for s in PORTS if s != "api-gateway"}
    missing = required - rendered
    assert not missing, f"the app requires {sorted(missing)} but {ENV_TEMPLATE.name} does not write them"


# --- build and run ----------------------------------------------------------------------------------


def _npm(args: list[str], cwd: Path) -> None:
    result = subprocess.run(["npm", *args], cwd=cwd, capture_output=True, text=True, timeout=600)
    output = f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert result.returncode == 0, f"npm {' '.join(args)} failed:\n{output}"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the bundle after `npm ci && npm run build`, as psa-provision runs it in the guest."""
    if shutil.which("npm") is None or shutil.which("node") is None:
        pytest.skip("npm/node not installed on this machine (CI has Node.js 20 + npm)")
    copy = tmp_path_factory.mktemp("bundle") / "psa-platform"
    shutil.copytree(BUNDLE, copy, ignore=shutil.ignore_patterns("node_modules", "dist"))
    _npm(["ci", "--no-audit", "--no-fund"], copy)
    _npm(["run", "build"], copy)
    return copy


def test_npm_ci_and_build_produce_every_entry_point(built: Path) -> None:
    wanted = [*(built / "services" / s / "dist" / "index.js" for s in PORTS),
              *(built / "shared" / n / "dist" / "index.js" for n in SHARED)]
    missing = [str(p) for p in wanted if not p.is_file()]
    assert not missing, f"not built: {missing}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _token(secret: str, ttl_s: int = 300) -> str:
    """An HS256 JWT made in Python, as the verify suite makes them: the gateway must accept it."""
    now = int(time.time())
    header = _b64url(b'{"alg":"HS256","typ":"JWT"}')
    claims = {"sub": "1", "email": "t@psa-platform.local", "role": "admin", "jti": uuid.uuid4().hex,
              "iat": now, "exp": now + ttl_s}
    payload = _b64url(json.dumps(claims).encode())
    sig = hmac.new(secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64url(sig)}"


def _call(
    url: str, method: str = "GET", token: str | None = None, body: object = None
) -> tuple[int, dict[str, object]]:
    """One JSON request to a process on loopback: (status, body), also for 4xx/5xx."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)  # noqa: S310 (loopback http only)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


SECRET = "unit-test-jwt-secret-0123456789abcdef"


@pytest.fixture()
def gateway(built: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """The built gateway on a free loopback port, every upstream pointing at a closed port."""
    port, closed = _free_port(), _free_port()
    env = {"PATH": os.environ["PATH"], "PORT": str(port), "GATEWAY_BIND": "127.0.0.1", "JWT_SECRET": SECRET,
           "GATEWAY_TIMEOUT_MS": "3000"}
    env |= {f"{s.upper()}_SERVICE_URL": f"http://127.0.0.1:{closed}" for s in PORTS if s != "api-gateway"}
    proc = subprocess.Popen(["node", "services/api-gateway/dist/index.js"], cwd=built, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                out = proc.communicate()[0]
                pytest.fail(f"gateway did not listen on :{port} within 20 s:\n{out[-2000:]}")
            time.sleep(0.1)
    yield url, proc
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


def test_gateway_reports_each_unreachable_service(gateway: tuple[str, subprocess.Popen[str]]) -> None:
    url, _ = gateway
    status, body = _call(f"{url}/health")
    assert status == 503 and body["status"] == "error"
    checks = body["checks"]
    assert isinstance(checks, dict) and set(checks) == set(PORTS) - {"api-gateway"}
    assert all(str(v).startswith("error: ") and "ECONNREFUSED" in str(v) for v in checks.values()), checks


def test_gateway_checks_tokens_before_proxying(gateway: tuple[str, subprocess.Popen[str]]) -> None:
    url, _ = gateway
    assert _call(f"{url}/api/tickets")[0] == 401
    assert _call(f"{url}/api/tickets", token=_token("another-secret-of-enough-length-000000"))[0] == 401
    assert _call(f"{url}/api/tickets", token=_token(SECRET, ttl_s=-10))[0] == 401
    status, body = _call(f"{url}/api/tickets", token=_token(SECRET))
    assert status == 502 and body["service"] == "tickets", body
    # Login is the one route without a token: it reaches the (down) auth service.
    status, body = _call(f"{url}/api/auth/login", "POST", body={"email": "a@b.c", "password": "x"})
    assert status == 502 and body["service"] == "auth", body
    assert _call(f"{url}/api/unknown", token=_token(SECRET))[0] == 404


def test_gateway_exits_cleanly_on_sigterm(gateway: tuple[str, subprocess.Popen[str]]) -> None:
    _, proc = gateway
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=15)[0]
    assert proc.returncode == 0, out[-2000:]
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [x["msg"] for x in lines][-2:] == ["shutting down", "stopped"], out[-2000:]
    assert all(x["service"] == "api-gateway" and "level" in x for x in lines)


def test_missing_secret_is_one_log_line_and_exit_1(built: Path) -> None:
    result = subprocess.run(["node", "services/auth/dist/index.js"], cwd=built, capture_output=True,
                            text=True, env={"PATH": os.environ["PATH"]}, timeout=30)
    assert result.returncode == 1
    line = json.loads(result.stdout.strip().splitlines()[-1])
    assert line["level"] == "error" and "JWT_SECRET" in line["error"], result.stdout


def _start_gateway(built: Path, cwd: Path) -> tuple[str, subprocess.Popen[str]]:
    """The built gateway on a free loopback port with `cwd` as its app directory (data/metrics/ there)."""
    port = _free_port()
    env = {"PATH": os.environ["PATH"], "PORT": str(port), "GATEWAY_BIND": "127.0.0.1", "JWT_SECRET": SECRET,
           "GATEWAY_TIMEOUT_MS": "3000"}
    env |= {f"{s.upper()}_SERVICE_URL": f"http://127.0.0.1:{_free_port()}"
            for s in PORTS if s != "api-gateway"}
    proc = subprocess.Popen(["node", str(built / "services/api-gateway/dist/index.js")], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return f"http://127.0.0.1:{port}", proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"gateway did not listen on :{port}:\n{proc.communicate()[0][-2000:]}")
            time.sleep(0.1)


@pytest.fixture()
def two_gateways(built: Path, tmp_path: Path) -> Iterator[list[tuple[str, subprocess.Popen[str]]]]:
    """Two gateway processes sharing one app directory (tmp_path), as two PM2 cluster workers do."""
    started = [_start_gateway(built, tmp_path), _start_gateway(built, tmp_path)]
    yield started
    for _, proc in started:
        if proc.poll() is None:
            proc.terminate()
            proc.communicate(timeout=15)


def test_gateway_metrics_sum_every_worker_and_count_only_api_requests(
        two_gateways: list[tuple[str, subprocess.Popen[str]]]) -> None:
    (one, _), (two, _) = two_gateways
    for _ in range(3):
        assert _call(f"{one}/api/tickets")[0] == 401  # refused, still API load
    assert _call(f"{two}/api/tickets", token=_token(SECRET))[0] == 502
    _call(f"{one}/health")
    status, body = _call(f"{two}/metrics")  # either worker answers for both
    assert status == 200, body
    assert body["service"] == "api-gateway" and body["workers"] == 2
    # Each worker writes its counts every second, and the last minute counts whole seconds only.
    deadline = time.monotonic() + 10
    while body["requests_last_minute"] != 4 and time.monotonic() < deadline:
        time.sleep(0.2)
        body = _call(f"{one if time.monotonic() % 2 < 1 else two}/metrics")[1]
    assert body["requests_total"] == 4 and body["errors_total"] == 1, body
    assert body["requests_last_minute"] == 4 and body["errors_last_minute"] == 1, body


def test_gateway_metrics_answer_loopback_only_and_keep_a_stopped_workers_requests(
        two_gateways: list[tuple[str, subprocess.Popen[str]]], tmp_path: Path) -> None:
    import http.client

    (one, _), (two, second) = two_gateways
    host, port = one.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10, source_address=("127.0.0.2", 0))
    conn.request("GET", "/metrics")
    assert conn.getresponse().status == 404  # from another address than 127.0.0.1 or ::1: not answered
    conn.close()
    files = tmp_path / "data" / "metrics" / "api-gateway"
    assert len(list(files.glob("*.json"))) == 2
    for _ in range(3):
        assert _call(f"{two}/api/tickets")[0] == 401  # served by the worker about to stop
    second.send_signal(signal.SIGTERM)  # a graceful stop: gone from the live workers, not its requests
    second.communicate(timeout=15)
    assert len(list(files.glob("*.json"))) == 2
    time.sleep(1.2)  # the last minute counts whole seconds
    body = _call(f"{one}/metrics")[1]
    assert body["workers"] == 1, body
    assert body["requests_last_minute"] == 3 and body["requests_total"] == 3, body
