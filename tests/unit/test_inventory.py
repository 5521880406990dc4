"""Inventory models and loading: good files load, every bad file names file:line and what to write."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from psa_provision.errors import InputError
from psa_provision.inventory import Inventory, load_inventory
from psa_provision.packaged import INVENTORIES_DIR, PHASES_DIR, PRODUCTION_INVENTORY, SANDBOX_INVENTORY

CASES = Path(__file__).parent / "cases" / "inventory"


def test_sandbox_inventory_loads_and_resolves_relative_paths() -> None:
    inv = load_inventory(SANDBOX_INVENTORY)
    assert inv.proxmox.base_url == "https://127.0.0.1:8006"
    assert inv.proxmox.auth.kind == "token"
    assert inv.proxmox.tls.verifies and inv.proxmox.tls.ca_file == Path("/var/lib/pvesim/ca/ca.pem")
    assert inv.ssh.key_file == INVENTORIES_DIR / "keys" / "sandbox_ed25519"
    assert inv.secrets_file == INVENTORIES_DIR / "sandbox.secrets.yml"
    assert inv.phases_dir == PHASES_DIR
    assert inv.packages.nodejs.repo_url == "http://10.0.20.1:8080/node_20.x"
    assert inv.template_volid == "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"


def test_production_example_keeps_upstream_defaults() -> None:
    inv = load_inventory(PRODUCTION_INVENTORY)
    assert inv.network.nameserver == "10.0.10.1"
    assert inv.packages.nodejs.repo_url == "https://deb.nodesource.com/node_20.x"
    assert inv.packages.elasticsearch.key_url == "https://artifacts.elastic.co/GPG-KEY-elasticsearch"
    assert inv.proxmox.tls.fingerprint is not None
    assert inv.proxmox.auth.token_secret_env == "PSA_PVE_TOKEN_SECRET"


def test_token_secret_read_from_env_or_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    inv = load_inventory(PRODUCTION_INVENTORY)
    monkeypatch.delenv("PSA_PVE_TOKEN_SECRET", raising=False)
    with pytest.raises(InputError, match="PSA_PVE_TOKEN_SECRET is not set"):
        inv.proxmox.auth.secret()
    monkeypatch.setenv("PSA_PVE_TOKEN_SECRET", "s3cret")
    assert inv.proxmox.auth.secret() == "s3cret"


def test_defaults_for_optional_sections(tmp_path: Path) -> None:
    f = tmp_path / "inv.yml"
    f.write_text("proxmox: {host: pve, node: pve1, auth: {user: root@pam, password_file: pw}}\n"
                 "network: {bridge: vmbr20, gateway: 10.0.20.1, nameserver: 10.0.20.1}\n"
                 "template: debian-12-standard_12.7-1_amd64.tar.zst\n"
                 "ssh: {key_file: k}\nsecrets_file: s.yml\n")
    inv = load_inventory(f)
    assert isinstance(inv, Inventory)
    assert inv.proxmox.base_url == "https://pve:8006"
    assert inv.proxmox.auth.password_file == tmp_path / "pw"
    assert inv.storage.rootfs == "local-lvm" and inv.packages.proxy is None
    assert inv.packages.elasticsearch.repo_url == "https://artifacts.elastic.co/packages/8.x/apt"


BAD = sorted(CASES.glob("bad_*.yml"))


@pytest.mark.parametrize("case", BAD, ids=[p.stem for p in BAD])
def test_bad_inventory_names_file_and_line(case: Path) -> None:
    expect = re.match(r"# expect: (\d+): (.*)$", case.read_text().splitlines()[0])
    assert expect, f"{case} has no '# expect: LINE: TEXT' first line"
    with pytest.raises(InputError) as info:
        load_inventory(case)
    message = str(info.value)
    assert f"{case}:{expect.group(1)}: " in message, message
    assert expect.group(2) in message, message


def test_missing_file_is_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="file not found"):
        load_inventory(tmp_path / "nope.yml")
