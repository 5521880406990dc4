"""`psa-provision init`: inventory (from the sandbox template if absent), secrets (0600), SSH key pair.

No network. Existing secrets are never overwritten without `force`; missing keys are added.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from . import secrets as secrets_mod
from .errors import InputError
from .inventory import DEFAULT_INVENTORY, REPO_ROOT, load_inventory


@dataclass
class InitResult:
    """What init did, for the CLI to print (paths only, never values)."""

    inventory: Path
    created: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def _secrets(path: Path, force: bool, result: InitResult) -> None:
    fresh = secrets_mod.generate()
    if path.exists() and not force:
        current = secrets_mod.load_secrets(path).as_dict()
        missing = {k: v for k, v in fresh.items() if k not in current}
        if not missing:
            result.kept.append(f"secrets {path}")
            return
        secrets_mod.store(path, {**current, **missing})
        result.created.append(f"secrets {path} (added {', '.join(sorted(missing))})")
        return
    secrets_mod.store(path, fresh)
    result.created.append(f"secrets {path}")


def _ssh_key(key: Path, force: bool, result: InitResult) -> None:
    pub = key.with_name(key.name + ".pub")
    if key.exists() and pub.exists() and not force:
        result.kept.append(f"ssh key {key}")
        return
    if shutil.which("ssh-keygen") is None:
        raise InputError("ssh-keygen not found", hint="apt-get install openssh-client")
    key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key.unlink(missing_ok=True)
    pub.unlink(missing_ok=True)
    proc = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "psa-provision",
                           "-f", str(key)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise InputError(f"ssh-keygen failed for {key}: {proc.stderr.strip()}")
    key.chmod(0o600)
    result.created.append(f"ssh key {key}")


def init(inventory_path: Path = DEFAULT_INVENTORY, *, force: bool = False) -> InitResult:
    """Write what the inventory needs locally; idempotent (a second run keeps everything)."""
    inventory_path = Path(inventory_path)
    result = InitResult(inventory_path)
    if not inventory_path.exists():
        inventory_path.parent.mkdir(parents=True, exist_ok=True)
        text = DEFAULT_INVENTORY.read_text(encoding="utf-8")
        if inventory_path.resolve().parent != DEFAULT_INVENTORY.parent:
            # `../phases` is relative to inventories/; elsewhere point at this checkout's phases
            text = text.replace("phases_dir: ../phases", f"phases_dir: {REPO_ROOT / 'phases'}")
        inventory_path.write_text(text, encoding="utf-8")
        result.created.append(f"inventory {inventory_path} (copy of {DEFAULT_INVENTORY.name}: edit it)")
    else:
        result.kept.append(f"inventory {inventory_path}")
    inv = load_inventory(inventory_path)
    _secrets(inv.secrets_file, force, result)
    _ssh_key(inv.ssh.key_file, force, result)
    return result
