"""`secrets show KEY`: one secret of the inventory's secrets file (the only command that prints one)."""

from __future__ import annotations

from pathlib import Path

from psa_provision.inventory import load_inventory
from psa_provision.secrets import load_secrets


def show(inventory: Path, key: str) -> str:
    """The secret's value, unwrapped for printing (e.g. key `app.admin_password`)."""
    inv = load_inventory(inventory)
    return load_secrets(inv.secrets_file).get(key).value
