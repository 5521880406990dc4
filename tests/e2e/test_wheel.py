"""The tool as a user installs it: the wheel in a fresh venv outside the clone, run from an unrelated
directory against the sandbox (issue 11: "a wheel installed outside the clone provisions phase 0 from an
unrelated directory").

`init site` in a temporary directory, then, as a user edits their project, the inventory's token file is
the one `pvesim up` wrote; all commands run without -i (the project's ./inventory.yml).

- In CI: the project takes the session's secrets and SSH key (the same site's data, the wheel's code and
  package data), and `plan phase0` against the session's converged phase 0 must find nothing to change:
  every file the wheel renders, the app bundle's checksum included, is byte for byte what the clone
  rendered. `verify` (the suites shipped in the wheel, run by its pytest) and `status` pass.
- `beyond_ci` (a cold `up` more than CI's budget holds): the copied phase0.yml gets a private container
  (PSA_WHEEL_VMID, default 281, at 10.0.20.(vmid-100)) so it never meets container 200 of the phase-0
  session; `plan phase0`, `up phase0 --yes` from nothing, the gateway's /health, `verify`, `status` and
  `destroy phase0 --yes`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from psa_provision import sandbox
from psa_provision.inventory import load_inventory

from .conftest import UP_TIMEOUT, Run, Site, sandbox_credentials, wait_healthy

pytestmark = [pytest.mark.sandbox]

VMID = int(os.environ.get("PSA_WHEEL_VMID", "281"))
HOSTNAME = f"psa-wheel-{VMID}"
IP = f"10.0.20.{VMID - 100}"

Cli = Callable[..., Run]


def wheel_cli(installed_cli: Any) -> Cli:
    """The installed wheel's CLI in a subprocess, with none of this session's PSA_/Python environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PSA_", "PYTHON", "VIRTUAL_ENV"))}

    def cli(*args: str, cwd: Path, timeout: float = 600) -> Run:
        argv = [str(installed_cli.cli), *args]
        started = time.monotonic()
        proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, check=False)
        sys.stderr.write(f"\n[wheel] {' '.join(args)}: exit {proc.returncode} "
                         f"in {time.monotonic() - started:.0f} s\n")
        return Run(argv, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)

    return cli


def init_site(cli: Cli, where: Path) -> Path:
    """`init site` in `where`, the sandbox's token file in its inventory; the project's directory."""
    made = cli("init", "site", cwd=where)
    assert made.code == 0, made.output
    site = where / "site"
    inventory = site / "inventory.yml"
    inventory.write_text(sandbox.with_sandbox_token(inventory.read_text(), sandbox_credentials()))
    return site


def test_installed_wheel_finds_the_sessions_phase0_converged_from_an_unrelated_directory(
        installed_cli: Any, phase0: Site, tmp_path: Path) -> None:
    cli = wheel_cli(installed_cli)
    site = init_site(cli, tmp_path)
    mine, session = load_inventory(site / "inventory.yml"), phase0.inventory
    for src, dest in ((session.secrets_file, mine.secrets_file), (session.ssh.key_file, mine.ssh.key_file),
                      (session.ssh.public_key_file, mine.ssh.public_key_file)):
        shutil.copy2(src, dest)  # the session's secrets and key (0600 kept)
    spec = phase0.container
    plan = cli("plan", "phase0", cwd=site)
    assert plan.code == 0, plan.output[-4000:]  # exit 2: the wheel renders something the clone did not
    verified = cli("verify", "phase0", cwd=site)  # the suites shipped in the wheel, run by its pytest
    assert verified.code == 0 and " 0 failed" in verified.output, verified.output[-4000:]
    status = cli("status", "phase0", cwd=site)
    assert status.code == 0 and spec.hostname in status.output and "running" in status.output, status.output


@pytest.mark.beyond_ci  # a cold `up` of its own container: the test above checks the package data in CI
def test_installed_wheel_provisions_phase0_from_an_unrelated_directory(installed_cli: Any,
                                                                        tmp_path: Path) -> None:
    cli = wheel_cli(installed_cli)
    site = init_site(cli, tmp_path)
    phase0 = site / "phases" / "phase0.yml"
    phase0.write_text(sandbox.private_phase0(phase0.read_text(), VMID, HOSTNAME))
    assert f"vmid: {VMID}" in phase0.read_text() and f"{IP}/24" in phase0.read_text()

    try:
        plan = cli("plan", "phase0", cwd=site)
        assert plan.code == 2 and f"create container {VMID}" in plan.output, plan.output[-4000:]
        up = cli("up", "phase0", "--yes", cwd=site, timeout=UP_TIMEOUT)
        assert up.code == 0, up.output[-6000:]
        wait_healthy(IP)
        verified = cli("verify", "phase0", cwd=site)  # the suites shipped in the wheel, run by its pytest
        assert verified.code == 0 and " 0 failed" in verified.output, verified.output[-4000:]
        status = cli("status", "phase0", cwd=site)
        assert status.code == 0 and HOSTNAME in status.output and "running" in status.output, status.output
        again = cli("plan", "phase0", cwd=site)
        assert again.code == 0, again.output[-4000:]  # converged: the same package data, nothing to change
    finally:
        gone = cli("destroy", "phase0", "--yes", cwd=site)
    assert gone.code == 0 and "1 destroyed" in gone.output, gone.output
