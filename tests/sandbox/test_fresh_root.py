"""The fresh-machine check (bench/fresh-root): `scripts/setup` then `pvesim preflight` in a clean Debian 12
root built with debootstrap. It fails when setup leaves out a package the sandbox needs (issue 11).

It needs no running sandbox and changes nothing of it: its root lives in /var/tmp/psa-fresh-root.
About 5-8 minutes (the debootstrap tarball is cached per day in /var/cache/psa-fresh-root).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(1800)
def test_setup_then_preflight_pass_on_a_fresh_debian_12_root() -> None:
    if os.geteuid() != 0 or shutil.which("debootstrap") is None:
        pytest.fail("the fresh-root check needs root and debootstrap (bash scripts/setup installs it)")
    run = subprocess.run([str(REPO / "bench" / "fresh-root")], capture_output=True, text=True,
                         timeout=1700, check=False)
    tail = "\n".join((run.stdout + run.stderr).strip().splitlines()[-25:])
    assert run.returncode == 0, f"bench/fresh-root failed (exit {run.returncode}):\n{tail}"
    assert "PASS: scripts/setup then pvesim preflight passed" in run.stdout, tail
