"""The proxmox adapter against the sandbox's real API: token and ticket auth, 401/403 sentences, TLS pinning
of the sandbox's certificate, a failed task with its log, and preflight's missing template."""

from __future__ import annotations

import hashlib
import ssl
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from psa_provision import proxmox
from psa_provision.errors import ProxmoxAuthError, ProxmoxError, TaskError

from .conftest import PVESIM, admin_api, run_cli, sandbox_credentials, write_inventory

pytestmark = pytest.mark.sandbox


@pytest.fixture(scope="module")
def creds() -> dict[str, Any]:
    return sandbox_credentials()


def settings(creds: dict[str, Any], **kw: Any) -> proxmox.ApiSettings:
    base: dict[str, Any] = {"host": str(creds["host"]), "port": int(creds["port"]), "user": "root@pam",
                            "token_name": "psa-provision", "token_secret": str(creds["token_secret"]),
                            "ca_file": str(creds["ca_file"]), "http_timeout": 10.0, "task_timeout": 120.0}
    base.update(kw)
    return proxmox.ApiSettings(**base)


def test_token_auth_with_the_sandbox_ca(creds: dict[str, Any]) -> None:
    client = proxmox.connect_settings(settings(creds))
    assert client.version().get("version")
    assert any(n.get("node") == "pve1" and n.get("status") == "online"
               for n in client.request("GET", "/nodes"))
    assert "vmbr20" in client.bridges("pve1")


def test_ticket_login_with_csrf_for_writes(creds: dict[str, Any]) -> None:
    client = proxmox.connect_settings(settings(creds, token_name=None, token_secret=None,
                                               password=str(creds["password"])))
    assert any(n.get("node") == "pve1" and n.get("status") == "online"
               for n in client.request("GET", "/nodes"))
    # a write needs the CSRF token proxmoxer sends with the ticket: a harmless one is a bad-param PUT
    with pytest.raises(ProxmoxError, match="PUT /nodes/pve1/lxc/999999/config failed"):
        client.perform(proxmox.Write("config", "pve1", 999999, {"cores": 1}))


def test_wrong_password_is_one_sentence(creds: dict[str, Any]) -> None:
    with pytest.raises(ProxmoxAuthError, match="rejected the login of root@pam"):
        proxmox.connect_settings(settings(creds, token_name=None, token_secret=None, password="wrong"))


def test_wrong_token_secret_is_401(creds: dict[str, Any]) -> None:
    with pytest.raises(ProxmoxAuthError, match=r"rejected the credentials of root@pam!psa-provision \(401"):
        proxmox.connect_settings(settings(creds, token_secret="00000000-0000-0000-0000-000000000000"))


def test_missing_privilege_is_named(creds: dict[str, Any]) -> None:
    client = proxmox.connect_settings(settings(creds, token_name="restricted",
                                               token_secret=str(creds["restricted_token_secret"])))
    with pytest.raises(ProxmoxAuthError, match="lacks a privilege for POST /nodes/pve1/lxc") as info:
        client.perform(proxmox.Write("create", "pve1", 990,
                                     {"vmid": 990, "ostemplate": "local:vztmpl/x.tar.zst"}))
    assert "VM.Allocate" in info.value.message


def sandbox_fingerprint(creds: dict[str, Any]) -> str:
    pem = ssl.get_server_certificate((str(creds["host"]), int(creds["port"])))
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


def test_pinned_fingerprint_of_the_sandbox(creds: dict[str, Any]) -> None:
    pin = proxmox.pretty_fingerprint(sandbox_fingerprint(creds))
    client = proxmox.connect_settings(settings(creds, ca_file=None, fingerprint=pin))
    assert any(n.get("node") == "pve1" and n.get("status") == "online"
               for n in client.request("GET", "/nodes"))
    with pytest.raises(ProxmoxError, match=f"the server presents {pin}"):
        proxmox.connect_settings(settings(creds, ca_file=None, fingerprint="AB:" * 31 + "AB"))


def test_system_trust_store_rejects_the_sandbox_ca(creds: dict[str, Any]) -> None:
    with pytest.raises(ProxmoxError, match=r"TLS verification of https://127\.0\.0\.1:8006 failed"):
        proxmox.connect_settings(settings(creds, ca_file=None))


@pytest.fixture
def own_token() -> Iterator[tuple[str, str]]:
    """(name, secret) of a root@pam token made for one test (privsep 0: root's privileges), removed
    afterwards: a fault scoped to it reaches no other run sharing the sandbox's tokens."""
    px = admin_api()
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    made = px.request("POST", f"/access/users/root@pam/token/{name}", {"privsep": 0})
    yield name, str(made["value"])
    px.request("DELETE", f"/access/users/root@pam/token/{name}")


@pytest.fixture
def failing_download(own_token: tuple[str, str]) -> Iterator[tuple[str, str]]:
    """Downloads by `own_token` fail; only this fixture's rule is cleared afterwards."""
    owner = f"e2e-download-{own_token[0]}"
    subprocess.run([str(PVESIM), "fault", "task-fail", "--type", "download", "--message",
                    "injected: mirror unreachable", "--user", f"root@pam!{own_token[0]}", "--owner", owner],
                   check=True, capture_output=True)
    yield own_token
    subprocess.run([str(PVESIM), "fault", "clear", "--owner", owner], check=True, capture_output=True)


def test_failed_task_reports_its_log(creds: dict[str, Any], failing_download: tuple[str, str]) -> None:
    name, secret = failing_download
    client = proxmox.connect_settings(settings(creds, token_name=name, token_secret=secret))
    template = client.available_templates("pve1")[0]
    with pytest.raises(TaskError) as info:
        client.download_template("pve1", "local", template)
    assert "download on pve1 failed: injected: mirror unreachable" in info.value.message
    assert "TASK ERROR: injected: mirror unreachable" in info.value.message
    assert (info.value.hint or "").startswith("task id UPID:pve1:")


def test_calls_are_counted(creds: dict[str, Any]) -> None:
    client = proxmox.connect_settings(settings(creds))
    client.request("GET", "/nodes")
    client.templates("pve1", "local")
    assert client.counter.reads == 3 and client.counter.writes == 0


def test_missing_template_is_one_sentence_before_any_write(tmp_path: Path, creds: dict[str, Any]) -> None:
    inventory = write_inventory(tmp_path, creds)
    text = inventory.read_text().replace("template: debian-12-standard_12.7-1_amd64.tar.zst",
                                         "template: debian-99-nonexistent_1.0-1_amd64.tar.zst")
    inventory.write_text(text)
    assert run_cli(inventory, "init", timeout=120).code == 0
    for command in (("plan", "phase0"), ("up", "phase0", "--yes")):
        run = run_cli(inventory, *command, timeout=300)
        assert run.code == 1, run.output
        assert "error: template debian-99-nonexistent_1.0-1_amd64.tar.zst is neither on pve1:local " \
               "nor downloadable (aplinfo)" in run.stderr
        assert "Traceback" not in run.output
