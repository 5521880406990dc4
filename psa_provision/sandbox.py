"""A private working copy of the sandbox inventory, for tests and the benchmark running side by side.

Phase 0's container moves to another vmid (10.0.20.(vmid-100), its own hostname) in a copy of the phase
files, and the inventory copy points at that copy and at the sandbox's token file. Reads files only.
"""

from __future__ import annotations

import re
from pathlib import Path

from psa_provision.packaged import BACKUP_CONTAINER_EXAMPLE, PHASES_DIR, SANDBOX_INVENTORY

PHASE0_VMID = 200
BACKUP_VMID = 250


def private_phase0(text: str, vmid: int, hostname: str) -> str:
    """phase0.yml's text with container 200 as `vmid` at 10.0.20.(vmid-100), named `hostname`, and
    without the backup container 250 (private copies run side by side; one backup container each would
    collide) nor the archiving that needs it."""
    block = rf"(?ms)^  # The backup repository host.*?^  - vmid: {BACKUP_VMID}\n.*?(?=^\S|^  - )"
    text = re.sub(block, "", text)
    text = text.replace("postgresql, pgbackrest,", "postgresql,")
    text = re.sub(rf"\bvmid: {PHASE0_VMID}\b", f"vmid: {vmid}", text)
    text = re.sub(rf"\bcontainer: {PHASE0_VMID}\b", f"container: {vmid}", text)
    text = text.replace("10.0.20.100/24", f"10.0.20.{vmid - 100}/24")
    return text.replace("hostname: psa-all-in-one", f"hostname: {hostname}")


def with_backup_container(text: str) -> str:
    """A phase file's text with the opt-in backup container added as BACKUP_CONTAINER_EXAMPLE says: a
    second node like the first (unless the phase has one: phase 3 has pve2 already), pgbackrest after
    postgresql on every PostgreSQL container (phase 3: all three Patroni members), the container at the
    end of `containers:`."""
    example = BACKUP_CONTAINER_EXAMPLE.read_text()
    block = example[example.index("containers:\n") + len("containers:\n"):]
    node = re.search(r"(?m)^nodes:\n  (\S+): (.*)\n", text)
    postgresql = re.compile(r"components: \[base, postgresql(?=[,\]])")
    if node is None or not postgresql.search(text):
        raise ValueError("not a phase file with nodes: and a PostgreSQL container")
    if not re.search(r"(?m)^  pve2: ", text):
        text = text[:node.end()] + f"  pve2: {node[2]}\n" + text[node.end():]
    text = postgresql.sub("components: [base, postgresql, pgbackrest", text)
    end = re.compile(r"(?m)^(?!containers:)\S").search(text, text.index("\ncontainers:\n") + 1)
    at = end.start() if end else len(text)
    return text[:at] + block + text[at:]


def private_phases(dest: Path, vmid: int, hostname: str) -> Path:
    """dest/phases: the packaged phase files with phase 0's container 200 as `vmid` named `hostname`."""
    out = dest / "phases"
    out.mkdir(parents=True, exist_ok=True)
    for src in PHASES_DIR.glob("*.yml"):
        text = src.read_text()
        if src.name == "phase0.yml":
            text = private_phase0(text, vmid, hostname)
        (out / src.name).write_text(text)
    return out


def with_sandbox_token(text: str, creds: dict[str, object]) -> str:
    """An inventory's text with auth.token_secret_file set to the one `pvesim up` wrote (its credentials)."""
    return re.sub(r"(?m)^(\s*token_secret_file:) .*$", rf"\1 {creds['token_secret_file']}", text)


def write_inventory(dest: Path, phases_dir: Path, creds: dict[str, object]) -> Path:
    """dest/sandbox.yml: the packaged sandbox inventory, these phases, the token file `pvesim up` wrote."""
    text = SANDBOX_INVENTORY.read_text()
    text = re.sub(r"(?m)^phases_dir: .*$", f"phases_dir: {phases_dir}", text)
    text = with_sandbox_token(text, creds)
    dest.mkdir(parents=True, exist_ok=True)
    inventory = dest / "sandbox.yml"
    inventory.write_text(text)
    return inventory
