"""A second npm install of pm2 and the app's dependencies downloads nothing from the internet: npm on the
guest goes to pvesim's caching registry (inventory packages.npm_registry) and every package it needs is
already in that cache. The proxy counts upstream fetches per client address (pvesim status: npm_proxy).

Each install starts with an empty npm cache in a temp dir (as a fresh guest would); the first one warms
the proxy in case this session's guest was provisioned before it, the second must fetch nothing upstream.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from psa_provision.services import app as app_service
from psa_provision.services.nodejs.component import PM2_VERSION
from pvesim import npmproxy
from pvesim.paths import StateDir

from .conftest import Site

pytestmark = [pytest.mark.sandbox, pytest.mark.phase0]

STATE = StateDir(Path(os.environ.get("PVESIM_STATE_DIR", "/var/lib/pvesim")))
INSTALL = f"""set -euo pipefail
work=$(mktemp -d /tmp/npm-cache-test.XXXXXX)
trap 'rm -rf "$work"' EXIT
export HOME="$work" npm_config_cache="$work/cache" npm_config_update_notifier=false
export npm_config_registry="$REGISTRY" no_proxy="$NO_PROXY" NO_PROXY="$NO_PROXY"
npm install -g --no-fund --no-audit --prefix "$work/global" pm2@{PM2_VERSION} >/dev/null
mkdir "$work/app"
tar -C {app_service.APP_DIR} --exclude=node_modules --exclude=dist -cf - \\
  package.json package-lock.json services shared | tar -C "$work/app" -xf -
cd "$work/app" && npm ci --no-fund --no-audit --ignore-scripts >/dev/null
find "$work/cache/_cacache/content-v2" -type f | wc -l
"""


def counters(ip: str) -> dict[str, Any]:
    clients: dict[str, dict[str, Any]] = npmproxy.read_stats(STATE)["clients"]
    return dict(clients.get(ip, dict.fromkeys(npmproxy.COUNTERS, 0)))


def test_a_second_install_fetches_nothing_from_the_registry(phase0: Site) -> None:
    registry = phase0.inventory.packages.npm_registry
    assert registry, "the sandbox inventory sets packages.npm_registry (pvesim's npm proxy)"
    assert npmproxy.status(STATE)["running"], "pvesim's npm proxy is not running: pvesim up"
    ip = phase0.container.ip
    env = f"export REGISTRY={registry} NO_PROXY={','.join(phase0.inventory.packages.no_proxy)}\n"
    guest = phase0.ssh()
    try:
        start = counters(ip)
        guest.run(env + INSTALL, timeout=900)
        warm = counters(ip)
        cached = int(guest.run(env + INSTALL, timeout=900).stdout.split()[-1])
    finally:
        guest.close()
    end = counters(ip)
    assert cached > 100, f"npm cached only {cached} objects: did it install through the proxy?"
    assert end["requests"] - warm["requests"] >= cached, (warm, end)
    assert end["upstream_fetches"] == warm["upstream_fetches"], (
        f"the second install fetched {end['upstream_fetches'] - warm['upstream_fetches']} objects from "
        f"the upstream registry (first one: {warm['upstream_fetches'] - start['upstream_fetches']})")
    assert end["upstream_bytes"] == warm["upstream_bytes"] and end["hits"] - warm["hits"] >= cached
