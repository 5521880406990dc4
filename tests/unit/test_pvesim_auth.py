"""Tickets, CSRF tokens, API tokens and privilege checks."""

from __future__ import annotations

import pytest

from pvesim import auth
from pvesim.acl import PermissionDenied
from pvesim.acl_store import default_config

SECRETS = auth.new_secrets()


def make() -> auth.Auth:
    return auth.Auth(SECRETS)


def test_ticket_has_pve_shape_and_verifies() -> None:
    a = make()
    ticket = a.make_ticket("root@pam", now=0x6553F100)
    assert ticket.startswith("PVE:root@pam:6553F100::")
    assert a.check_ticket(ticket, now=0x6553F100 + 60) == "root@pam"


def test_forged_or_expired_tickets_fail() -> None:
    a = make()
    ticket = a.make_ticket("root@pam", now=1_000_000)
    with pytest.raises(auth.AuthError):
        a.check_ticket(ticket.replace("root@pam", "admin@pve"), now=1_000_010)
    with pytest.raises(auth.AuthError):
        a.check_ticket(ticket, now=1_000_000 + auth.TICKET_LIFETIME + 1)
    with pytest.raises(auth.AuthError):
        a.check_ticket(ticket, now=1_000_010, lifetime=5)
    with pytest.raises(auth.AuthError):
        a.check_ticket(ticket, now=1_000_010, epoch=1)  # `pvesim fault expire-tickets` bumps the epoch
    with pytest.raises(auth.AuthError):
        auth.Auth(auth.new_secrets()).check_ticket(ticket, now=1_000_010)


def test_password_login_and_ticket_renewal() -> None:
    a = make()
    assert a.login("root@pam", SECRETS["password"]) == "root@pam"
    assert a.login("root", SECRETS["password"], realm="pam") == "root@pam"
    assert a.login("root@pam", a.make_ticket("root@pam")) == "root@pam"
    for user, password in [("root@pam", "wrong"), ("admin@pve", SECRETS["password"])]:
        with pytest.raises(auth.AuthError, match="authentication failure"):
            a.login(user, password)


def test_csrf_token_is_bound_to_the_user() -> None:
    a = make()
    token = a.make_csrf("root@pam")
    a.check_csrf(token, "root@pam")
    for bad, user in [(None, "root@pam"), ("", "root@pam"), (token, "other@pve"), (token + "x", "root@pam")]:
        with pytest.raises(auth.AuthError, match="invalid csrf token"):
            a.check_csrf(bad, user)


def _secrets() -> dict[str, str]:
    return {f"root@pam!{n}": v for n, v in SECRETS["tokens"].items()}


def test_api_tokens_exist_in_user_cfg_and_match_their_secret() -> None:
    a, cfg = make(), default_config()
    full = a.check_api_token(f"PVEAPIToken=root@pam!psa-provision={SECRETS['tokens']['psa-provision']}",
                             cfg, _secrets())
    assert full.name == "root@pam!psa-provision" and not full.via_ticket
    with pytest.raises(auth.AuthError):
        a.check_api_token(f"PVEAPIToken=root@pam!readonly={SECRETS['tokens']['psa-provision']}", cfg,
                          _secrets())
    with pytest.raises(auth.AuthError):
        a.check_api_token("PVEAPIToken=root@pam!nope=x", cfg, _secrets())
    del cfg.users["root@pam"].tokens["readonly"]  # a deleted token no longer authenticates
    with pytest.raises(auth.AuthError):
        a.check_api_token(f"PVEAPIToken=root@pam!readonly={SECRETS['tokens']['readonly']}", cfg, _secrets())


def ident(name: str) -> auth.Identity:
    user, _, token = name.partition("!")
    return auth.Identity(user, token or None, via_ticket=not token)


def test_permission_checks_follow_the_schema() -> None:
    cfg = default_config()
    start = {"check": ["perm", "/vms/{vmid}", ["VM.PowerMgmt"]]}
    auth.check_permission(cfg, ident("root@pam!psa-provision"), start, {"vmid": "200"})
    with pytest.raises(PermissionDenied, match=r"^Permission check failed \(/vms/200, VM.PowerMgmt\)$"):
        auth.check_permission(cfg, ident("root@pam!readonly"), start, {"vmid": "200"})
    audit_any = {"check": ["perm", "/storage/{storage}", ["Datastore.Audit", "Datastore.AllocateSpace"],
                           "any", 1]}
    auth.check_permission(cfg, ident("root@pam!readonly"), audit_any, {"storage": "local"})
    template = {"check": ["perm", "/storage/{storage}", ["Datastore.AllocateTemplate"]]}
    with pytest.raises(PermissionDenied, match=r"\(/storage/local, Datastore\.AllocateTemplate\)"):
        auth.check_permission(cfg, ident("root@pam!restricted"), template, {"storage": "local"})
    auth.check_permission(cfg, ident("root@pam"), None, {})  # root@pam passes even root-only methods
    with pytest.raises(PermissionDenied, match=r"user != root@pam"):
        auth.check_permission(cfg, ident("root@pam!psa-provision"), None, {})  # its tokens do not
    auth.check_permission(cfg, ident("root@pam!readonly"), {"user": "all"}, {})


def test_or_and_perm_modify_checks() -> None:
    cfg = default_config()
    either = {"check": ["or", ["perm", "/", ["Sys.Modify"]], ["perm", "/", ["Sys.Audit"]]]}
    auth.check_permission(cfg, ident("root@pam!readonly"), either, {})
    both = {"check": ["and", ["perm", "/", ["Sys.Audit"]], ["perm", "/", ["Sys.Modify"]]]}
    with pytest.raises(PermissionDenied, match=r"\(/, Sys.Modify\)"):
        auth.check_permission(cfg, ident("root@pam!readonly"), both, {})
    modify = {"check": ["perm-modify", "{path}"]}
    auth.check_permission(cfg, ident("root@pam!psa-provision"), modify, {"path": "/vms/200"})
    with pytest.raises(PermissionDenied, match=r"\(/vms/200, Permissions.Modify\|VM.Allocate\)"):
        auth.check_permission(cfg, ident("root@pam!readonly"), modify, {"path": "/vms/200"})
