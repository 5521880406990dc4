"""Test seams are shut unless PSA_TEST_HOOKS=1 AND the target is the sandbox (seams.py).

A kill or sabotage switch leaked into the environment of a run against a real Proxmox host must do
nothing, and the product must not even import psa_provision.testing then.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

from psa_provision import seams
from psa_provision.changes import Sensitive
from psa_provision.secrets import Secrets
from psa_provision.testing import sabotage

LOAD = ("from psa_provision.inventory import load_inventory\nfrom psa_provision import packaged, seams\n"
        "load_inventory(packaged.{inventory})\n")
STEP = "seams.kill_point('redis: install redis-server')\nprint('alive')\n"


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PSA_")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**clean, "PSA_KILL_AT": "redis: *", **env}, check=False)


def test_the_kill_switch_acts_for_the_sandbox_with_hooks_enabled() -> None:
    proc = _python(LOAD.format(inventory="SANDBOX_INVENTORY") + STEP, PSA_TEST_HOOKS="1")
    assert proc.returncode == -9 and "alive" not in proc.stdout, proc.stderr


def test_a_leaked_kill_switch_does_nothing_without_psa_test_hooks() -> None:
    proc = _python(LOAD.format(inventory="SANDBOX_INVENTORY") + STEP)
    assert proc.stdout.strip() == "alive", proc.stderr


def test_a_leaked_kill_switch_does_nothing_against_a_real_proxmox_host() -> None:
    """Hooks enabled, but the production inventory (pve1.example.internal) was loaded: shut for good,
    even after a sandbox inventory is loaded later in the same process."""
    code = (LOAD.format(inventory="PRODUCTION_INVENTORY") + "load_inventory(packaged.SANDBOX_INVENTORY)\n"
            + STEP + "import sys\nprint(any(m.startswith('psa_provision.testing') for m in sys.modules))\n")
    proc = _python(code, PSA_TEST_HOOKS="1")
    assert proc.stdout.split() == ["alive", "False"], proc.stderr


def test_a_product_run_does_not_import_the_testing_package() -> None:
    code = ("import sys\nimport psa_provision.cli, psa_provision.migration.run, psa_provision.apply\n"
            "print(sorted(m for m in sys.modules if m.startswith('psa_provision.testing')))\n")
    proc = _python(code, PSA_TEST_HOOKS="1")
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr


@pytest.mark.parametrize(("url", "loopback"), [
    ("https://127.0.0.1:8006", True), ("https://127.5.0.1", True), ("https://[::1]:8006", True),
    ("https://localhost:8006", True), ("https://10.0.20.1:8006", False),
    ("https://pve1.example.lan:8006", False),
    ("https://127.0.0.1.example.lan", False), ("https://localhost.example.lan:8006", False),
])
def test_only_a_loopback_api_counts_as_the_sandbox(url: str, loopback: bool) -> None:
    assert seams.is_loopback(url) is loopback


class Target:
    """Records what a sabotage would run on the migration's target container."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, Any]] = []

    def run(self, script: str, *, stdin: Sensitive | None = None, **_: Any) -> None:
        self.runs.append((script, stdin))


def test_sabotage_acts_only_with_the_gate_open_and_on_the_named_step(monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = Secrets({"redis.password": "pw-0123456789abcdef"})
    target, warned, stopped = Target(), [], []
    monkeypatch.setenv(sabotage.SABOTAGE_ENV, "redis")
    monkeypatch.delenv(seams.ENABLE_ENV, raising=False)
    monkeypatch.setattr(seams.GATE, "sandbox", True)
    seams.sabotage_store("redis", target, secrets, warned.append)  # type: ignore[arg-type]
    assert target.runs == [] and warned == []  # PSA_TEST_HOOKS unset
    monkeypatch.setenv(seams.ENABLE_ENV, "1")
    seams.sabotage_store("postgresql", target, secrets, warned.append)  # type: ignore[arg-type]
    seams.sabotage_service("redis", lambda: stopped.append(1), warned.append)
    assert target.runs == [] and stopped == [1]  # the switch names redis only
    seams.sabotage_store("redis", target, secrets, warned.append)  # type: ignore[arg-type]
    ((script, stdin),) = target.runs
    assert "redis-cli" in script and isinstance(stdin, Sensitive) and stdin.reveal() == "pw-0123456789abcdef"
    assert all("pw-0123" not in w for w in warned) and len(warned) == 2
