"""Access-control endpoints: ACLs, roles, effective permissions, pools (users and tokens: handlers_users).

Each follows pve-access-control's src/PVE/API2/{ACL,Role,User,AccessControl}.pm and pve-manager's
PVE/API2/Pool.pm: the same errors (`die` -> 500 with the text, parameter errors -> 400), the same
return shapes, changes written to user.cfg under its lock.
"""

from __future__ import annotations

import re
from typing import Any

from pvesim import acl
from pvesim.acl import AclError, Pool, UserConfig, split_list
from pvesim.server import ApiError, Request, route


def _param_error(name: str, msg: str) -> ApiError:
    return ApiError(400, "Parameter verification failed.", {name: msg})


def _die(prefix: str, e: AclError) -> ApiError:
    """lock_user_config's `"$errmsg: $err"` for an error inside the locked code."""
    return ApiError(500, f"{prefix}: {e}")


def _update(req: Request, prefix: str, change: Any) -> Any:
    try:
        return req.app.acl.update(change)
    except AclError as e:
        raise _die(prefix, e) from None


# --- permissions -----------------------------------------------------------------------------

@route("GET", "/access/permissions")
def permissions(req: Request) -> dict[str, dict[str, int]]:
    """API2/AccessControl.pm permissions: {path: {privilege: propagate}}; own (or own tokens') freely,
    anyone else's with Sys.Audit on /access."""
    me = req.identity.name
    who = req.params.get("userid", me)
    if who != me and who.partition("!")[0] != me:
        req.check("/access", "Sys.Audit")
    cfg = req.cfg()
    if "path" in req.params:
        return {req.params["path"]: acl.permissions(cfg, who, req.params["path"])}
    return acl.effective_permissions(cfg, who)


# --- ACLs ------------------------------------------------------------------------------------

@route("GET", "/access/acl")
def acl_list(req: Request) -> list[dict[str, Any]]:
    """API2/ACL.pm read_acl: entries on paths where the caller audits /access or may modify permissions."""
    cfg, me = req.cfg(), req.identity.name
    audit = acl.check(cfg, me, "/access", ["Sys.Audit"], noerr=True)
    out = []
    for path, grants in sorted(cfg.acl.items()):
        if not (audit or acl.check_perm_modify(cfg, me, path, noerr=True)):
            continue
        for (kind, ugid), granted in sorted(grants.items()):
            for role, propagate in sorted(granted.items()):
                out.append({"path": path, "type": kind, "ugid": ugid, "roleid": role,
                            "propagate": int(propagate)})
    return out


@route("PUT", "/access/acl")
def acl_update(req: Request) -> None:
    """API2/ACL.pm update_acl: grant (or with delete=1 remove) roles to users, groups, tokens on a path."""
    p = req.params
    if not any(p.get(k) for k in ("users", "groups", "tokens")):
        msg = "either 'users', 'groups' or 'tokens' is required."
        raise ApiError(400, "Parameter verification failed.",
                       dict.fromkeys(("users", "groups", "tokens"), msg))
    path = acl.normalize_path(p["path"])
    if path is None or (not req.flag("delete") and not acl.check_path(path)):
        raise _param_error("path", f"invalid ACL path '{p['path']}'")
    propagate = p.get("propagate", "1") != "0"
    delete = req.flag("delete")
    me = req.identity.name

    def change(cfg: UserConfig) -> None:
        mine = acl.permissions(cfg, me, path)
        node = cfg.acl.setdefault(path, {})
        for role in split_list(p["roles"]):
            privs = cfg.role(role)
            if privs is None:
                raise AclError(f"role '{role}' does not exist")
            if "Permissions.Modify" not in mine:
                _check_delegation(role, privs, mine, propagate, delete)
            grantees = [("group", g) for g in split_list(p.get("groups", ""))]
            grantees += [("user", u) for u in split_list(p.get("users", ""))]
            grantees += [("token", t) for t in split_list(p.get("tokens", ""))]
            for kind, ugid in grantees:
                _check_grantee(cfg, kind, ugid)
                if delete:
                    node.get((kind, ugid), {}).pop(role, None)
                else:
                    node.setdefault((kind, ugid), {})[role] = propagate
        _prune(cfg)

    _update(req, "ACL update failed", change)


def _check_delegation(role: str, privs: frozenset[str], mine: dict[str, int], propagate: bool,
                      delete: bool) -> None:
    """Without Permissions.Modify only a subset of one's own (propagated) privileges can be handed out."""
    verb = "remove" if delete else "add"
    for priv in sorted(privs):
        if priv not in mine:
            raise _param_error("role", f"Cannot {verb} role '{role}' - requires 'Permissions.Modify' or "
                                       "superset of privileges.")
        if propagate and not mine[priv] and not delete:
            raise _param_error("role", f"Cannot {verb} role '{role}' with propagation - requires "
                                       "'Permissions.Modify' or propagated superset of privileges.")
    if role == "NoAccess":
        raise _param_error("role", f"Cannot {verb} role '{role}' - requires 'Permissions.Modify'")


def _check_grantee(cfg: UserConfig, kind: str, ugid: str) -> None:
    if kind == "group" and ugid not in cfg.groups:
        raise AclError(f"group '{ugid}' does not exist")
    if kind == "user" and ugid not in cfg.users:
        raise AclError(f"user '{ugid}' does not exist")
    if kind == "token":
        user, _, name = ugid.partition("!")
        if user not in cfg.users:
            raise AclError(f"no such user ('{user}')")
        if cfg.token(ugid) is None:
            raise AclError(f"no such token '{name}' for user '{user}'")


def _prune(cfg: UserConfig) -> None:
    """Entries left without roles disappear (write_user_config writes nothing for them)."""
    for path in list(cfg.acl):
        cfg.acl[path] = {g: r for g, r in cfg.acl[path].items() if r}
        if not cfg.acl[path]:
            del cfg.acl[path]


# --- roles -----------------------------------------------------------------------------------

@route("GET", "/access/roles")
def roles_list(req: Request) -> list[dict[str, Any]]:
    """API2/Role.pm index: builtin ("special") and custom roles with their privileges."""
    cfg = req.cfg()
    names = sorted(set(acl.BUILTIN_ROLES) | set(cfg.roles))
    return [{"roleid": r, "privs": ",".join(sorted(cfg.role(r) or ())),
             "special": int(r in acl.BUILTIN_ROLES)} for r in names]


def _privs(text: str) -> frozenset[str]:
    privs = split_list(text)
    for priv in privs:
        if priv not in acl.VALID_PRIVS:
            raise AclError(f"invalid privilege '{priv}'")
    return frozenset(privs)


@route("POST", "/access/roles")
def role_create(req: Request) -> None:
    """API2/Role.pm create_role (the PVE namespace is reserved)."""
    role = req.params["roleid"]
    if re.match(r"(?i)pve", role):
        raise _param_error("roleid",
                           "cannot use role ID starting with the (case-insensitive) 'PVE' namespace")

    def change(cfg: UserConfig) -> None:
        if cfg.role(role) is not None:
            raise AclError(f"role '{role}' already exists")
        cfg.roles[role] = _privs(req.params.get("privs", ""))

    _update(req, "create role failed", change)


@route("GET", "/access/roles/{roleid}")
def role_get(req: Request) -> dict[str, int]:
    """API2/Role.pm read_role: {privilege: 1}."""
    privs = req.cfg().role(req.params["roleid"])
    if privs is None:
        raise ApiError(500, f"role '{req.params['roleid']}' does not exist")
    return dict.fromkeys(sorted(privs), 1)


@route("PUT", "/access/roles/{roleid}")
def role_update(req: Request) -> None:
    """API2/Role.pm update_role: replace the privileges, or add to them with append=1."""
    role = req.params["roleid"]
    if role in acl.BUILTIN_ROLES:
        raise ApiError(500, f"auto-generated role '{role}' cannot be modified")

    def change(cfg: UserConfig) -> None:
        if role not in cfg.roles:
            raise AclError(f"role '{role}' does not exist")
        base = cfg.roles[role] if req.flag("append") else frozenset()
        cfg.roles[role] = base | _privs(req.params.get("privs", ""))

    _update(req, "update role failed", change)


@route("DELETE", "/access/roles/{roleid}")
def role_delete(req: Request) -> None:
    """API2/Role.pm delete_role; ACL entries naming it are dropped when user.cfg is read back."""
    role = req.params["roleid"]
    if role in acl.BUILTIN_ROLES:
        raise ApiError(500, f"auto-generated role '{role}' cannot be deleted")

    def change(cfg: UserConfig) -> None:
        if role not in cfg.roles:
            raise AclError(f"role '{role}' does not exist")
        del cfg.roles[role]
        for grants in cfg.acl.values():
            for granted in grants.values():
                granted.pop(role, None)
        _prune(cfg)

    _update(req, "delete role failed", change)


# --- pools -----------------------------------------------------------------------------------

@route("GET", "/pools")
def pools_list(req: Request) -> list[dict[str, Any]]:
    """Pool.pm index: pools with Pool.Audit; with poolid, that pool with its members."""
    cfg = req.cfg()
    poolid = req.params.get("poolid")
    if poolid:
        return [_pool_info(req, cfg, poolid)]
    return [{"poolid": p, **({"comment": d.comment} if d.comment else {})}
            for p, d in sorted(cfg.pools.items()) if req.allowed(f"/pool/{p}", "Pool.Audit")]


def _pool_info(req: Request, cfg: UserConfig, poolid: str) -> dict[str, Any]:
    from pvesim import handlers_lxcstore as store

    pool = cfg.pools.get(poolid)
    if pool is None:
        raise ApiError(500, f"pool '{poolid}' does not exist")
    kind = req.params.get("type")
    members: list[dict[str, Any]] = []
    for vmid in sorted(pool.vms):
        node = store.locate(req.app, vmid)
        if node is not None and kind in (None, "lxc"):
            members.append(store.resource_entry(req.app, node, vmid))
    if kind in (None, "storage"):
        members += [{"id": f"storage/{req.app.nodes[0]}/{s}", "storage": s, "node": req.app.nodes[0],
                     "type": "storage"} for s in sorted(pool.storage)]
    return {"poolid": poolid, "members": members, **({"comment": pool.comment} if pool.comment else {})}


@route("GET", "/pools/{poolid}")
def pool_get(req: Request) -> dict[str, Any]:
    """Pool.pm read_pool."""
    return _pool_info(req, req.cfg(), req.params["poolid"])


@route("POST", "/pools")
def pool_create(req: Request) -> None:
    """Pool.pm create_pool (a nested pool's parent must exist; names start with a letter)."""
    pool = req.params["poolid"]

    def change(cfg: UserConfig) -> None:
        if pool in cfg.pools:
            raise AclError(f"pool '{pool}' already exists")
        parent, _, leaf = pool.rpartition("/")
        if parent and parent not in cfg.pools:
            raise AclError(f"parent '{parent}' of pool '{pool}' does not exist")
        if not leaf[:1].isalpha():
            raise AclError("pool name must start with a letter")
        cfg.pools[pool] = Pool(comment=req.params.get("comment", ""))

    _update(req, "create pool failed", change)


def _pool_update(req: Request) -> None:
    """Pool.pm update_pool: comment, add or (delete=1) remove vms and storages."""
    pool, me = req.params["poolid"], req.identity.name

    def change(cfg: UserConfig) -> None:
        data = cfg.pools.get(pool)
        if data is None:
            raise AclError(f"pool '{pool}' does not exist")
        if "comment" in req.params:
            data.comment = req.params["comment"]
        for vmid in map(int, split_list(req.params.get("vms", ""))):
            acl.check_perm_modify(cfg, me, f"/vms/{vmid}")
            current = cfg.pool_of(vmid)
            if req.flag("delete"):
                if vmid not in data.vms:
                    raise AclError(f"VM {vmid} is not a pool member")
                data.vms.discard(vmid)
                continue
            if vmid in data.vms:
                raise AclError(f"VM {vmid} is already a pool member")
            if current is not None:
                if not req.flag("allow-move"):
                    raise AclError(f"VM {vmid} belongs already to pool '{current}' "
                                   "and 'allow-move' is not set")
                acl.check(cfg, me, f"/pool/{current}", ["Pool.Allocate"])
                cfg.pools[current].vms.discard(vmid)
            data.vms.add(vmid)
        for storeid in split_list(req.params.get("storage", "")):
            acl.check_perm_modify(cfg, me, f"/storage/{storeid}")
            if req.flag("delete"):
                if storeid not in data.storage:
                    raise AclError(f"Storage '{storeid}' is not a pool member")
                data.storage.discard(storeid)
            elif storeid in data.storage:
                raise AclError(f"Storage '{storeid}' is already a pool member")
            else:
                data.storage.add(storeid)

    _update(req, "update pools failed", change)


@route("PUT", "/pools")
def pool_update(req: Request) -> None:
    """Pool.pm update_pool (the v9 form with poolid as a parameter)."""
    _pool_update(req)


@route("PUT", "/pools/{poolid}")
def pool_update_deprecated(req: Request) -> None:
    """Pool.pm update_pool_deprecated."""
    _pool_update(req)


def _pool_delete(req: Request) -> None:
    """Pool.pm delete_pool: only empty pools; their ACLs go with them (delete_pool_acl)."""
    from pvesim import handlers_lxcstore as store

    pool = req.params["poolid"]

    def change(cfg: UserConfig) -> None:
        data = cfg.pools.get(pool)
        if data is None:
            raise AclError(f"pool '{pool}' does not exist")
        for sub in sorted(p for p in cfg.pools if p.startswith(pool + "/")):
            raise AclError(f"pool '{pool}' is not empty (contains pool '{sub}')")
        for vmid in sorted(data.vms):
            if store.locate(req.app, vmid) is not None:
                raise AclError(f"pool '{pool}' is not empty (contains VM {vmid})")
        for storeid in sorted(data.storage):
            raise AclError(f"pool '{pool}' is not empty (contains storage '{storeid}')")
        del cfg.pools[pool]
        for path in [p for p in cfg.acl if p == f"/pool/{pool}" or p.startswith(f"/pool/{pool}/")]:
            del cfg.acl[path]

    _update(req, "delete pool failed", change)


@route("DELETE", "/pools")
def pool_delete(req: Request) -> None:
    """Pool.pm delete_pool (v9 form)."""
    _pool_delete(req)


@route("DELETE", "/pools/{poolid}")
def pool_delete_deprecated(req: Request) -> None:
    """Pool.pm delete_pool_deprecated."""
    _pool_delete(req)

