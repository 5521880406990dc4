"""Tickets, CSRF tokens, API tokens and privilege checks."""

from __future__ import annotations

import pytest

from pvesim import auth

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


def test_api_tokens() -> None:
    a = make()
    full = a.check_api_token(f"PVEAPIToken=root@pam!psa-provision={SECRETS['tokens']['psa-provision']}")
    assert full.name == "root@pam!psa-provision" and "VM.Allocate" in full.privs
    ro = a.check_api_token(f"PVEAPIToken=root@pam!readonly={SECRETS['tokens']['readonly']}")
    assert ro.privs == auth.ROLES["PVEAuditor"]
    with pytest.raises(auth.AuthError):
        a.check_api_token(f"PVEAPIToken=root@pam!readonly={SECRETS['tokens']['psa-provision']}")
    with pytest.raises(auth.AuthError):
        a.check_api_token("PVEAPIToken=root@pam!nope=x")


def identity(role: str) -> auth.Identity:
    return auth.Identity("root@pam", "t", auth.ROLES[role], via_ticket=False)


def test_permission_checks_follow_the_schema() -> None:
    start = ["perm", "/vms/{vmid}", ["VM.PowerMgmt"]]
    auth.check_permission(identity("Administrator"), start, {"vmid": "200"}, "POST")
    with pytest.raises(auth.PermissionDenied, match=r"Permission check failed \(/vms/200, VM.PowerMgmt\)"):
        auth.check_permission(identity("PVEAuditor"), start, {"vmid": "200"}, "POST")
    audit_any = ["perm", "/storage/{storage}", ["Datastore.Audit", "Datastore.AllocateSpace"], "any", 1]
    auth.check_permission(identity("PVEAuditor"), audit_any, {"storage": "local"}, "GET")
    template = ["perm", "/storage/{storage}", ["Datastore.AllocateTemplate"]]
    with pytest.raises(auth.PermissionDenied, match=r"Datastore\.AllocateTemplate"):
        auth.check_permission(identity("PVESimRestricted"), template, {"storage": "local"}, "POST")
    with pytest.raises(auth.PermissionDenied, match=r"/vms/9000, VM.Allocate"):
        auth.require(identity("PVESimRestricted"), "/vms/9000", "VM.Allocate")
