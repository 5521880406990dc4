"""user.cfg and token secrets in the state dir, in Proxmox's own formats, shared by API and CLI.

etc/pve/user.cfg follows AccessControl.pm parse_user_config/write_user_config (user:, token:,
group:, pool:, role:, acl: lines); etc/pve/priv/token.cfg holds `<tokenid> <secret>` lines as
PVE::TokenConfig does. The sandbox's first start writes its three root@pam tokens as ACL entries:
psa-provision (Administrator on /), readonly (PVEAuditor on /), restricted (a custom role on /).
"""

from __future__ import annotations

import fcntl
import os
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from pvesim.acl import ROOT, Pool, Token, User, UserConfig, normalize_path, split_list

T = TypeVar("T")

# The sandbox's least-privilege test role: everything but creating containers and downloading templates.
RESTRICTED_ROLE = "SandboxRestricted"
DEFAULT_TOKENS = {"psa-provision": "Administrator", "readonly": "PVEAuditor", "restricted": RESTRICTED_ROLE}


def _encode(text: str) -> str:
    """PVE::Tools::encode_text: `:` and other specials as %XX, so a comment cannot break a line."""
    return "".join(c if c.isalnum() or c in " .-_@!/" else f"%{ord(c):02X}" for c in text)


def _decode(text: str) -> str:
    return re.sub(r"%([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), text)


def parse(text: str) -> UserConfig:
    """parse_user_config: unknown or invalid lines are skipped, as PVE warns and skips them."""
    cfg = UserConfig(users={})
    acl_lines: list[list[str]] = []
    token_lines: list[list[str]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        kind, *data = [d.strip() for d in line.split(":")]
        data += [""] * 8
        if kind == "user":
            cfg.users[data[0]] = User(enable=data[1] not in ("", "0"), expire=int(data[2] or 0),
                                      firstname=_decode(data[3]), lastname=_decode(data[4]), email=data[5],
                                      comment=_decode(data[6]), keys=data[7])
        elif kind == "group":
            cfg.groups[data[0]] = set(split_list(data[1]))
        elif kind == "role":
            cfg.roles[data[0]] = frozenset(split_list(data[1]))
        elif kind == "pool":
            cfg.pools[data[0]] = Pool(_decode(data[1]), {int(v) for v in split_list(data[2]) if v.isdigit()},
                                      set(split_list(data[3])))
        elif kind == "token":
            token_lines.append(data)
        elif kind == "acl":
            acl_lines.append(data)
    cfg.users.setdefault(ROOT, User())
    for data in token_lines:  # a token whose user does not exist is ignored
        user, _, name = data[0].partition("!")
        if user in cfg.users and name:
            cfg.users[user].tokens[name] = Token(privsep=data[2] not in ("", "0"), expire=int(data[1] or 0),
                                                 comment=_decode(data[3]))
    for data in acl_lines:
        _parse_acl(cfg, data)
    return cfg


def _parse_acl(cfg: UserConfig, data: list[str]) -> None:
    """One `acl:<propagate>:<path>:<users,@groups,tokens>:<roles>:` line; unknown members skipped."""
    path = normalize_path(data[1])
    if path is None:
        return
    for role in split_list(data[3]):
        if cfg.role(role) is None:
            continue
        for ug in split_list(data[2]):
            if ug.startswith("@"):
                grantee = ("group", ug[1:])
            elif "!" in ug:
                if cfg.token(ug) is None:
                    continue
                grantee = ("token", ug)
            else:
                grantee = ("user", ug)
            cfg.acl.setdefault(path, {}).setdefault(grantee, {})[role] = data[0] not in ("", "0")


def dump(cfg: UserConfig) -> str:
    """write_user_config (root@pam's own ACL entries are implied and never written)."""
    out = []
    for name, u in sorted(cfg.users.items()):
        out.append(f"user:{name}:{int(u.enable)}:{u.expire}:{_encode(u.firstname)}:{_encode(u.lastname)}:"
                   f"{u.email}:{_encode(u.comment)}:{u.keys}:")
        for tname, t in sorted(u.tokens.items()):
            out.append(f"token:{name}!{tname}:{t.expire}:{int(t.privsep)}:{_encode(t.comment)}:")
    out.append("")
    out += [f"group:{g}:{','.join(sorted(m))}::" for g, m in sorted(cfg.groups.items())]
    out.append("")
    for p, d in sorted(cfg.pools.items()):
        vms, storage = ",".join(map(str, sorted(d.vms))), ",".join(sorted(d.storage))
        out.append(f"pool:{p}:{_encode(d.comment)}:{vms}:{storage}:")
    out.append("")
    out += [f"role:{r}:{','.join(sorted(privs))}:" for r, privs in sorted(cfg.roles.items())]
    out.append("")
    for path, grants in sorted(cfg.acl.items()):
        rows: dict[tuple[int, str], list[str]] = {}
        for (kind, ugid), granted in grants.items():
            if kind == "user" and ugid == ROOT:
                continue
            member = f"@{ugid}" if kind == "group" else ugid
            for flag in (0, 1):
                names = ",".join(sorted(r for r, p in granted.items() if int(p) == flag))
                if names:
                    rows.setdefault((flag, names), []).append(member)
        for (flag, names), members in sorted(rows.items()):
            out.append(f"acl:{flag}:{path}:{','.join(sorted(members))}:{names}:")
    return "\n".join(out) + "\n"


def default_config() -> UserConfig:
    """The sandbox's first user.cfg: root@pam with its three privilege-separated tokens on /."""
    cfg = UserConfig()
    cfg.roles[RESTRICTED_ROLE] = frozenset(p for p in cfg.role("Administrator") or ()
                                           if p not in ("VM.Allocate", "Datastore.AllocateTemplate"))
    for name, role in DEFAULT_TOKENS.items():
        cfg.users[ROOT].tokens[name] = Token()
        cfg.acl.setdefault("/", {})[("token", f"{ROOT}!{name}")] = {role: True}
    return cfg


class AclStore:
    """user.cfg and token.cfg under a lock file (PVE's lock_user_config)."""

    def __init__(self, etc: Path, default_secrets: Mapping[str, str] | None = None) -> None:
        self.user_cfg = etc / "user.cfg"
        self.token_cfg = etc / "priv" / "token.cfg"
        self._lock = etc / ".user.cfg.lock"
        self._defaults = {f"{ROOT}!{n}": s for n, s in (default_secrets or {}).items()}

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self._lock.parent.mkdir(parents=True, exist_ok=True)
        with self._lock.open("a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield

    def load(self) -> UserConfig:
        """The current config (the defaults until the first change is written)."""
        try:
            return parse(self.user_cfg.read_text())
        except FileNotFoundError:
            return default_config()

    def update(self, change: Callable[[UserConfig], T]) -> T:
        """Read, change and write user.cfg under the lock; what `change` returns is passed on."""
        with self._locked():
            cfg = self.load()
            result = change(cfg)
            _atomic(self.user_cfg, dump(cfg), 0o640)
            return result

    def secrets(self) -> dict[str, str]:
        """tokenid -> secret: the sandbox's own tokens, then those made through the API."""
        out = dict(self._defaults)
        try:
            for line in self.token_cfg.read_text().splitlines():
                tokenid, _, secret = line.strip().partition(" ")
                if secret:
                    out[tokenid] = secret
        except FileNotFoundError:
            pass
        return out

    def new_secret(self, tokenid: str) -> str:
        """PVE::TokenConfig::generate_token: a fresh UUID, stored next to the others."""
        secret = str(uuid.uuid4())
        with self._locked():
            self._write_secrets({**self._file_secrets(), tokenid: secret})
        return secret

    def drop_secret(self, tokenid: str) -> None:
        with self._locked():
            self._write_secrets({k: v for k, v in self._file_secrets().items() if k != tokenid})

    def _file_secrets(self) -> dict[str, str]:
        try:
            return dict(line.split(" ", 1) for line in self.token_cfg.read_text().splitlines() if " " in line)
        except FileNotFoundError:
            return {}

    def _write_secrets(self, secrets: Mapping[str, str]) -> None:
        _atomic(self.token_cfg, "".join(f"{k} {v}\n" for k, v in sorted(secrets.items())), 0o600)


def _atomic(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    tmp.replace(path)
