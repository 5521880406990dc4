"""`init`: writes inventory, secrets (0600) and an ed25519 key; a second run keeps everything."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import pytest

from psa_provision import secrets
from psa_provision.commands.init import init
from psa_provision.packaged import PHASES_DIR

pytestmark = pytest.mark.skipif(shutil.which("ssh-keygen") is None,
                                reason="ssh-keygen not installed (openssh-client)")


def test_init_creates_then_keeps(tmp_path: Path) -> None:
    inv = tmp_path / "site" / "sandbox.yml"
    first = init(inv)
    assert inv.is_file()
    from psa_provision.inventory import load_inventory

    assert load_inventory(inv).phases_dir == tmp_path / "site" / "phases"
    assert sorted(p.name for p in (tmp_path / "site" / "phases").iterdir()) == \
        sorted(p.name for p in PHASES_DIR.glob("*.yml"))
    key = tmp_path / "site" / "keys" / "sandbox_ed25519"
    sec = tmp_path / "site" / "sandbox.secrets.yml"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(sec.stat().st_mode) == 0o600
    assert key.with_name("sandbox_ed25519.pub").read_text().startswith("ssh-ed25519 ")
    assert len(first.created) == 6  # inventory, phases, secrets, key, pgBackRest's two key pairs
    before = secrets.load_secrets(sec).as_dict()
    key_before = key.read_bytes()

    second = init(inv)
    assert second.created == [] and len(second.kept) == 5  # an existing inventory keeps its phases
    assert secrets.load_secrets(sec).as_dict() == before
    assert key.read_bytes() == key_before

    init(inv, force=True)
    assert secrets.load_secrets(sec).as_dict() != before
    assert key.read_bytes() != key_before


def test_init_adds_only_missing_secrets(tmp_path: Path) -> None:
    inv = tmp_path / "sandbox.yml"
    init(inv)
    sec = tmp_path / "sandbox.secrets.yml"
    values = secrets.load_secrets(sec).as_dict()
    del values["app.admin_password"]
    secrets.store(sec, values)
    result = init(inv)
    after = secrets.load_secrets(sec).as_dict()
    assert {k: after[k] for k in values} == values
    assert "app.admin_password" in after
    assert any("added app.admin_password" in c for c in result.created)
