"""The app's verify checks: every PM2 app online with its instances, each /health ok, the gateway routing
to each service (exact status), .env private to psa. pm2 jlist carries the app's environment: it is
parsed, never echoed; the token travels on stdin."""

from __future__ import annotations

import json
import shlex
from typing import Any

import pytest

from psa_provision.suites.checks import hs256_token

from . import APP_USER, ENV_FILE, pm2
from .expected import HEALTH_STATUS, ROUTED_STATUS
from .health import EVERY_INSTANCE, requests_for


def pm2_apps(host: Any) -> dict[str, list[str]]:
    """name -> statuses of its instances, from `pm2 jlist` as user psa (output never echoed)."""
    # Without a running daemon `pm2 jlist` would start one: verify only looks.
    alive = host.run(pm2.DAEMON_ALIVE)
    assert alive.rc == 0, f"the PM2 daemon of {APP_USER} is not running ({pm2.PID_FILE})"
    out = host.run(f"{pm2.AS_APP_USER} jlist")
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


def health_get(host: Any, address: str, port: int, instances: int) -> tuple[int, str]:
    """GET /health of every instance (health.EVERY_INSTANCE): the first answer that is not 200, else the
    last, as (code, body); code 0 when nothing answered."""
    out = host.run(f"{EVERY_INSTANCE}\nhealth_of_every_instance {shlex.quote(address)} {int(port)} "
                   f"{requests_for(instances)} body")
    code, _, body = out.stdout.rstrip("\n").partition("\t")
    return int(code) if code.isdigit() else 0, body


@pytest.mark.component("app")
def test_service_health(host: Any, ctx: dict[str, Any], service: str, expected: dict[str, Any]) -> None:
    port = ctx["services"][service]["port"]
    address = expected.get("service_addresses", {}).get(service, "127.0.0.1")
    code, body = health_get(host, address, port, ctx["services"][service]["instances"])
    assert code == 200, f"GET :{port}/health answered {code:03d} {body[:200]!r}" if code else \
        f"nothing answers GET :{port}/health"
    assert json.loads(body).get("status") == HEALTH_STATUS, f"{service} /health: {body[:200]}"


@pytest.mark.component("app")
@pytest.mark.upstreams
def test_gateway_routes_to_service(ctx: dict[str, Any], host: Any, service: str, run_stdin: Any,
                                   secrets: Any) -> None:
    port = ctx["services"]["api-gateway"]["port"]
    code, body = health_get(host, "127.0.0.1", port, ctx["services"]["api-gateway"]["instances"])
    assert body.startswith("{"), f"gateway GET :{port}/health answered {code:03d} {body[:100]!r}"
    check = json.loads(body).get("checks", {}).get(service)
    assert check == "ok", f"gateway :{port}/health says {service}: {check!r}"
    # A request with a valid token through /api/<service>: the service itself answers 200 (every service
    # lists what it offers at its bare prefix), not the gateway's 401 (token refused) or 502/503/504
    # (upstream down), nor a 404/500. The token travels on stdin (curl -H @-).
    token = hs256_token(secrets.get("app.jwt_secret").value)
    url = shlex.quote(f"http://127.0.0.1:{port}/api/{service}")
    result = run_stdin(f"curl -s --max-time 10 -o /dev/null -w '%{{http_code}}' -H @- {url}",
                       f"Authorization: Bearer {token}\n")
    status = result.stdout.strip()
    assert status == str(ROUTED_STATUS), \
        f"GET :{port}/api/{service} through the gateway answered {status or 'nothing'}, want {ROUTED_STATUS}"


@pytest.mark.component("app")
def test_env_file_private_to_psa(host: Any) -> None:
    env = host.file(ENV_FILE)
    assert env.exists, f"{ENV_FILE} is missing"
    assert (env.mode, env.user) == (0o600, APP_USER), \
        f"{ENV_FILE} is mode {env.mode:04o} owner {env.user}, want 0600 {APP_USER}"
