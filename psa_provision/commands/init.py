"""`psa-provision init [DIR]`: a ready project in DIR, nothing on the network, nothing overwritten.

DIR/inventory.yml (a copy of the packaged sandbox inventory, or of the annotated production example),
DIR/phases/ (copies of the packaged phase files, for the user to edit; the inventory's phases_dir points
at them), the secrets file (0600) and the SSH key pair the inventory names. An existing inventory is
kept as it is (its phases are its own); missing secrets are added to an existing secrets file.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from psa_provision import secrets as secrets_mod
from psa_provision.errors import InputError
from psa_provision.inventory import load_inventory
from psa_provision.packaged import PHASES_DIR, SANDBOX_INVENTORY
from psa_provision.services.pgbackrest.keys import KINDS, key_path

PHASES_SUBDIR = "phases"


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


def _phases(dest: Path, result: InitResult) -> None:
    """dest/*.yml: the packaged phase files, each copied only when absent."""
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    for src in sorted(PHASES_DIR.glob("*.yml")):
        target = dest / src.name
        if not target.exists():
            shutil.copyfile(src, target)
            copied.append(src.name)
    if copied:
        result.created.append(f"phases {dest} ({', '.join(copied)}: edit them)")
    else:
        result.kept.append(f"phases {dest}")


def _inventory(path: Path, template: Path, result: InitResult) -> None:
    """path: a copy of template whose phases_dir is the project's own phases/ next to it."""
    text = template.read_text(encoding="utf-8")
    text, n = re.subn(r"(?m)^phases_dir: .*$", f"phases_dir: {PHASES_SUBDIR}", text)
    if n == 0:
        text += f"phases_dir: {PHASES_SUBDIR}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    result.created.append(f"inventory {path} (copy of {template.name}: edit it)")
    _phases(path.parent / PHASES_SUBDIR, result)


def init(inventory_path: Path, *, template: Path = SANDBOX_INVENTORY, force: bool = False) -> InitResult:
    """Write what the inventory needs locally; idempotent (a second run keeps everything).

    An absent inventory is written from `template` (packaged sandbox.yml or production.example.yml)
    with the phase files copied next to it; `force` regenerates secrets and key, never the inventory.
    """
    inventory_path = Path(inventory_path)
    result = InitResult(inventory_path)
    if not inventory_path.exists():
        _inventory(inventory_path, template, result)
    else:
        result.kept.append(f"inventory {inventory_path}")
    inv = load_inventory(inventory_path)
    _secrets(inv.secrets_file, force, result)
    _ssh_key(inv.ssh.key_file, force, result)
    for kind in KINDS:  # pgBackRest's SSH between a database and the backup repository host
        _ssh_key(key_path(inv.ssh.key_file, kind), force, result)
    return result
