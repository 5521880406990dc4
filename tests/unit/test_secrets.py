"""Secrets: generated safe for every consumer, stored 0600 from the start, refused when readable by others."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

from psa_provision import secrets
from psa_provision.changes import MASK, mask
from psa_provision.errors import InputError


def test_generate_covers_every_key_with_safe_values() -> None:
    values = secrets.generate()
    assert set(values) == set(secrets.KEYS)
    assert len(values["app.jwt_secret"]) >= 32
    for key, value in values.items():
        if key == "keepalived.auth_pass":  # VRRP PASS authentication carries 8 characters
            assert re.fullmatch(r"[A-Za-z0-9]{8}", value), key
        elif key != "app.admin_email":
            assert re.fullmatch(r"[A-Za-z0-9]{24,}", value), key
    assert secrets.generate()["redis.password"] != values["redis.password"]


def test_store_is_0600_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "s.yml"
    values = secrets.generate()
    secrets.store(path, values)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = secrets.load_secrets(path)
    assert loaded.as_dict() == values
    assert loaded.get("redis.password").value == values["redis.password"]
    assert str(loaded.get("redis.password")) == MASK
    assert values["app.admin_email"] not in loaded.values()
    assert values["postgresql.app_password"] in loaded.values()


def test_store_never_leaves_a_readable_temp_file(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        secrets.store(tmp_path / "s.yml", secrets.generate())
    finally:
        os.umask(old)
    assert [p.name for p in tmp_path.iterdir()] == ["s.yml"]
    assert stat.S_IMODE((tmp_path / "s.yml").stat().st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_refuses_group_or_world_readable(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "s.yml"
    secrets.store(path, secrets.generate())
    path.chmod(mode)
    with pytest.raises(InputError, match="chmod 600"):
        secrets.load_secrets(path)


def test_missing_and_malformed(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"psa-provision init"):
        secrets.load_secrets(tmp_path / "absent.yml")
    bad = tmp_path / "bad.yml"
    bad.write_text("redis:\n  password: 12\n")
    bad.chmod(0o600)
    with pytest.raises(InputError, match=r"bad.yml:2: redis.password: expected a non-empty string"):
        secrets.load_secrets(bad)
    short = tmp_path / "short.yml"
    short.write_text("app:\n  jwt_secret: tooshort\n")
    short.chmod(0o600)
    with pytest.raises(InputError, match=r"short.yml:2: app.jwt_secret must be at least 32"):
        secrets.load_secrets(short)


def test_missing_key_names_init() -> None:
    with pytest.raises(InputError, match=r"secret 'redis\.password' is missing"):
        secrets.Secrets({}).get("redis.password")


def test_masking_uses_values() -> None:
    s = secrets.Secrets(secrets.generate())
    text = f"requirepass {s.get('redis.password').value}\n"
    assert mask(text, s.values()) == f"requirepass {MASK}\n"
