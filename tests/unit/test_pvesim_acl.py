"""Proxmox's permission model (pvesim/acl.py, acl_store.py, ctperm.py): cases read from
pve-access-control's AccessControl.pm roles() / RPCEnvironment.pm permissions() and pve-container's
check_ct_modify_config_perm."""

from __future__ import annotations

import pytest

from pvesim import acl, acl_store, ctperm
from pvesim.acl import PermissionDenied, Pool, Token, User, UserConfig


def cfg_with(*acl_lines: str, extra: str = "") -> UserConfig:
    text = ("user:root@pam:1:0:::::\nuser:alice@pve:1:0:::::\nuser:bob@pve:1:0:::::\n"
            "token:alice@pve!sep:0:1::\ntoken:alice@pve!full:0:0::\ngroup:ops:bob@pve::\n"
            "role:Deploy:VM.Allocate,VM.Audit,VM.PowerMgmt:\n" + extra + "\n".join(acl_lines) + "\n")
    return acl_store.parse(text)


def test_builtin_roles_match_create_roles() -> None:
    roles = acl.BUILTIN_ROLES
    assert "Sys.Modify" not in roles["PVEAdmin"] and "Mapping.Modify" not in roles["PVEAdmin"]
    assert roles["PVEAuditor"] == {"VM.Audit", "VM.GuestAgent.Audit", "Sys.Audit", "Datastore.Audit",
                                   "SDN.Audit", "Pool.Audit", "Mapping.Audit"}
    assert roles["PVEVMUser"] >= {"VM.PowerMgmt", "VM.Backup", "VM.Audit"}
    assert "VM.Allocate" not in roles["PVEVMUser"]
    assert roles["PVEDatastoreUser"] == {"Datastore.AllocateSpace", "Datastore.Audit"}
    assert roles["NoAccess"] == frozenset() and roles["PVETemplateUser"] == {"VM.Clone", "VM.Audit"}
    assert {"Permissions.Modify", "Sys.Modify", "Sys.AccessNetwork"} <= roles["Administrator"]


def test_propagate_flag_decides_what_reaches_below() -> None:
    cfg = cfg_with("acl:0:/vms:alice@pve:PVEAuditor:", "acl:1:/storage:alice@pve:Deploy:")
    assert acl.permissions(cfg, "alice@pve", "/vms") == {"VM.Audit": 0, "VM.GuestAgent.Audit": 0,
                                                         "Sys.Audit": 0, "Datastore.Audit": 0, "SDN.Audit": 0,
                                                         "Pool.Audit": 0, "Mapping.Audit": 0}
    assert acl.permissions(cfg, "alice@pve", "/vms/200") == {}
    assert acl.permissions(cfg, "alice@pve", "/storage/local") == {"VM.Allocate": 1, "VM.Audit": 1,
                                                                   "VM.PowerMgmt": 1}


def test_deeper_grant_replaces_and_users_beat_groups_tokens_beat_users() -> None:
    cfg = cfg_with("acl:1:/:@ops:Administrator:", "acl:1:/vms/200:bob@pve:PVEAuditor:",
                   "acl:1:/vms:@ops,alice@pve:PVEVMUser:", "acl:1:/vms:alice@pve!sep:Deploy:")
    assert "Sys.Modify" in acl.permissions(cfg, "bob@pve", "/nodes/pve1")
    assert "VM.PowerMgmt" in acl.permissions(cfg, "bob@pve", "/vms/201")  # group grant on /vms
    assert set(acl.permissions(cfg, "bob@pve", "/vms/200")) == acl.BUILTIN_ROLES["PVEAuditor"]
    assert acl.roles(cfg, "alice@pve!sep", "/vms/200") == {"Deploy": True}


def test_noaccess_wins_and_root_holds_everything() -> None:
    cfg = cfg_with("acl:1:/vms:alice@pve:NoAccess,Administrator:")
    assert acl.permissions(cfg, "alice@pve", "/vms/200") == {}
    perms = acl.permissions(cfg, "root@pam", "/anything")
    assert set(perms) == acl.VALID_PRIVS and set(perms.values()) == {1}


def test_privsep_token_gets_the_intersection_with_its_user() -> None:
    cfg = cfg_with("acl:1:/:alice@pve:PVEVMUser:", "acl:1:/:alice@pve!sep:Deploy:")
    assert acl.permissions(cfg, "alice@pve!sep", "/vms/200") == {"VM.Audit": 1, "VM.PowerMgmt": 1}
    assert acl.permissions(cfg, "alice@pve!full", "/vms/200") == acl.permissions(cfg, "alice@pve", "/vms/200")
    assert acl.permissions(cfg, "alice@pve!nope", "/vms/200") == {}
    root = cfg_with("acl:1:/:root@pam!psa:PVEAuditor:", extra="token:root@pam!psa:0:1::\n")
    assert set(acl.permissions(root, "root@pam!psa", "/vms/1")) == acl.BUILTIN_ROLES["PVEAuditor"]


def test_pool_grants_reach_members_without_propagation() -> None:
    cfg = cfg_with("acl:1:/pool/web:alice@pve:Deploy:", "acl:1:/vms:alice@pve:PVEAuditor:",
                   extra="pool:web::200,201:local-lvm:\n")
    perms = acl.permissions(cfg, "alice@pve", "/vms/200")
    assert perms["VM.Allocate"] == 0 and perms["VM.PowerMgmt"] == 0 and perms["VM.Audit"] == 1
    assert "VM.Allocate" in acl.permissions(cfg, "alice@pve", "/storage/local-lvm")
    assert "VM.Allocate" not in acl.permissions(cfg, "alice@pve", "/vms/202")
    eff = acl.effective_permissions(cfg, "alice@pve")
    assert "/vms/201" in eff and "/pool/web" in eff and "/access" not in eff


def test_checks_name_path_and_privilege() -> None:
    cfg = cfg_with("acl:1:/:alice@pve:PVEAuditor:")
    with pytest.raises(PermissionDenied, match=r"^Permission check failed \(/vms/200, VM.PowerMgmt\)$"):
        acl.check(cfg, "alice@pve", "/vms/200", ["VM.Audit", "VM.PowerMgmt"])
    with pytest.raises(PermissionDenied, match=r"\(/vms, Permissions.Modify\|VM.Allocate\)"):
        acl.check(cfg, "alice@pve", "/vms", ["Permissions.Modify", "VM.Allocate"], any_=True)
    assert acl.check(cfg, "alice@pve", "/", ["Sys.Audit", "Sys.Modify"], any_=True)
    assert not acl.check_perm_modify(cfg, "alice@pve", "/vms/200", noerr=True)


def test_user_cfg_round_trips_in_pve_format() -> None:
    cfg = UserConfig()
    cfg.users["alice@pve"] = User(comment="a: b", tokens={"t": Token(privsep=False, comment="ci")})
    cfg.groups["ops"] = {"alice@pve"}
    cfg.roles["Deploy"] = frozenset({"VM.Audit", "VM.Allocate"})
    cfg.pools["web"] = Pool("front", {200}, {"local"})
    cfg.acl["/vms"] = {("user", "alice@pve"): {"Deploy": True, "PVEAuditor": False},
                       ("token", "alice@pve!t"): {"Deploy": True}, ("group", "ops"): {"NoAccess": True}}
    text = acl_store.dump(cfg)
    assert "token:alice@pve!t:0:0:ci:" in text and "role:Deploy:VM.Allocate,VM.Audit:" in text
    assert "acl:0:/vms:alice@pve:PVEAuditor:" in text and "pool:web:front:200:local:" in text
    assert acl_store.parse(text) == cfg


def test_acl_for_unknown_role_or_token_is_ignored_when_read() -> None:
    cfg = cfg_with("acl:1:/:alice@pve!gone,alice@pve:Gone,Deploy:")
    assert cfg.acl == {"/": {("user", "alice@pve"): {"Deploy": True}}}


def test_default_config_grants_the_sandbox_tokens_on_root() -> None:
    cfg = acl_store.default_config()
    admin = acl.permissions(cfg, "root@pam!psa-provision", "/vms/200")
    assert set(admin) == acl.VALID_PRIVS
    restricted = acl.permissions(cfg, "root@pam!restricted", "/vms/200")
    assert "VM.Allocate" not in restricted and "VM.PowerMgmt" in restricted
    assert "Sys.Modify" not in acl.permissions(cfg, "root@pam!readonly", "/")


def test_remove_vm_access_drops_acls_and_pool_membership() -> None:
    cfg = cfg_with("acl:1:/vms/200:alice@pve:Deploy:", "acl:1:/vms/201:alice@pve:Deploy:",
                   extra="pool:web::200,201::\n")
    assert acl.remove_vm_access(cfg, 200)
    assert "/vms/200" not in cfg.acl and "/vms/201" in cfg.acl and cfg.pools["web"].vms == {201}
    assert not acl.remove_vm_access(cfg, 200)


def test_paths_normalized_and_checked_as_pve() -> None:
    assert acl.normalize_path("//vms//200/") == "/vms/200" and acl.normalize_path("vms") == "/vms"
    assert acl.check_path("/sdn/zones/localnetwork/vmbr20") and acl.check_path("/pool/a/b")
    assert not acl.check_path("/vms/99") and not acl.check_path("/foo")


CT = {"hostname": "ct", "cores": "2", "memory": "512", "rootfs": "local-lvm:8",
      "net0": "name=eth0,bridge=vmbr20,ip=dhcp", "ostype": "debian"}


def test_create_needs_each_config_privilege_and_sdn_use() -> None:
    cfg = cfg_with("acl:1:/vms:alice@pve:PVEVMAdmin:", "acl:1:/storage:alice@pve:PVEDatastoreUser:")
    with pytest.raises(PermissionDenied, match=r"\(/sdn/zones/localnetwork/vmbr20, SDN.Use\)"):
        ctperm.check_modify(cfg, "alice@pve", 200, None, None, CT, [], True)
    cfg = cfg_with("acl:1:/vms:alice@pve:PVEVMAdmin:", "acl:1:/storage:alice@pve:PVEDatastoreUser:",
                   "acl:1:/sdn/zones/localnetwork:alice@pve:PVESDNUser:")
    ctperm.check_modify(cfg, "alice@pve", 200, None, None, CT, [], True)
    cfg.roles["NoNet"] = acl.BUILTIN_ROLES["PVEVMAdmin"] - {"VM.Config.Network"}
    cfg.acl["/vms"] = {("user", "alice@pve"): {"NoNet": True}}
    with pytest.raises(PermissionDenied, match=r"\(/vms/200, VM.Config.Network\)"):
        ctperm.check_modify(cfg, "alice@pve", 200, None, None, {"hostname": "x"}, [], True)


def test_features_other_than_nesting_are_root_at_pam_only() -> None:
    cfg = acl_store.default_config()
    token = "root@pam!psa-provision"  # Administrator on /, but not root@pam
    ctperm.check_modify(cfg, token, 200, None, None, {"features": "nesting=1"}, [], True)
    with pytest.raises(PermissionDenied, match=r"\(changing feature flags \(except nesting\) is only"):
        ctperm.check_modify(cfg, token, 200, None, None, {"features": "nesting=1,keyctl=1"}, [], True)
    with pytest.raises(PermissionDenied, match="privileged container is only allowed for root@pam"):
        ctperm.check_modify(cfg, token, 200, None, None, {"features": "nesting=1"}, [], False)
    ctperm.check_modify(cfg, token, 200, None, {"features": "nesting=1,keyctl=1"},
                        {"features": "nesting=0,keyctl=1"}, [], True)  # only nesting changed
    ctperm.check_modify(cfg, "root@pam", 200, None, None, {"features": "fuse=1,mknod=1"}, [], False)
    with pytest.raises(PermissionDenied, match="device passthrough"):
        ctperm.check_modify(cfg, token, 200, None, None, {"dev0": "/dev/null"}, [], True)
