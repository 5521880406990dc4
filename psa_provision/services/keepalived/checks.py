"""keepalived's phase-3 verify check: the VIP is on exactly one load balancer of the pair (asked of every
member of the pair: `ip -o -4 addr show` over the run's SSH configuration)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from psa_provision.services.keepalived import vip
from psa_provision.suites.checks import remote_command


@pytest.mark.component("keepalived")
def test_keepalived_vip_on_exactly_one_load_balancer(host: Any, ctx: dict[str, Any],
                                                     expected: dict[str, Any]) -> None:
    want = expected.get("keepalived", {})
    assert want.get("vip") and want.get("pair"), "no load balancer pair in the verify context"
    ssh_config = Path(ctx["ssh_config"]) if ctx.get("ssh_config") else None
    outputs: dict[str, str] = {}
    for peer in want["pair"]:
        argv = remote_command(ssh_config, peer, vip.ADDRESSES)
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, f"`{vip.ADDRESSES}` on {peer} failed: {result.stderr.strip()[:200]}"
        outputs[peer] = result.stdout
    found = vip.problem(outputs, want["vip"])
    assert not found, found
