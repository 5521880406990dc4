"""A privileged container in a phase file converges (issue 16, point 3).

Proxmox keeps `unprivileged` in a container's config only when it is 1 (pve-container API2/LXC.pm
create_vm), so a privileged container's config has no such key; the tool reads the missing key as 0
instead of planning a recreate on every run. Creating a privileged container needs Sys.Modify on /,
which the README's role leaves out: this test uses the sandbox's administrator token, as an admin who
wants privileged containers would.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from psa_provision.packaged import SANDBOX_INVENTORY

from .conftest import admin_api, run_cli, sandbox_credentials

pytestmark = [pytest.mark.sandbox]

VMID = 292
PHASE = f"""name: phase0
description: one privileged container
nodes:
  pve1: {{cores: 32, memory_mb: 131072}}
containers:
  - vmid: {VMID}
    hostname: psa-privileged
    role: all-in-one
    node: pve1
    cores: 1
    memory_mb: 512
    swap_mb: 0
    rootfs_storage: local-lvm
    rootfs_gb: 4
    bridge: vmbr20
    ip_cidr: 10.0.20.{VMID - 100}/24
    gateway: 10.0.20.1
    unprivileged: false
    features: {{}}
    onboot: false
    components: [base]
    services: []
services: {{}}
"""


def test_a_privileged_container_converges(tmp_path: Path) -> None:
    (tmp_path / "phases").mkdir()
    (tmp_path / "phases" / "phase0.yml").write_text(PHASE)
    text = re.sub(r"(?m)^phases_dir: .*$", "phases_dir: phases", SANDBOX_INVENTORY.read_text())
    text = re.sub(r"(?m)^(\s*token_secret_file:) .*$", rf"\1 {sandbox_credentials()['token_secret_file']}",
                  text)
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(text)
    for args in (("init",), ("destroy", "phase0", "--yes")):
        run = run_cli(inventory, *args, timeout=600)
        assert run.code == 0, run.output
    try:
        first = run_cli(inventory, "up", "phase0", "--yes", timeout=1200)
        assert first.code == 0, first.output[-4000:]
        config = admin_api().get_container("pve1", VMID)
        assert config is not None and "unprivileged" not in config, config
        second = run_cli(inventory, "up", "phase0", "--yes", timeout=600)
        assert second.code == 0 and second.summary()[0] == 0, second.output[-4000:]
        assert "recreate" not in second.output
    finally:
        run_cli(inventory, "destroy", "phase0", "--yes", timeout=600)
