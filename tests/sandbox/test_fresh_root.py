"""The fresh-machine check (bench/fresh-root): `scripts/setup` then `pvesim preflight` in a clean Debian 12
root built with debootstrap. It fails when setup leaves out a package the sandbox needs (issue 11).

It needs no running sandbox and changes nothing of it: its root lives in /var/tmp/psa-fresh-root.
About 2-8 minutes (the debootstrap tarball is cached per day in /var/cache/psa-fresh-root); in a whole
sandbox run it starts with the first test and runs beside the others (conftest's fresh_root_run).
"""

from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import FreshRootRun


@pytest.mark.timeout(1800)
def test_setup_then_preflight_pass_on_a_fresh_debian_12_root(fresh_root_run: FreshRootRun) -> None:
    if os.geteuid() != 0 or shutil.which("debootstrap") is None:
        pytest.fail("the fresh-root check needs root and debootstrap (bash scripts/setup installs it)")
    code, output = fresh_root_run.finish(timeout=1700)
    tail = "\n".join(output.strip().splitlines()[-25:])
    assert code == 0, f"bench/fresh-root failed (exit {code}):\n{tail}"
    assert "PASS: scripts/setup then pvesim preflight passed" in output, tail
