"""Authentication and permission checks as PVE does them: tickets, CSRF tokens, API tokens, schema checks.

Ticket: `PVE:root@pam:<HEX time>::<signature>` (PVE signs with RSA; we sign with HMAC-SHA256
and a key in the state dir, same shape for clients). CSRFPreventionToken: `<HEX time>:<sig>`.
API tokens: `Authorization: PVEAPIToken=root@pam!name=<uuid>`. Privilege checks evaluate the
schema's `permissions` (["perm", "/vms/{vmid}", [privs], "any", 1], and/or, perm-modify, userid-*)
against the ACL model in acl.py.
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

from pvesim import acl
from pvesim.acl import AclError, PermissionDenied, UserConfig, normalize_path
from pvesim.acl_store import DEFAULT_TOKENS

USER = "root@pam"
TICKET_LIFETIME = 7200  # seconds, PVE's 2 h
TOKENS = tuple(DEFAULT_TOKENS)


class AuthError(Exception):
    """401: the caller is not authenticated (message as PVE words it)."""


@dataclass(frozen=True)
class Identity:
    """Who is calling: user and token name (None for a ticket); privileges come from the ACLs."""

    user: str
    token: str | None
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
        "tokens": {name: str(uuid.uuid4()) for name in DEFAULT_TOKENS},
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

    @property
    def default_tokens(self) -> dict[str, str]:
        """The sandbox's own root@pam token secrets (name -> secret)."""
        return dict(self._tokens)

    def check_api_token(self, header: str, cfg: UserConfig, secrets_: Mapping[str, str]) -> Identity:
        """Identity from `PVEAPIToken=user@realm!name=secret` (AccessControl.pm verify_token: the token
        must exist in user.cfg, its user be enabled, neither expired); AuthError otherwise."""
        value = header.split("=", 1)[1] if "=" in header else ""
        tokenid, _, secret = value.partition("=")
        user, _, name = tokenid.partition("!")
        expected = secrets_.get(tokenid)
        token = cfg.token(tokenid)
        owner = cfg.users.get(user)
        if expected is None or token is None or owner is None or not owner.enable:
            raise AuthError("authentication failure")
        now = time.time()
        if (token.expire and token.expire < now) or (owner.expire and owner.expire < now):
            raise AuthError("authentication failure")
        if not hmac.compare_digest(expected, secret.strip()):
            raise AuthError("authentication failure")
        return Identity(user, name, via_ticket=False)

    def ticket_identity(self, user: str) -> Identity:
        """A user logged in with a ticket (only root@pam has a password in the sandbox)."""
        return Identity(user, None, via_ticket=True)


def _fill(path: str, params: Mapping[str, Any]) -> str:
    """`/vms/{vmid}` -> `/vms/200` from the request parameters."""
    for k, v in params.items():
        path = path.replace("{" + k + "}", str(v))
    return path


def check_permission(cfg: UserConfig, identity: Identity, perms: Mapping[str, Any] | None,
                     params: Mapping[str, str]) -> None:
    """RPCEnvironment.pm check_api2_permissions: root@pam passes everything; `user: all` anyone
    authenticated; otherwise the schema's `check` expression decides (PermissionDenied if not)."""
    if identity.name == USER:
        return
    if not perms:
        raise PermissionDenied("user != root@pam")
    if perms.get("user") == "all":
        return
    if perms.get("check"):
        _exec_check(cfg, identity.name, list(perms["check"]), params, noerr=False)
        return
    raise PermissionDenied()


def _options(items: Sequence[Any]) -> dict[str, Any]:
    return {str(items[i]): items[i + 1] for i in range(0, len(items) - 1, 2)}


def _exec_check(cfg: UserConfig, authid: str, check: list[Any], params: Mapping[str, str],
                noerr: bool) -> bool:
    """RPCEnvironment.pm exec_api2_perm_check: perm, and, or, perm-modify, userid-param, userid-group."""
    test = check[0]
    if test == "and":
        return all(_exec_check(cfg, authid, list(sub), params, noerr=False) for sub in check[1:])
    if test == "or":
        if any(_exec_check(cfg, authid, list(sub), params, noerr=True) for sub in check[1:]):
            return True
        if noerr:
            return False
        raise PermissionDenied()
    if test == "perm":
        options = _options(check[3:])
        required = options.get("require_param")
        if required and required not in params:
            if noerr:
                return False
            raise PermissionDenied()
        target = normalize_path(_fill(str(check[1]), params)) or str(check[1])
        return acl.check(cfg, authid, target, check[2], any_=bool(options.get("any")), noerr=noerr)
    if test == "perm-modify":
        path = normalize_path(_fill(str(check[1]), params))
        return path is not None and acl.check_perm_modify(cfg, authid, path, noerr=noerr)
    if test == "userid-param":
        return _userid_param(cfg, authid, str(check[1]), params.get("userid", ""), noerr)
    if test == "userid-group":
        return _userid_group(cfg, authid, list(check[1]), _options(check[2:]), params, noerr)
    raise PermissionDenied()


def _userid_param(cfg: UserConfig, authid: str, subtest: str, userid: str, noerr: bool) -> bool:
    if subtest == "self":
        if userid in cfg.users and authid == userid:
            return True
        if noerr:
            return False
        raise PermissionDenied()
    realm = userid.rpartition("@")[2]
    return acl.check(cfg, authid, f"/access/realm/{realm}", ["Realm.AllocateUser"], noerr=noerr)


def _userid_group(cfg: UserConfig, authid: str, privs: list[str], options: Mapping[str, Any],
                  params: Mapping[str, str], noerr: bool) -> bool:
    """Privileges on /access/groups, or on a group the user belongs to (and on every group passed)."""
    userid = params.get("userid", "")
    check_existing = options.get("groups_param") != "create"
    if check_existing and userid not in cfg.users:
        if noerr:
            return False
        raise AclError(f"no such user ('{userid}')")
    if acl.check(cfg, authid, "/access/groups", privs, any_=True, noerr=True):
        return True
    allowed = {g for g in cfg.groups if acl.check(cfg, authid, f"/access/groups/{g}", privs, any_=True,
                                                   noerr=True)}
    if options.get("groups_param"):
        wanted = acl.split_list(params.get("groups", ""))
        if not wanted:
            raise PermissionDenied(f"/access/groups, {'|'.join(privs)}")
        for group in wanted:
            if group not in allowed:
                raise PermissionDenied(f"/access/groups/{group}, {'|'.join(privs)}")
    if check_existing and not any(userid in cfg.groups[g] for g in allowed):
        if noerr:
            return False
        raise PermissionDenied()
    return True


def require(cfg: UserConfig, identity: Identity, path: str, *privs: str, any_: bool = False) -> None:
    """A check made inside an endpoint, as PVE's code calls $rpcenv->check (e.g. VM.Allocate at create)."""
    acl.check(cfg, identity.name, path, privs, any_=any_)
