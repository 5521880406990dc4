"""One error tree for everything a user can cause or meet; the CLI prints these without a traceback.

Like pyinfra's exceptions, a subclass also inherits the matching builtin where one fits, so
`except ValueError` in library code still works.
"""

from __future__ import annotations


class ProvisionError(Exception):
    """Base of every error psa-provision reports to the user (exit 1, one clear message)."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  -> {self.hint}"


class InputError(ProvisionError, ValueError):
    """An inventory, phase file or secrets file is invalid; message carries file:line."""


class ProxmoxError(ProvisionError):
    """The Proxmox API refused, failed, or a task ended in error."""


class ProxmoxAuthError(ProxmoxError, PermissionError):
    """Wrong token/password, or a privilege the token lacks."""


class TaskError(ProxmoxError):
    """A Proxmox task (UPID) ended with an exitstatus other than OK / WARNINGS."""


class GuestError(ProvisionError):
    """A command inside a guest failed (SSH reachable, command non-zero)."""


class ConnectionFailed(ProvisionError, ConnectionError):
    """SSH or API not reachable within the deadline."""


class RenderError(ProvisionError):
    """A template failed to render (names template file and line)."""


class LockHeld(ProvisionError):
    """Another run holds the phase lock."""
