"""Phase 0 checklist (the seed's "Container Setup" and health check), per component of each container.

Every check names what it found when it fails. Secrets reach the guest on stdin only; outputs that
could hold one (pm2 jlist carries the app's environment) are parsed, never echoed.
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

import pytest

from psa_provision.components.catalog import APP_HOME, APP_USER, ENV_FILE
from psa_provision.suites.checks import (
    hs256_token,
    listening_ports,
    loopback_only,
    net0_fields,
    pg_bytes,
    public_ports,
    rabbit_tags,
    size_bytes,
    wildcard_listeners,
)

PG = "runuser -u postgres -- psql -XAt -v ON_ERROR_STOP=1"
EXTENSIONS = {"uuid-ossp", "pg_trgm", "btree_gin", "pgcrypto"}
PM2 = f"runuser -u {APP_USER} -- env HOME={APP_HOME} PM2_HOME={APP_HOME}/.pm2 pm2"
PM2_PID = f"{APP_HOME}/.pm2/pm2.pid"
HEAP_OPTIONS = "/etc/elasticsearch/jvm.options.d/heap.options"


def output(host: Any, command: str, what: str) -> str:
    """stdout of a command that must succeed; the failure names `what` and the command's complaint."""
    result = host.run(command)
    complaint = (result.stderr.strip() or result.stdout.strip()).splitlines()[-1:] or [""]
    assert result.rc == 0, f"{what} failed (exit {result.rc}): {complaint[0][:200]}"
    return str(result.stdout)


def sql(host: Any, query: str, db: str = "postgres") -> str:
    """One psql query as the postgres superuser (local socket), its unaligned output."""
    return output(host, f"{PG} -d {shlex.quote(db)} -c {shlex.quote(query)}", f"psql {query!r}").strip()


# --- the container itself (Proxmox config == phase file) -------------------------------------------

def test_container_config_matches_phase(container: dict[str, Any], proxmox: Any) -> None:
    config = proxmox.get_container(container["node"], container["vmid"])
    assert config is not None, f"container {container['vmid']} does not exist on node {container['node']}"
    want = {
        "hostname": container["hostname"], "cores": container["cores"], "memory": container["memory_mb"],
        "swap": container["swap_mb"], "unprivileged": 1 if container["unprivileged"] else 0,
    }
    found = {key: config.get(key) for key in want}
    found = {k: (int(v) if k != "hostname" and v is not None else v) for k, v in found.items()}
    net = net0_fields(str(config.get("net0", "")))
    want_net = {"bridge": container["bridge"], "ip": container["ip_cidr"], "gw": container["gateway"]}
    found_net = {k: net.get(k) for k in want_net}
    features = dict(f.split("=", 1) for f in str(config.get("features", "")).split(",") if "=" in f)
    want_features = {k: str(v) for k, v in container["features"].items()}
    found_features = {k: features.get(k) for k in want_features}
    wrong = [f"{k}={found[k]!r} (phase: {want[k]!r})" for k in want if found[k] != want[k]]
    wrong += [f"net0 {k}={found_net[k]!r} (phase: {want_net[k]!r})"
              for k in want_net if found_net[k] != want_net[k]]
    wrong += [f"features {k}={found_features[k]!r} (phase: {want_features[k]!r})"
              for k in want_features if found_features[k] != want_features[k]]
    assert not wrong, "Proxmox config differs from the phase file: " + "; ".join(wrong)


def test_no_wildcard_listener_but_ssh_and_public_services(host: Any, container: dict[str, Any],
                                                         ctx: dict[str, Any]) -> None:
    # Stores, epmd (4369) and RabbitMQ's distribution port (25672) bind loopback or the private IP.
    allowed = public_ports(ctx["services"], container["hostname"])
    found = wildcard_listeners(host.socket.get_listening_sockets(), allowed)
    assert not found, f"listening on every address (only ports {sorted(allowed)} may): {found}"


# --- PostgreSQL 15 ------------------------------------------------------------------------------

@pytest.mark.component("postgresql")
def test_postgresql_15_installed(host: Any) -> None:
    pkg = host.package("postgresql-15")
    assert pkg.is_installed, "package postgresql-15 is not installed"


@pytest.mark.component("postgresql")
def test_postgresql_running_and_enabled(host: Any) -> None:
    cluster = host.service("postgresql@15-main")
    assert cluster.is_running, "postgresql@15-main is not running"
    assert host.service("postgresql").is_enabled, "postgresql is not enabled at boot"


@pytest.mark.component("postgresql")
def test_postgresql_listens_on_loopback_only(host: Any, expected: dict[str, Any]) -> None:
    sockets = listening_ports(host.socket.get_listening_sockets(), 5432)
    assert "tcp://127.0.0.1:5432" in sockets, f"nothing listens on 127.0.0.1:5432 (found {sockets})"
    also = expected.get("listen", "127.0.0.1")
    assert loopback_only(sockets, also), f"port 5432 is open beyond loopback and {also}: {sockets}"


@pytest.mark.component("postgresql")
def test_postgresql_config_files_in_effect(host: Any) -> None:
    # The last occurrence of each setting in the config files must be applied (no restart pending).
    rows = sql(host, "SELECT name || '|' || coalesce(error, '') FROM (SELECT DISTINCT ON (name) name, "
                     "applied, error FROM pg_file_settings ORDER BY name, seqno DESC) s "
                     "WHERE NOT applied OR error IS NOT NULL")
    assert rows == "", f"settings in the config files not in effect (restart pending?): {rows.splitlines()}"


@pytest.mark.component("postgresql")
def test_postgresql_rendered_settings_in_effect(host: Any, expected: dict[str, Any]) -> None:
    settings: dict[str, str] = expected.get("postgresql", {})
    wrong = []
    for name, want in sorted(settings.items()):
        found = sql(host, f"SHOW {name}")
        if pg_bytes(found) != pg_bytes(str(want)):
            wrong.append(f"{name} = {found} (rendered: {want})")
    assert settings, "no rendered PostgreSQL settings in the verify context"
    assert not wrong, "; ".join(wrong)


@pytest.mark.component("postgresql")
def test_database_owned_by_psa_app_with_extensions(host: Any) -> None:
    owner = sql(host, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'psa_platform'")
    assert owner == "psa_app", f"database psa_platform owner is {owner or '(no such database)'!r}"
    extensions = set(sql(host, "SELECT extname FROM pg_extension", db="psa_platform").split())
    assert extensions >= EXTENSIONS, f"missing extensions in psa_platform: {sorted(EXTENSIONS - extensions)}"


@pytest.mark.component("postgresql")
def test_psa_app_can_log_in_with_its_password(run_stdin: Any, secrets: Any) -> None:
    result = run_stdin('PGPASSWORD="$(cat)" psql -XAt -h 127.0.0.1 -U psa_app -d psa_platform -c "SELECT 1"',
                       secrets.get("postgresql.app_password").value)
    assert result.returncode == 0 and result.stdout.strip() == "1", \
        f"psa_app cannot log in over TCP: {result.stderr.strip()[:200]}"


# --- Redis --------------------------------------------------------------------------------------

REDIS_AUTH = 'REDISCLI_AUTH="$(cat)" redis-cli -h 127.0.0.1 --no-auth-warning'


@pytest.mark.component("redis")
def test_redis_running_and_enabled(host: Any) -> None:
    service = host.service("redis-server")
    assert service.is_running, "redis-server is not running"
    assert service.is_enabled, "redis-server is not enabled at boot"


@pytest.mark.component("redis")
def test_redis_requires_auth(host: Any) -> None:
    out = host.run("redis-cli -h 127.0.0.1 PING").stdout.strip()
    assert out.startswith("NOAUTH"), f"unauthenticated PING answered {out!r}, expected NOAUTH"


@pytest.mark.component("redis")
def test_redis_password_works(run_stdin: Any, secrets: Any) -> None:
    result = run_stdin(f"{REDIS_AUTH} PING", secrets.get("redis.password").value)
    assert result.stdout.strip() == "PONG", f"PING with the password answered {result.stdout.strip()!r}"


@pytest.mark.component("redis")
@pytest.mark.parametrize("command", ["FLUSHALL", "FLUSHDB"])
def test_redis_flush_commands_unavailable(run_stdin: Any, secrets: Any, command: str) -> None:
    # COMMAND INFO asks without running it: an unknown (renamed-away) command yields an empty reply.
    result = run_stdin(f"{REDIS_AUTH} COMMAND INFO {command}", secrets.get("redis.password").value)
    assert result.returncode == 0, f"COMMAND INFO failed: {result.stdout.strip()} {result.stderr.strip()}"
    assert result.stdout.strip() == "", f"{command} is still available"


@pytest.mark.component("redis")
def test_redis_aof_on_and_bound_to_loopback(run_stdin: Any, secrets: Any, host: Any,
                                            expected: dict[str, Any]) -> None:
    result = run_stdin(f"{REDIS_AUTH} CONFIG GET appendonly", secrets.get("redis.password").value)
    assert result.stdout.split() == ["appendonly", "yes"], f"CONFIG GET appendonly: {result.stdout.split()}"
    sockets = listening_ports(host.socket.get_listening_sockets(), 6379)
    also = expected.get("listen", "127.0.0.1")
    assert sockets and loopback_only(sockets, also), f"redis listens on {sockets or 'nothing'}"


# --- RabbitMQ -----------------------------------------------------------------------------------

def rabbit_users(host: Any) -> dict[str, list[str]]:
    out = output(host, "rabbitmqctl -q list_users --formatter json", "rabbitmqctl list_users")
    return {u["user"]: rabbit_tags(u.get("tags", [])) for u in json.loads(out)}


@pytest.mark.component("rabbitmq")
def test_rabbitmq_running_and_enabled(host: Any) -> None:
    service = host.service("rabbitmq-server")
    assert service.is_running, "rabbitmq-server is not running"
    assert service.is_enabled, "rabbitmq-server is not enabled at boot"


@pytest.mark.component("rabbitmq")
def test_rabbitmq_users(host: Any) -> None:
    users = rabbit_users(host)
    assert "guest" not in users, "the default guest user still exists"
    assert "administrator" in users.get("admin", []), f"admin tags: {users.get('admin', '(no admin user)')}"
    assert "psa_app" in users, f"no psa_app user (users: {sorted(users)})"


@pytest.mark.component("rabbitmq")
def test_rabbitmq_psa_app_authenticates(run_stdin: Any, secrets: Any) -> None:
    result = run_stdin("rabbitmqctl -q authenticate_user psa_app", secrets.get("rabbitmq.app_password").value)
    assert result.returncode == 0, f"psa_app cannot authenticate: {result.stdout.strip()[:200]} " \
                                   f"{result.stderr.strip()[:200]}"


# --- Elasticsearch ------------------------------------------------------------------------------

def es_get(host: Any, path: str) -> Any:
    url = shlex.quote("http://127.0.0.1:9200" + path)
    return json.loads(output(host, f"curl -sSf --max-time 10 {url}", f"GET :9200{path}"))


@pytest.mark.component("elasticsearch")
def test_elasticsearch_healthy_with_cluster_name(host: Any, expected: dict[str, Any]) -> None:
    health = es_get(host, "/_cluster/health")
    assert health.get("status") in ("green", "yellow"), f"cluster health is {health.get('status')!r}"
    want = expected.get("elasticsearch", {}).get("cluster_name", "psa-platform")
    found = health.get("cluster_name")
    assert found == want, f"cluster_name is {found!r}, want {want!r}"


@pytest.mark.component("elasticsearch")
def test_elasticsearch_heap_and_loopback(host: Any, expected: dict[str, Any]) -> None:
    nodes = es_get(host, "/_cat/nodes?h=heap.max&format=json&bytes=b")
    heap = int(nodes[0]["heap.max"])
    options = host.file(HEAP_OPTIONS)
    assert options.exists, f"{HEAP_OPTIONS} is missing"
    xmx = re.findall(r"^-Xmx(\S+)$", options.content_string, re.MULTILINE)
    assert xmx, f"no -Xmx line in {HEAP_OPTIONS}"
    want_text = expected.get("elasticsearch", {}).get("heap") or xmx[-1]
    assert size_bytes(xmx[-1]) == size_bytes(want_text), f"{HEAP_OPTIONS} has -Xmx{xmx[-1]}, want {want_text}"
    want = size_bytes(want_text)
    assert abs(heap - want) <= want * 0.05, f"heap.max is {heap} bytes, the configured heap is {want_text}"
    sockets = listening_ports(host.socket.get_listening_sockets(), 9200)
    also = expected.get("listen", "127.0.0.1")
    assert sockets and loopback_only(sockets, also), f"9200 listens on {sockets or 'nothing'} (want loopback)"


# --- Node.js 20 and PM2 -------------------------------------------------------------------------

@pytest.mark.component("nodejs")
def test_nodejs_20_and_pm2_present(host: Any) -> None:
    version = host.run("node --version").stdout.strip()
    assert version.startswith("v20."), f"node --version is {version or '(no node)'!r}, want v20.x"
    pm2 = host.run("pm2 --version")
    assert pm2.rc == 0, "pm2 is not installed"


def pm2_apps(host: Any) -> dict[str, list[str]]:
    """name -> statuses of its instances, from `pm2 jlist` as user psa (output never echoed)."""
    # Without a running daemon `pm2 jlist` would start one: verify only looks.
    alive = host.run(f"kill -0 \"$(cat {PM2_PID})\"")
    assert alive.rc == 0, f"the PM2 daemon of {APP_USER} is not running ({PM2_PID})"
    out = host.run(f"{PM2} jlist")
    assert out.rc == 0, f"pm2 jlist as {APP_USER} failed (exit {out.rc})"
    start = out.stdout.find("[")
    apps: dict[str, list[str]] = {}
    for proc in json.loads(out.stdout[start:] if start >= 0 else "[]"):
        apps.setdefault(proc["name"], []).append(proc["pm2_env"]["status"])
    return apps


@pytest.mark.component("app")
def test_pm2_app_online_with_instances(host: Any, ctx: dict[str, Any], service: str) -> None:
    statuses = pm2_apps(host).get(service, [])
    want = ctx["services"][service]["instances"]
    online = statuses.count("online")
    assert online == want == len(statuses), f"{service}: {online} of {len(statuses)} instances online, " \
                                            f"phase wants {want} (statuses: {statuses})"


def http_get(host: Any, url: str) -> tuple[int, str]:
    out = host.run(f"curl -s --max-time 10 -w '\\n%{{http_code}}' {shlex.quote(url)}")
    body, _, code = out.stdout.rpartition("\n")
    return int(code or 0), body


@pytest.mark.component("app")
def test_service_health(host: Any, ctx: dict[str, Any], service: str, expected: dict[str, Any]) -> None:
    port = ctx["services"][service]["port"]
    address = expected.get("service_addresses", {}).get(service, "127.0.0.1")
    code, body = http_get(host, f"http://{address}:{port}/health")
    assert code == 200, f"GET :{port}/health answered {code:03d} {body[:200]!r}" if code else \
        f"nothing answers GET :{port}/health"
    assert json.loads(body).get("status") == "ok", f"{service} /health: {body[:200]}"


@pytest.mark.component("app")
@pytest.mark.upstreams
def test_gateway_routes_to_service(ctx: dict[str, Any], host: Any, service: str, run_stdin: Any,
                                   secrets: Any) -> None:
    port = ctx["services"]["api-gateway"]["port"]
    code, body = http_get(host, f"http://127.0.0.1:{port}/health")
    assert body.startswith("{"), f"gateway GET :{port}/health answered {code:03d} {body[:100]!r}"
    check = json.loads(body).get("checks", {}).get(service)
    assert check == "ok", f"gateway :{port}/health says {service}: {check!r}"
    # A request with a valid token through /api/<service>: the service must answer, not the gateway's
    # 401 (token refused) or 502/503/504 (upstream down). The token travels on stdin (curl -H @-).
    token = hs256_token(secrets.get("app.jwt_secret").value)
    url = shlex.quote(f"http://127.0.0.1:{port}/api/{service}")
    result = run_stdin(f"curl -s --max-time 10 -o /dev/null -w '%{{http_code}}' -H @- {url}",
                       f"Authorization: Bearer {token}\n")
    status = result.stdout.strip()
    assert status.isdigit() and int(status) not in (0, 401, 502, 503, 504), \
        f"GET :{port}/api/{service} through the gateway answered {status or 'nothing'}"


@pytest.mark.component("app")
def test_env_file_private_to_psa(host: Any) -> None:
    env = host.file(ENV_FILE)
    assert env.exists, f"{ENV_FILE} is missing"
    assert (env.mode, env.user) == (0o600, APP_USER), \
        f"{ENV_FILE} is mode {env.mode:04o} owner {env.user}, want 0600 {APP_USER}"


# --- scripts: backup schedule and health check ----------------------------------------------------

@pytest.mark.component("scripts")
def test_backup_scheduled_daily_at_2(host: Any) -> None:
    cron = host.file("/etc/cron.d/psa-backup")
    assert cron.exists, "/etc/cron.d/psa-backup is missing"
    lines = [line for line in cron.content_string.splitlines() if line.strip() and not line.startswith("#")]
    assert any(re.match(r"^0 2 \* \* \* \S+ .*backup-psa\.sh", line) for line in lines), \
        f"no `0 2 * * * <user> ...backup-psa.sh` line in /etc/cron.d/psa-backup: {lines}"
    assert host.file("/usr/local/bin/backup-psa.sh").mode & 0o100, "backup-psa.sh is not executable"


@pytest.mark.component("scripts")
def test_health_check_script_passes(host: Any) -> None:
    result = host.run("/usr/local/bin/health-check.sh")
    failed = [line for line in result.stdout.splitlines() if "FAIL" in line]
    complaint = result.stderr.strip().splitlines()[-1:] or [""]
    assert result.rc == 0, f"health-check.sh exited {result.rc}: {failed[:8] or complaint[0][:200]}"
