"""Authentication and permissions as PVE does them: tickets, CSRF tokens, API tokens, privileges.

Ticket: `PVE:root@pam:<HEX time>::<signature>` (PVE signs with RSA; we sign with HMAC-SHA256
and a key in the state dir, same shape for clients). CSRFPreventionToken: `<HEX time>:<sig>`.
API tokens: `Authorization: PVEAPIToken=root@pam!name=<uuid>`. Privilege checks follow the
schema's `permissions.check` (["perm", "/vms/{vmid}", [privs], "any", 1]).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

USER = "root@pam"
TICKET_LIFETIME = 7200  # seconds, PVE's 2 h

ALL_PRIVS = frozenset({
    "Datastore.Allocate", "Datastore.AllocateSpace", "Datastore.AllocateTemplate", "Datastore.Audit",
    "Group.Allocate", "Mapping.Audit", "Mapping.Modify", "Mapping.Use", "Permissions.Modify",
    "Pool.Allocate", "Pool.Audit", "Realm.Allocate", "Realm.AllocateUser", "SDN.Allocate", "SDN.Audit",
    "SDN.Use", "Sys.Audit", "Sys.Console", "Sys.Incoming", "Sys.Modify", "Sys.PowerMgmt", "Sys.Syslog",
    "User.Modify", "VM.Allocate", "VM.Audit", "VM.Backup", "VM.Clone", "VM.Config.CDROM",
    "VM.Config.CPU", "VM.Config.Cloudinit", "VM.Config.Disk", "VM.Config.HWType", "VM.Config.Memory",
    "VM.Config.Network", "VM.Config.Options", "VM.Console", "VM.GuestAgent.Audit", "VM.Migrate",
    "VM.PowerMgmt", "VM.Replicate", "VM.Snapshot", "VM.Snapshot.Rollback",
})
ROLES: dict[str, frozenset[str]] = {
    "Administrator": ALL_PRIVS,
    "PVEAuditor": frozenset(p for p in ALL_PRIVS if p.endswith(".Audit")),
    # least privilege for tests: everything but creating containers and downloading templates
    "PVESimRestricted": ALL_PRIVS - {"Datastore.AllocateTemplate", "VM.Allocate"},
}
TOKENS = {"psa-provision": "Administrator", "readonly": "PVEAuditor", "restricted": "PVESimRestricted"}


class AuthError(Exception):
    """401: the caller is not authenticated (message as PVE words it)."""


class PermissionDenied(Exception):
    """403: `Permission check failed (/vms/200, VM.Allocate)`."""


@dataclass(frozen=True)
class Identity:
    """Who is calling: user, token name (None for a ticket) and the privileges they hold."""

    user: str
    token: str | None
    privs: frozenset[str]
    via_ticket: bool

    @property
    def name(self) -> str:
        """`root@pam` or `root@pam!readonly`, as task UPIDs and logs show it."""
        return f"{self.user}!{self.token}" if self.token else self.user


def new_secrets() -> dict[str, Any]:
    """Fresh credentials: HMAC key, root password, one UUID secret per token."""
    return {
        "key": secrets.token_hex(32),
        "password": secrets.token_urlsafe(18),
        "tokens": {name: str(uuid.uuid4()) for name in TOKENS},
    }


class Auth:
    """Checks tickets, CSRF tokens, API tokens and privileges against the sandbox's secrets."""

    def __init__(self, secrets_: Mapping[str, Any], lifetime: int = TICKET_LIFETIME) -> None:
        self._key = bytes.fromhex(secrets_["key"])
        self._password = str(secrets_["password"])
        self._tokens: dict[str, str] = dict(secrets_["tokens"])
        self.lifetime = lifetime

    @classmethod
    def load(cls, path: Path, lifetime: int = TICKET_LIFETIME) -> Auth:
        """Load from a JSON secrets file (auth.json in the state dir)."""
        return cls(json.loads(path.read_text()), lifetime)

    def _sign(self, text: str, epoch: int = 0) -> str:
        mac = hmac.new(self._key, f"{epoch}:{text}".encode(), hashlib.sha256).digest()
        return base64.b64encode(mac).decode().rstrip("=")

    def make_ticket(self, user: str, now: float | None = None, epoch: int = 0) -> str:
        """A PVE-shaped ticket for `user`; `epoch` changes when all tickets are expired at once."""
        plain = f"PVE:{user}:{int(now if now is not None else time.time()):08X}"
        return f"{plain}::{self._sign(plain, epoch)}"

    def make_csrf(self, user: str, now: float | None = None) -> str:
        """The CSRFPreventionToken bound to `user`."""
        stamp = f"{int(now if now is not None else time.time()):08X}"
        return f"{stamp}:{self._sign(f'{stamp}:{user}')}"

    def login(self, username: str, password: str, realm: str | None = None, epoch: int = 0,
              lifetime: int | None = None) -> str:
        """Check a password (or a still-valid ticket, as PVE allows for renewal); returns the user."""
        user = username if "@" in username else f"{username}@{realm or 'pam'}"
        if user != USER:
            raise AuthError("authentication failure")
        if hmac.compare_digest(password.encode(), self._password.encode()):
            return user
        if password.startswith("PVE:"):
            try:
                if self.check_ticket(password, epoch=epoch, lifetime=lifetime) == user:
                    return user
            except AuthError:
                pass
        raise AuthError("authentication failure")

    def check_ticket(self, ticket: str, now: float | None = None, epoch: int = 0,
                     lifetime: int | None = None) -> str:
        """The user a ticket belongs to; AuthError if forged or expired."""
        parts = ticket.split(":")
        if len(parts) != 5 or parts[0] != "PVE" or parts[3] != "":
            raise AuthError("invalid PVE ticket")
        plain = ":".join(parts[:3])
        if not hmac.compare_digest(self._sign(plain, epoch), parts[4]):
            raise AuthError("invalid PVE ticket")
        issued = int(parts[2], 16)
        t = now if now is not None else time.time()
        if issued + (lifetime or self.lifetime) < t:
            raise AuthError("invalid PVE ticket")
        return parts[1]

    def check_csrf(self, token: str | None, user: str) -> None:
        """Raise AuthError unless the CSRF token was made for this user."""
        stamp, _, sig = (token or "").partition(":")
        if not token or not hmac.compare_digest(self._sign(f"{stamp}:{user}"), sig):
            raise AuthError("Permission denied - invalid csrf token")

    def check_api_token(self, header: str) -> Identity:
        """Identity from `PVEAPIToken=user@realm!name=secret`; AuthError if unknown/wrong."""
        value = header.split("=", 1)[1] if "=" in header else ""
        tokenid, _, secret = value.partition("=")
        user, _, name = tokenid.partition("!")
        expected = self._tokens.get(name)
        if user != USER or expected is None or not hmac.compare_digest(expected, secret.strip()):
            raise AuthError("authentication failure")
        return Identity(user, name, ROLES[TOKENS[name]], via_ticket=False)

    def ticket_identity(self, user: str) -> Identity:
        """root@pam logged in with a ticket holds every privilege."""
        return Identity(user, None, ALL_PRIVS, via_ticket=True)


def _fill(path: str, params: Mapping[str, Any]) -> str:
    """`/vms/{vmid}` -> `/vms/200` from the request parameters."""
    for k, v in params.items():
        path = path.replace("{" + k + "}", str(v))
    return path


def check_permission(identity: Identity, check: Sequence[Any] | None, params: Mapping[str, Any],
                     method: str) -> None:
    """Apply a schema `check` (["perm", path, [privs], "any", 1]); PermissionDenied if it fails.

    Check forms other than `perm` are granted to Administrator-level callers and, for reads, to
    everyone (the sandbox has one user; finer forms guard user management it does not serve).
    """
    if not check:
        return
    if check[0] == "perm" and len(check) >= 3:
        path, privs = _fill(str(check[1]), params), list(check[2])
        need_any = "any" in check[3:]
        held = [p for p in privs if p in identity.privs]
        if (need_any and held) or (not need_any and len(held) == len(privs)):
            return
        raise PermissionDenied(f"Permission check failed ({path}, {'|'.join(privs)})")
    if method == "GET" or identity.privs >= ALL_PRIVS:
        return
    raise PermissionDenied("Permission check failed (/, Sys.Modify)")


def require(identity: Identity, path: str, priv: str) -> None:
    """A check the schema only describes in prose (e.g. create needs VM.Allocate on /vms/<vmid>)."""
    if priv not in identity.privs:
        raise PermissionDenied(f"Permission check failed ({path}, {priv})")
