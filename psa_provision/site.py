"""What every command starts from: the Site (inventory, phase, secrets), and its SSH connections.

A Site is validated before any network call; connections to its containers pin host keys in the
tool's own known_hosts, next to the journal.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psa_provision.errors import InputError
from psa_provision.inventory import Inventory, load_inventory
from psa_provision.journal import state_dir
from psa_provision.phases import ContainerSpec, Phase, load_phase
from psa_provision.refusals import refuse_root_only
from psa_provision.secrets import Secrets, load_secrets
from psa_provision.services.pgbackrest.keys import read_keys
from psa_provision.services.redis.sentinel import refuse_unrewritable_password
from psa_provision.ssh import Connection, forget_host

MARKER = "psa-provision"


@dataclass
class Site:
    """What every command starts from: inventory, phase, secrets (validated, no network yet)."""

    inventory: Inventory
    inventory_path: Path
    phase: Phase
    secrets: Secrets
    ssh_public_key: str = ""

    @property
    def secret_values(self) -> list[str]:
        return self.secrets.values()


def load_site(inventory_path: Path, phase_name: str, *, need_secrets: bool = True) -> Site:
    """Validate inventory, phase file and secrets before any network call."""
    inv = load_inventory(inventory_path)
    phase = load_phase(phase_name, inv.phases_dir)
    refuse_root_only(inv, phase)
    secrets = load_secrets(inv.secrets_file) if need_secrets else Secrets({})
    pub = inv.ssh.public_key_file
    key = pub.read_text(encoding="utf-8").strip() if pub.is_file() else ""
    if need_secrets and not key:
        raise InputError(f"{pub}: SSH public key not found",
                         hint="run `psa-provision init` to create the key pair")
    if need_secrets:
        refuse_unrewritable_password(phase, secrets)
    if need_secrets and phase.with_component("backup"):
        read_keys(inv.ssh.key_file)  # InputError naming the missing pgBackRest key pair and `init`
    return Site(inv, Path(inventory_path), phase, secrets, key)


def known_hosts(inv: Inventory) -> Path | None:
    """The tool's own known_hosts (next to the journal): host keys are pinned after first use."""
    return state_dir(inv.path) / "known_hosts" if inv.path else None


def ssh_connection(inv: Inventory, spec: ContainerSpec) -> Connection:
    """An SSH connection to the container (lazy: opened by its first command)."""
    return Connection(spec.ip, inv.ssh.user, inv.ssh.key_file, inv.ssh.jump_host,
                      known_hosts=known_hosts(inv))


def forget_host_key(inv: Inventory, spec: ContainerSpec) -> None:
    """Drop the container's pinned host key (a new container has a new one)."""
    path = known_hosts(inv)
    if path is not None:
        forget_host(path, spec.ip)


def is_ours(config: dict[str, Any]) -> bool:
    """Created by psa-provision: our tag (or the marker in the description) is on it."""
    tags = str(config.get("tags", "")).replace(",", ";").split(";")
    return MARKER in tags or MARKER in str(config.get("description", ""))


def created_by(config: dict[str, Any]) -> str | None:
    """The phase whose `up` created the container: `description` says `psa-provision: <phase>` from
    its create on (planner.marked); None when it says no phase."""
    found = re.search(rf"{re.escape(MARKER)}: (\S+)", str(config.get("description", "")))
    return found.group(1) if found else None


@contextmanager
def connections(site: Site) -> Iterator[dict[str, Connection]]:
    """hostname -> connection for every container of the phase, all closed at the end."""
    conns = {c.hostname: ssh_connection(site.inventory, c) for c in site.phase.containers}
    try:
        yield conns
    finally:
        for conn in conns.values():
            conn.close()
