"""packages.npm_registry: pm2's install and the app's `npm ci` use it (sandbox: pvesim's caching proxy)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from test_planner import make_ctx

from psa_provision import inventory, planner
from psa_provision.changes import Command
from psa_provision.errors import InputError
from psa_provision.facts import GuestFacts
from psa_provision.packaged import PRODUCTION_INVENTORY, SANDBOX_INVENTORY


def npm_scripts(registry: str | None) -> list[str]:
    ctx = make_ctx()
    packages = ctx.inventory.packages.model_copy(update={"npm_registry": registry})
    ctx = dataclasses.replace(ctx, inventory=ctx.inventory.model_copy(update={"packages": packages}))
    changes = planner.plan_guest(ctx, GuestFacts()).actions
    return [c.script for c in changes
            if isinstance(c, Command) and ("npm ci" in c.script or "npm install" in c.script)]


def test_the_sandbox_points_npm_at_pvesims_proxy_and_both_npm_commands_use_it() -> None:
    assert inventory.load_inventory(SANDBOX_INVENTORY).packages.npm_registry == \
        "http://10.0.20.1:4873/"
    scripts = npm_scripts("http://10.0.20.1:4873/")
    assert len(scripts) == 2
    for script in scripts:
        assert "export npm_config_registry=http://10.0.20.1:4873/\n" in script
        assert "npm_config_update_notifier=false" in script
        assert script.index("npm_config_registry") < script.index("npm ")


def test_without_the_setting_npm_keeps_its_default_registry() -> None:
    example = inventory.load_inventory(PRODUCTION_INVENTORY)
    assert example.packages.npm_registry is None
    assert all("npm_config_registry" not in s for s in npm_scripts(None))


@pytest.mark.parametrize("bad", ["ftp://mirror/", "http://a b/", "http://x/'$(id)'", "registry.example"])
def test_a_registry_that_is_not_a_plain_http_url_is_refused(tmp_path: Path, bad: str) -> None:
    text = (SANDBOX_INVENTORY).read_text().replace(
        "npm_registry: http://10.0.20.1:4873/", f"npm_registry: \"{bad}\"")
    path = tmp_path / "sandbox.yml"
    path.write_text(text)
    with pytest.raises(InputError, match="npm_registry"):
        inventory.load_inventory(path)
