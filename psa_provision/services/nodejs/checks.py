"""Node.js's verify checks (seed: "Install Node.js 20"): node v20.x and pm2 on the PATH."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.mark.component("nodejs")
def test_nodejs_20_and_pm2_present(host: Any) -> None:
    version = host.run("node --version").stdout.strip()
    assert version.startswith("v20."), f"node --version is {version or '(no node)'!r}, want v20.x"
    pm2 = host.run("pm2 --version")
    assert pm2.rc == 0, "pm2 is not installed"
