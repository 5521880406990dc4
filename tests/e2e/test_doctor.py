"""`psa-provision doctor` against the sandbox: clean (exit 0), with an injected fault, and with a token
whose role lacks one privilege (exit 1, the privilege and its path named).

The restricted token is made through the API as an admin would with pveum: POST /access/roles,
POST /access/users/root@pam/token/<id> (privsep 1), PUT /access/acl on each path of privileges.py's
ROLE_GRANTS. Needs pvesim's ACL model (roles, tokens, paths, propagate).
"""

from __future__ import annotations

import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from psa_provision import privileges, proxmox
from psa_provision.inventory import load_inventory

from .conftest import PVESIM, run_cli, sandbox_credentials, write_inventory

pytestmark = [pytest.mark.sandbox]


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    return write_inventory(tmp_path, sandbox_credentials())


def admin(inventory: Path) -> proxmox.ProxmoxClient:
    return proxmox.connect(load_inventory(inventory))


def test_doctor_is_green_on_the_sandbox(inventory: Path) -> None:
    run = run_cli(inventory, "doctor", "phase0", "--output", "json", timeout=120)
    assert run.code == 0, run.output
    assert '"ready": true' in run.stdout


def test_doctor_names_an_api_fault_and_exits_1(inventory: Path) -> None:
    subprocess.run([str(PVESIM), "fault", "http-error", "--status", "500", "--path", r"/nodes/pve1/network",
                    "--count", "100"], check=True, capture_output=True, timeout=60)
    try:
        run = run_cli(inventory, "doctor", "phase0", timeout=120)
    finally:
        subprocess.run([str(PVESIM), "fault", "clear"], check=True, capture_output=True, timeout=60)
    assert run.code == 1, run.output
    assert "bridges on pve1" in run.stdout and "500" in run.stdout


@pytest.fixture
def restricted(inventory: Path, tmp_path: Path) -> Iterator[Path]:
    """An inventory whose token holds the PSAProvision role minus VM.Snapshot, on the README's paths."""
    px = admin(inventory)
    suffix = uuid.uuid4().hex[:8]
    role, token = f"PSANoSnap{suffix}", f"doctor{suffix}"
    privs = [p for p in privileges.ROLE_PRIVILEGES if p != "VM.Snapshot"]
    px.request("POST", "/access/roles", {"roleid": role, "privs": ",".join(privs)})
    made = px.request("POST", f"/access/users/root@pam/token/{token}", {"privsep": 1})
    full = f"root@pam!{token}"
    for grant in privileges.ROLE_GRANTS:
        px.request("PUT", "/access/acl", {"path": grant.path, "roles": role, "tokens": full,
                                          "propagate": int(grant.propagate)})
    secret = tmp_path / "restricted-token"
    secret.write_text(str(made["value"]))
    secret.chmod(0o600)
    text = inventory.read_text()
    text = re.sub(r"(?m)^(\s*token_id:) .*$", rf"\1 {full}", text)
    text = re.sub(r"(?m)^(\s*token_secret_file:) .*$", rf"\1 {secret}", text)
    limited = tmp_path / "restricted.yml"
    limited.write_text(text)
    try:
        yield limited
    finally:
        px.request("DELETE", f"/access/users/root@pam/token/{token}")
        px.request("DELETE", f"/access/roles/{role}")


def test_doctor_names_the_missing_privilege_and_its_path(restricted: Path) -> None:
    run = run_cli(restricted, "doctor", "phase0", "--output", "json", timeout=120)
    assert run.code == 1, run.output
    assert "lacks VM.Snapshot on /vms/200" in run.stdout, run.stdout
    assert run.stdout.count("lacks ") == 1, run.stdout  # nothing else is missing
