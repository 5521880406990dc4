"""Users and API tokens, as pve-access-control's src/PVE/API2/User.pm serves them.

A token's secret is returned once, by POST (generate_token) or PUT with regenerate=1, as a UUID
(PVE::TokenConfig::generate_token); tokens are privilege-separated unless privsep=0.
"""

from __future__ import annotations

import re
from typing import Any

from pvesim import acl
from pvesim.acl import AclError, Token, User, UserConfig, split_list
from pvesim.handlers_access import _param_error, _update
from pvesim.server import ApiError, Request, route

USER_FIELDS = ("firstname", "lastname", "email", "comment", "keys")


def _user_data(u: User, full: bool) -> dict[str, Any]:
    """User.pm $extract_user_data."""
    out: dict[str, Any] = {"enable": int(u.enable), "expire": u.expire}
    out.update({k: getattr(u, k) for k in USER_FIELDS if getattr(u, k)})
    return out if not full else {**out, "tokens": {n: _token_info(t) for n, t in sorted(u.tokens.items())}}


def _token_info(t: Token) -> dict[str, Any]:
    return {"privsep": int(t.privsep), "expire": t.expire, **({"comment": t.comment} if t.comment else {})}


def _groups_of(cfg: UserConfig, userid: str) -> list[str]:
    return sorted(g for g, members in cfg.groups.items() if userid in members)


@route("GET", "/access/users")
def users_list(req: Request) -> list[dict[str, Any]]:
    """User.pm index: all users for User.Modify/Sys.Audit on /access/groups, else self and group members."""
    cfg, me = req.cfg(), req.identity.name
    privs = ["User.Modify", "Sys.Audit"]
    everyone = acl.check(cfg, me, "/access/groups", privs, any_=True, noerr=True)
    visible = {u for g, members in cfg.groups.items()
               if acl.check(cfg, me, f"/access/groups/{g}", privs, any_=True, noerr=True) for u in members}
    out = []
    for userid, u in sorted(cfg.users.items()):
        if not (everyone or userid == me or userid in visible):
            continue
        if "enabled" in req.params and u.enable != req.flag("enabled"):
            continue
        entry = _user_data(u, full=False)
        if req.flag("full"):
            entry["groups"] = ",".join(_groups_of(cfg, userid))
            entry["tokens"] = [{"tokenid": n, **_token_info(t)} for n, t in sorted(u.tokens.items())]
        entry["userid"] = userid
        entry["realm-type"] = "pam" if userid.endswith("@pam") else "pve"
        out.append(entry)
    return out


@route("POST", "/access/users")
def user_create(req: Request) -> None:
    """User.pm create_user (pve/pam realm users; the sandbox keeps no password but root@pam's)."""
    userid, p = req.params["userid"], req.params

    def change(cfg: UserConfig) -> None:
        if userid in cfg.users:
            raise AclError(f"user '{userid}' already exists")
        user = User(enable=p.get("enable", "1") != "0", expire=int(p.get("expire", 0) or 0))
        for key in USER_FIELDS:
            setattr(user, key, p.get(key, ""))
        for group in split_list(p.get("groups", "")):
            if group not in cfg.groups:
                raise AclError(f"no such group '{group}'")
            cfg.groups[group].add(userid)
        cfg.users[userid] = user

    _update(req, "create user failed", change)


def _user(cfg: UserConfig, userid: str) -> User:
    """AccessControl.pm check_user_exist."""
    u = cfg.users.get(userid)
    if u is None:
        raise ApiError(500, f"no such user ('{userid}')")
    return u


@route("GET", "/access/users/{userid}")
def user_get(req: Request) -> dict[str, Any]:
    """User.pm read_user: data with groups (list) and tokens (object)."""
    cfg = req.cfg()
    userid = req.params["userid"]
    return {**_user_data(_user(cfg, userid), full=True), "groups": _groups_of(cfg, userid)}


# --- tokens ----------------------------------------------------------------------------------

@route("GET", "/access/users/{userid}/token")
def tokens_list(req: Request) -> list[dict[str, Any]]:
    """User.pm token_index."""
    u = _user(req.cfg(), req.params["userid"])
    return [{"tokenid": n, **_token_info(t)} for n, t in sorted(u.tokens.items())]


def _token(cfg: UserConfig, userid: str, name: str) -> Token:
    """AccessControl.pm check_token_exist."""
    token = _user(cfg, userid).tokens.get(name)
    if token is None:
        raise ApiError(500, f"no such token '{name}' for user '{userid}'")
    return token


@route("GET", "/access/users/{userid}/token/{tokenid}")
def token_get(req: Request) -> dict[str, Any]:
    """User.pm read_token."""
    return _token_info(_token(req.cfg(), req.params["userid"], req.params["tokenid"]))


@route("POST", "/access/users/{userid}/token/{tokenid}")
def token_create(req: Request) -> dict[str, Any]:
    """User.pm generate_token: {info, value, full-tokenid}; privsep defaults to 1."""
    userid, name, p = req.params["userid"], req.params["tokenid"], req.params
    cfg = req.cfg()
    if name in _user(cfg, userid).tokens:
        raise _param_error("tokenid", "Token already exists.")
    full = f"{userid}!{name}"
    token = Token(privsep=p.get("privsep", "1") != "0", expire=int(p.get("expire", 0) or 0),
                  comment=p.get("comment", ""))

    def change(cfg: UserConfig) -> None:
        _user(cfg, userid)
        if name in cfg.users[userid].tokens:
            raise AclError("Token already exists.")
        cfg.users[userid].tokens[name] = token

    _update(req, "generating token failed", change)
    value = req.app.acl.new_secret(full)
    info: dict[str, Any] = {"privsep": int(token.privsep)}
    if "expire" in p:
        info["expire"] = token.expire
    if token.comment:
        info["comment"] = token.comment
    return {"info": info, "value": value, "full-tokenid": full}


@route("PUT", "/access/users/{userid}/token/{tokenid}")
def token_update(req: Request) -> dict[str, Any]:
    """User.pm update_token_info: privsep, expire, comment; regenerate=1 returns a new secret."""
    userid, name, p = req.params["userid"], req.params["tokenid"], req.params
    _token(req.cfg(), userid, name)
    deletes = [k for k in re.split(r"[,;\s]+", p.get("delete", "")) if k]
    for key in deletes:
        if key != "comment":
            raise _param_error("delete", f"unknown option '{key}'")

    def change(cfg: UserConfig) -> Token:
        token = _token(cfg, userid, name)
        if "privsep" in p:
            token.privsep = p["privsep"] != "0"
        if "expire" in p:
            token.expire = int(p["expire"])
        if "comment" in p:
            token.comment = p["comment"]
        if deletes:
            token.comment = ""
        return token

    token = _update(req, "updating token info failed", change)
    out = _token_info(token)
    if req.flag("regenerate"):
        out.update({"value": req.app.acl.new_secret(f"{userid}!{name}"), "full-tokenid": f"{userid}!{name}"})
    return out


@route("DELETE", "/access/users/{userid}/token/{tokenid}")
def token_delete(req: Request) -> None:
    """User.pm remove_token: the secret goes too; ACL entries naming it no longer apply."""
    userid, name = req.params["userid"], req.params["tokenid"]
    _token(req.cfg(), userid, name)

    def change(cfg: UserConfig) -> None:
        del _user(cfg, userid).tokens[name]
        for grants in cfg.acl.values():
            grants.pop(("token", f"{userid}!{name}"), None)

    _update(req, "deleting token failed", change)
    req.app.acl.drop_secret(f"{userid}!{name}")
