"""The product's only doors to psa_provision.testing: kill points, migration sabotage, command recording.

Each door is one call that returns at once unless test hooks are open in this process, which takes
both of:
- `PSA_TEST_HOOKS=1` in the environment (the test fixtures set it for the run), and
- a sandbox target: every inventory this process loaded names a loopback Proxmox API (pvesim on
  https://127.0.0.1:8006; `inventory.load_inventory` reports each one here).
Only then is psa_provision.testing imported and its own switches read (PSA_KILL_AT, PSA_KILL_DELAY,
PSA_MIGRATE_SABOTAGE, PSA_RECORD_COMMANDS). A switch left in the environment of a run against a real
Proxmox host does nothing: that API is not on loopback, so the doors stay shut.
"""

from __future__ import annotations

import ipaddress
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:  # types only: this module imports nothing of the package at run time
    from psa_provision.secrets import Secrets
    from psa_provision.ssh import Connection

ENABLE_ENV = "PSA_TEST_HOOKS"


def is_loopback(api_url: str) -> bool:
    """True for an API URL on this machine's loopback (`https://127.0.0.1:8006`, `[::1]`, localhost)."""
    host = urlsplit(api_url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Gate:
    """Whether test hooks may act: enabled by PSA_TEST_HOOKS=1, and only sandbox targets seen so far."""

    def __init__(self) -> None:
        self.sandbox: bool | None = None  # None: no inventory loaded yet (shut)
        self._lock = threading.Lock()

    def note(self, api_url: str) -> None:
        """Record a Proxmox API this process works on; one that is not loopback shuts the gate for good."""
        with self._lock:
            self.sandbox = self.sandbox is not False and is_loopback(api_url)

    def open(self) -> bool:
        return os.environ.get(ENABLE_ENV) == "1" and self.sandbox is True


GATE = Gate()


def note_target(api_url: str) -> None:
    """Called by inventory loading with the inventory's Proxmox API URL."""
    GATE.note(api_url)


def kill_point(step: str) -> None:
    """A step starts (`<component>: <summary>`, see apply.step_name): testing.kill may SIGKILL here."""
    if GATE.open():
        from psa_provision.testing import kill

        kill.kill_point(step)


def record_command(host: str, command: str, script: str) -> None:
    """A command line and script go to a guest: testing.record may append them to a file."""
    if GATE.open():
        from psa_provision.testing import record

        record.record_command(host, command, script)


def sabotage_store(store: str, target: Connection, secrets: Secrets, warn: Callable[[str], None]) -> None:
    """A store's data was moved to `target`, before verify: testing.sabotage may damage it there."""
    if GATE.open():
        from psa_provision.testing import sabotage

        sabotage.damage_store(store, target, secrets, warn)


def sabotage_service(service: str, stop: Callable[[], object], warn: Callable[[str], None]) -> None:
    """A service was started on its new container, before verify: testing.sabotage may `stop()` it."""
    if GATE.open():
        from psa_provision.testing import sabotage

        sabotage.stop_service(service, stop, warn)


def node_fault(action: str, node: str, owner: str) -> bool:
    """`drill ... node` on the sandbox: testing.nodefault runs `pvesim fault node-down|node-up NODE` (or
    releases what the drill's owner took down); False (nothing done) when the doors are shut: a real
    Proxmox stops the node's containers instead."""
    if GATE.open():
        from psa_provision.testing import nodefault

        return nodefault.node_fault(action, node, owner)
    return False
