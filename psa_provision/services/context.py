"""HostContext: everything a component needs to plan one guest, read from disk once, then pure.

`build_context(...)` does the only local reads (extra CA files, the app bundle checksum); the
components then turn (ctx, facts) into Changes without touching anything.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..inventory import Inventory
from ..journal import migration_grants
from ..packaged import APP_BUNDLE
from ..phases import ContainerSpec, Phase, ServiceSpec
from ..secrets import Secrets
from .pgbackrest.keys import BackupKeys, keys_present, read_keys

BUNDLE_EXCLUDE: tuple[str, ...] = ("node_modules", "dist", ".git", "*.log", ".env", "coverage")


@dataclass(frozen=True)
class Bundle:
    """The app source shipped to /opt/psa-platform, and its content checksum."""

    path: Path
    checksum: str
    exclude: tuple[str, ...] = BUNDLE_EXCLUDE


@dataclass(frozen=True)
class HostContext:
    """One guest to plan: the site (inventory), the phase, this container, secrets, CA files, bundle."""

    inventory: Inventory
    phase: Phase
    container: ContainerSpec
    secrets: Secrets
    extra_cas: tuple[tuple[str, str], ...] = ()  # (guest file name, PEM text)
    bundle: Bundle | None = None
    ssh_public_key: str = ""
    # while `migrate` runs (journal.migration_grants): old app containers still using this phase's
    # stores (a temporary pg_hba line each), and whether the new app container's PM2 apps stay stopped
    temporary_clients: tuple[str, ...] = ()
    hold_app: bool = False
    backup_keys: BackupKeys | None = None  # pgBackRest's SSH key pairs, when the phase has a backup container

    @property
    def host(self) -> str:
        return self.container.hostname

    @property
    def services(self) -> dict[str, ServiceSpec]:
        """The app services that run on this container."""
        return self.phase.services_on(self.container.vmid)

    def address_of(self, component: str) -> str:
        """Where `component` is reached from this container: 127.0.0.1 if local, else its container's IP."""
        if component in self.container.components:
            return "127.0.0.1"
        hosts = self.phase.with_component(component)
        if not hosts:
            raise InputError(f"phase {self.phase.name}: no container runs {component}, "
                             f"needed by {self.container.hostname}")
        return hosts[0].ip

    def listen_address(self) -> str:
        """Infrastructure services bind to 127.0.0.1 when only local apps use them, else the private IP."""
        return self.container.ip if self.client_addresses() else "127.0.0.1"

    def client_addresses(self) -> list[str]:
        """IPs of other containers of this phase that run the app (pg_hba / firewall clients)."""
        return sorted(c.ip for c in self.phase.containers
                      if c.vmid != self.container.vmid and "app" in c.components)


def bundle_checksum(root: Path, exclude: tuple[str, ...] = BUNDLE_EXCLUDE) -> str:
    """sha256 over (relative path, content) of every file under root, skipping `exclude` names/globs."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        if any(part == pat or Path(part).match(pat) for part in rel.parts for pat in exclude):
            continue
        digest.update(str(rel).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


@functools.cache
def _run_bundle_checksum(root: Path) -> str:
    """bundle_checksum, once per process: every app container of a run ships the same bundle."""
    return bundle_checksum(root)


def read_extra_cas(inv: Inventory) -> tuple[tuple[str, str], ...]:
    """The inventory's extra CA files as (psa-extra-N-NAME.crt, PEM) pairs."""
    out: list[tuple[str, str]] = []
    for i, path in enumerate(inv.packages.extra_ca_files):
        try:
            pem = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise InputError(f"{path}: cannot read CA certificate: {exc.strerror}",
                             hint="fix packages.extra_ca_files in the inventory") from None
        if "BEGIN CERTIFICATE" not in pem:
            raise InputError(f"{path}: not a PEM certificate", hint="give a PEM (.crt/.pem) file")
        stem = re.sub(r"[^A-Za-z0-9._-]+", "-", path.stem)  # a plain guest file name, whatever the local one
        out.append((f"psa-extra-{i}-{stem}.crt", pem))
    return tuple(out)


def build_context(inventory: Inventory, phase: Phase, container: ContainerSpec, secrets: Secrets, *,
                  bundle_dir: Path | None = APP_BUNDLE, ssh_public_key: str = "") -> HostContext:
    """Read the local inputs (CA files, bundle checksum) once and freeze them into a HostContext."""
    bundle = None
    if bundle_dir is not None and "app" in container.components:
        if not (bundle_dir / "package.json").is_file():
            raise InputError(f"{bundle_dir}: the app bundle is missing (no package.json)")
        bundle = Bundle(bundle_dir, _run_bundle_checksum(bundle_dir))
    cas = read_extra_cas(inventory)
    grants = migration_grants(inventory.path, phase.name)
    keys = None
    if {"pgbackrest", "backup"} & set(container.components) and phase.with_component("backup") and (
            keys_present(inventory.ssh.key_file)):  # site.load_site refuses a phase whose keys are missing
        keys = read_keys(inventory.ssh.key_file)
    return HostContext(inventory, phase, container, secrets, cas, bundle, ssh_public_key,
                       temporary_clients=tuple(str(ip) for ip in grants.get("clients", ())),
                       hold_app=bool(grants.get("hold_app")), backup_keys=keys)
