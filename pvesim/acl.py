"""Proxmox VE's permission model: users, API tokens, roles, ACLs, pools, as pve-access-control has it.

Ported from src/PVE/AccessControl.pm (privilege groups and builtin roles from create_roles(),
roles() for ACL propagation, the user.cfg format of parse_user_config/write_user_config,
remove_vm_access) and src/PVE/RPCEnvironment.pm (permissions() with pool roles and privilege-
separated tokens intersected with their user, get_effective_permissions, check/check_any).
Pure: no files, no HTTP; the store (acl_store.py) reads and writes user.cfg.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

ROOT = "root@pam"

# AccessControl.pm $privgroups: per category the privileges of root, admin, user and audit level.
PRIVGROUPS: dict[str, dict[str, tuple[str, ...]]] = {
    "VM": {
        "root": (),
        "admin": ("VM.Config.Disk", "VM.Config.CPU", "VM.Config.Memory", "VM.Config.Network",
                  "VM.Config.HWType", "VM.Config.Options", "VM.Allocate", "VM.Clone",
                  "VM.GuestAgent.Unrestricted", "VM.Migrate", "VM.Replicate", "VM.Snapshot",
                  "VM.Snapshot.Rollback"),
        "user": ("VM.Config.CDROM", "VM.Config.Cloudinit", "VM.Console", "VM.Backup",
                 "VM.GuestAgent.FileRead", "VM.GuestAgent.FileSystemMgmt", "VM.GuestAgent.FileWrite",
                 "VM.PowerMgmt"),
        "audit": ("VM.Audit", "VM.GuestAgent.Audit"),
    },
    "Sys": {
        "root": ("Sys.PowerMgmt", "Sys.Modify", "Sys.Incoming", "Sys.AccessNetwork"),
        "admin": ("Sys.Console", "Sys.Syslog"),
        "user": (),
        "audit": ("Sys.Audit",),
    },
    "Datastore": {
        "root": (),
        "admin": ("Datastore.Allocate", "Datastore.AllocateTemplate"),
        "user": ("Datastore.AllocateSpace",),
        "audit": ("Datastore.Audit",),
    },
    "SDN": {"root": (), "admin": ("SDN.Allocate", "SDN.Audit"), "user": ("SDN.Use",),
            "audit": ("SDN.Audit",)},
    "User": {"root": ("Realm.Allocate",), "admin": ("User.Modify", "Group.Allocate", "Realm.AllocateUser"),
             "user": (), "audit": ()},
    "Pool": {"root": (), "admin": ("Pool.Allocate",), "user": ("Pool.Audit",), "audit": ("Pool.Audit",)},
    "Mapping": {"root": (), "admin": ("Mapping.Modify",), "user": ("Mapping.Use",),
                "audit": ("Mapping.Audit",)},
}


def _builtin_roles() -> dict[str, frozenset[str]]:
    """AccessControl.pm create_roles(): Administrator, NoAccess, PVEAdmin, PVE<Cat>Admin/User..."""
    valid = {"Permissions.Modify"}
    roles: dict[str, set[str]] = {"NoAccess": set(), "PVEAdmin": set(), "PVEAuditor": set()}
    for cat, groups in PRIVGROUPS.items():
        valid.update(*groups.values())
        managed = set(groups["admin"]) | set(groups["user"]) | set(groups["audit"])
        roles[f"PVE{cat}Admin"] = set(managed)
        roles["PVEAdmin"] |= managed
        if groups["user"]:
            roles[f"PVE{cat}User"] = set(groups["user"]) | set(groups["audit"])
        roles["PVEAuditor"] |= set(groups["audit"])
    roles["PVEAdmin"].discard("Mapping.Modify")  # only Administrator and PVEMappingAdmin have it
    roles["PVETemplateUser"] = {"VM.Clone", "VM.Audit"}
    roles["Administrator"] = valid
    return {name: frozenset(privs) for name, privs in roles.items()}


BUILTIN_ROLES = _builtin_roles()
VALID_PRIVS = BUILTIN_ROLES["Administrator"]


class AclError(Exception):
    """A request the model refuses (PVE dies with this text; the API answers 500 or 400)."""


class PermissionDenied(Exception):
    """403 `Permission check failed (/vms/200, VM.Allocate)` (PVE::Exception raise_perm_exc)."""

    def __init__(self, what: str = "") -> None:
        super().__init__(f"Permission check failed ({what})" if what else "Permission check failed")


@dataclass
class Token:
    privsep: bool = True
    expire: int = 0
    comment: str = ""


@dataclass
class User:
    enable: bool = True
    expire: int = 0
    firstname: str = ""
    lastname: str = ""
    email: str = ""
    comment: str = ""
    keys: str = ""
    tokens: dict[str, Token] = field(default_factory=dict)


@dataclass
class Pool:
    comment: str = ""
    vms: set[int] = field(default_factory=set)
    storage: set[str] = field(default_factory=set)


Grantee = tuple[str, str]  # ("user" | "group" | "token", "root@pam" | "admins" | "root@pam!t")


@dataclass
class UserConfig:
    """The content of /etc/pve/user.cfg (custom roles only in `roles`; builtin ones are implied)."""

    users: dict[str, User] = field(default_factory=lambda: {ROOT: User()})
    groups: dict[str, set[str]] = field(default_factory=dict)
    roles: dict[str, frozenset[str]] = field(default_factory=dict)
    acl: dict[str, dict[Grantee, dict[str, bool]]] = field(default_factory=dict)
    pools: dict[str, Pool] = field(default_factory=dict)

    def role(self, name: str) -> frozenset[str] | None:
        """Privileges of a role (builtin roles cannot be overridden)."""
        return BUILTIN_ROLES.get(name, self.roles.get(name))

    def token(self, tokenid: str) -> Token | None:
        user, _, name = tokenid.partition("!")
        u = self.users.get(user)
        return u.tokens.get(name) if u and name else None

    def pool_of(self, vmid: int) -> str | None:
        return next((p for p, d in sorted(self.pools.items()) if vmid in d.vms), None)


def split_list(text: str) -> list[str]:
    """PVE::Tools::split_list: comma, semicolon or whitespace separated."""
    return [x for x in re.split(r"[,;\s\0]+", text or "") if x]


def normalize_path(path: str) -> str | None:
    """AccessControl.pm normalize_path: `//vms/200/` -> `/vms/200`; None when invalid."""
    if not path:
        return None
    path = re.sub(r"/+", "/", path).rstrip("/") or "/"
    if not path.startswith("/"):
        path = "/" + path
    return path if re.fullmatch(r"[A-Za-z0-9.\-_/]+", path) else None


_ACL_PATH = re.compile(r"""(/|/access|/access/groups|/access/groups/[\w.\-]+|/access/realm
    |/access/realm/[\w.\-]+
    |/nodes|/nodes/[\w.\-]+|/pool|/pool/[\w.\-]+(?:/[\w.\-]+){0,2}|/sdn|/sdn/\w+|/sdn/\w+/[\w.\-]+
    |/sdn/zones/[\w.\-]+/[\w.\-]+|/sdn/zones/[\w.\-]+/[\w.\-]+/[1-9][0-9]{0,3}|/storage|/storage/[\w.\-]+
    |/vms|/vms/[1-9][0-9]{2,}|/mapping|/mapping/[\w.\-]+|/mapping/[\w.\-]+/[\w.\-]+)""", re.X)


def check_path(path: str) -> bool:
    """AccessControl.pm check_path: the paths an ACL may be set on."""
    return _ACL_PATH.fullmatch(path) is not None


def _prefixes(path: str) -> list[str]:
    """`/vms/200` -> ["/", "/vms", "/vms/200"]: the ACL tree nodes roles() walks."""
    parts = [p for p in path.split("/") if p]
    return ["/"] + ["/" + "/".join(parts[:i]) for i in range(1, len(parts) + 1)]


def roles(cfg: UserConfig, authid: str, path: str) -> dict[str, bool]:
    """AccessControl.pm roles(): role -> propagate flag on `path` (no pools, no privsep filtering).

    Walking from `/` down, the deepest node with a grant that applies replaces everything above it;
    a grant applies at its own node, and below only when propagated. At one node token grants win
    over user grants, which win over group grants. NoAccess anywhere in the result wins alone.
    """
    if authid == ROOT:
        return {"Administrator": True}
    if "!" in authid:
        token = cfg.token(authid)
        if token is None:
            return {}
        if not token.privsep:
            return roles(cfg, authid.partition("!")[0], path)
    result: dict[str, bool] = {}
    nodes = _prefixes(path)
    for i, node_path in enumerate(nodes):
        final = i == len(nodes) - 1
        node = cfg.acl.get(node_path, {})
        for kind in ("token", "user"):
            new = {r: p for r, p in node.get((kind, authid), {}).items() if final or p}
            if new:
                result = new
                break
        else:
            new = {}
            for (kind, gid), granted in node.items():
                if kind == "group" and authid in cfg.groups.get(gid, set()):
                    new.update({r: p for r, p in granted.items() if final or p})
            if new:
                result = new
    if "NoAccess" in result:
        return {"NoAccess": result["NoAccess"]}
    return result


def _pool_roles(cfg: UserConfig, authid: str, path: str) -> dict[str, bool]:
    """Roles `path` (a /vms/<vmid> or /storage/<id> pool member) inherits from its pools' ACLs."""
    out: dict[str, bool] = {}
    for name, pool in cfg.pools.items():
        members = {f"/vms/{v}" for v in pool.vms} | {f"/storage/{s}" for s in pool.storage}
        if path in members:
            out.update(dict.fromkeys(roles(cfg, authid, f"/pool/{name}"), True))
    return out


def permissions(cfg: UserConfig, authid: str, path: str) -> dict[str, int]:
    """RPCEnvironment.pm permissions(): privilege -> propagate flag (0/1) held on `path`."""
    if authid == ROOT:
        return dict.fromkeys(sorted(VALID_PRIVS), 1)
    user = authid.partition("!")[0]
    if "!" in authid:
        token = cfg.token(authid)
        if token is None:
            return {}
        user_privs = permissions(cfg, user, path)
        if not token.privsep:
            return user_privs
    elif authid not in cfg.users:
        return {}
    held = roles(cfg, authid, path)
    pooled = _pool_roles(cfg, authid, path)
    if pooled and "NoAccess" not in held:
        if "NoAccess" in pooled:
            held = {"NoAccess": False}  # a pool's NoAccess trumps the regular ACL
        else:
            for role in pooled:
                held.setdefault(role, False)  # pool-derived roles never propagate
    privs: dict[str, bool] = {}
    for role, propagate in held.items():
        for priv in cfg.role(role) or ():
            privs[priv] = privs.get(priv, False) or propagate
    if "!" in authid and user != ROOT:
        privs = {p: v and bool(user_privs[p]) for p, v in privs.items() if p in user_privs}
    return {p: int(v) for p, v in sorted(privs.items())}


DEFAULT_PATHS = ("/", "/access", "/access/groups", "/nodes", "/pool", "/sdn", "/storage", "/vms")


def effective_permissions(cfg: UserConfig, authid: str) -> dict[str, dict[str, int]]:
    """RPCEnvironment.pm get_effective_permissions(): every interesting path with what is held there."""
    paths = set(DEFAULT_PATHS) | set(cfg.acl)
    for pool in cfg.pools.values():
        paths |= {f"/vms/{v}" for v in pool.vms} | {f"/storage/{s}" for s in pool.storage}
    out = {}
    for path in sorted(paths):
        perms = permissions(cfg, authid, path)
        if perms:
            out[path] = perms
    return out


def check(cfg: UserConfig, authid: str, path: str, privs: Iterable[str], any_: bool = False,
          noerr: bool = False) -> bool:
    """RPCEnvironment.pm check / check_any: raise PermissionDenied naming path and privilege(s)."""
    wanted = list(privs)
    held = permissions(cfg, authid, path)
    if any_:
        if any(p in held for p in wanted):
            return True
        if noerr:
            return False
        raise PermissionDenied(f"{path}, {'|'.join(wanted)}")
    for priv in wanted:
        if priv not in held:
            if noerr:
                return False
            raise PermissionDenied(f"{path}, {priv}")
    return True


def check_perm_modify(cfg: UserConfig, authid: str, path: str, noerr: bool = False) -> bool:
    """RPCEnvironment.pm check_perm_modify: Permissions.Modify, or the object's Allocate privilege."""
    wanted = ["Permissions.Modify"]
    if path.startswith("/storage/"):
        wanted.append("Datastore.Allocate")
    elif path.startswith("/vms/"):
        wanted.append("VM.Allocate")
    elif path.startswith("/pool/"):
        wanted.append("Pool.Allocate")
    return check(cfg, authid, path, wanted, any_=True, noerr=noerr)


def remove_vm_access(cfg: UserConfig, vmid: int) -> bool:
    """AccessControl.pm remove_vm_access: drop ACLs on /vms/<vmid> and its pool membership."""
    changed = cfg.acl.pop(f"/vms/{vmid}", None) is not None
    for pool in cfg.pools.values():
        if vmid in pool.vms:
            pool.vms.discard(vmid)
            changed = True
    return changed
