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
from contextlib import contextmanager
from pathlib import Path

import pytest

from psa_provision import privileges

from .conftest import LEAST_PRIVILEGE_TOKEN, PVESIM, admin_api, run_cli, sandbox_credentials, write_inventory

pytestmark = [pytest.mark.sandbox]


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    return write_inventory(tmp_path, sandbox_credentials())


def test_doctor_is_green_on_the_sandbox(inventory: Path) -> None:
    run = run_cli(inventory, "doctor", "phase0", "--output", "json", timeout=120)
    assert run.code == 0, run.output
    assert '"ready": true' in run.stdout


def test_doctor_names_an_api_fault_and_exits_1(inventory: Path) -> None:
    # only the token under test meets the fault, and only this test's rule is cleared
    owner = f"e2e-doctor-{uuid.uuid4().hex[:8]}"
    subprocess.run([str(PVESIM), "fault", "http-error", "--status", "500", "--path", r"/nodes/pve1/network",
                    "--count", "100", "--user", f"root@pam!{LEAST_PRIVILEGE_TOKEN}", "--owner", owner],
                   check=True, capture_output=True, timeout=60)
    try:
        run = run_cli(inventory, "doctor", "phase0", timeout=120)
    finally:
        subprocess.run([str(PVESIM), "fault", "clear", "--owner", owner], check=True, capture_output=True,
                       timeout=60)
    assert run.code == 1, run.output
    assert "bridges on pve1" in run.stdout and "500" in run.stdout


@contextmanager
def role_without(inventory: Path, tmp_path: Path, privilege: str) -> Iterator[Path]:
    """An inventory whose token holds the PSAProvision role minus `privilege`, on the README's paths."""
    px = admin_api()
    suffix = uuid.uuid4().hex[:8]
    role, token = f"PSAWithout{suffix}", f"doctor{suffix}"
    privs = [p for p in privileges.ROLE_PRIVILEGES if p != privilege]
    px.request("POST", "/access/roles", {"roleid": role, "privs": ",".join(privs)})
    made = px.request("POST", f"/access/users/root@pam/token/{token}", {"privsep": 1})
    full = f"root@pam!{token}"
    for grant in privileges.ROLE_GRANTS:
        px.request("PUT", "/access/acl", {"path": grant.path, "roles": role, "tokens": full,
                                          "propagate": int(grant.propagate)})
    secret = tmp_path / f"token-{suffix}"
    secret.write_text(str(made["value"]))
    secret.chmod(0o600)
    text = inventory.read_text()
    text = re.sub(r"(?m)^(\s*token_id:) .*$", rf"\1 {full}", text)
    text = re.sub(r"(?m)^(\s*token_secret_file:) .*$", rf"\1 {secret}", text)
    limited = tmp_path / f"without-{suffix}.yml"
    limited.write_text(text)
    try:
        yield limited
    finally:
        px.request("DELETE", f"/access/users/root@pam/token/{token}")
        px.request("DELETE", f"/access/roles/{role}")


def test_doctor_names_the_missing_privilege_and_its_path(inventory: Path, tmp_path: Path) -> None:
    with role_without(inventory, tmp_path, "VM.Snapshot") as restricted:
        run = run_cli(restricted, "doctor", "phase0", "--output", "json", timeout=120)
    assert run.code == 1, run.output
    assert "lacks VM.Snapshot on /vms/200" in run.stdout, run.stdout
    assert run.stdout.count("lacks ") == 1, run.stdout  # nothing else is missing


@pytest.mark.parametrize("privilege", privileges.ROLE_PRIVILEGES)
def test_each_privilege_of_the_role_is_needed_and_named(inventory: Path, tmp_path: Path,
                                                        privilege: str) -> None:
    """The README's role minus any one privilege: `doctor phase1` (every command's needs, the firewall
    of a multi-container phase included; phase 3 for the HA writes only an HA phase makes) exits 1
    naming that privilege on each path that needs it."""
    phase = "phase3" if privilege == privileges.HA_WRITE else "phase1"
    with role_without(inventory, tmp_path, privilege) as restricted:
        run = run_cli(restricted, "doctor", phase, "--output", "json", timeout=120)
    assert run.code == 1, run.output
    lacking = set(re.findall(r"lacks (\S+) on (/\S*?)[ \"(]", run.stdout))
    assert lacking and {priv for priv, _path in lacking} == {privilege}, run.stdout
