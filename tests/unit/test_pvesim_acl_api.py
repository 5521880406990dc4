# ruff: noqa: F811  (the fixtures app/api/secrets come from test_pvesim_api_logic)
"""The access-control endpoints and the Proxmox behaviours of issue 16, through App.handle (no sockets)."""

from __future__ import annotations

import json
from typing import Any

from test_pvesim_api_logic import TEMPLATE, Client, api, app, create, secrets, token  # noqa: F401

from pvesim import backup_fault
from pvesim.server import App


def token_client(app: App, full: str, value: str) -> Client:
    return Client(app, {"authorization": f"PVEAPIToken={full}={value}"})


def setup_deployer(api: Client, app: App, privs: str, path: str = "/", privsep: int = 1) -> Client:
    """A user with a custom role on `path` and a token holding the same role there."""
    api.ok("POST", "/access/roles", roleid="Deployer", privs=privs)
    api.ok("POST", "/access/users", userid="deploy@pve")
    made = api.ok("POST", "/access/users/deploy@pve/token/ci", privsep=privsep)
    assert made["full-tokenid"] == "deploy@pve!ci" and made["info"]["privsep"] == privsep
    api.ok("PUT", "/access/acl", path=path, roles="Deployer", users="deploy@pve")
    api.ok("PUT", "/access/acl", path=path, roles="Deployer", tokens="deploy@pve!ci")
    return token_client(app, "deploy@pve!ci", made["value"])


def test_role_token_acl_round_trip(app: App, api: Client) -> None:
    ci = setup_deployer(api, app, "VM.Audit,Sys.Audit")
    assert ci.ok("GET", "/version")["version"]
    assert {"path": "/", "type": "token", "ugid": "deploy@pve!ci", "roleid": "Deployer",
            "propagate": 1} in api.ok("GET", "/access/acl")
    assert api.ok("GET", "/access/roles/Deployer") == {"Sys.Audit": 1, "VM.Audit": 1}
    status, body = ci("PUT", "/cluster/firewall/options", enable=1)
    assert (status, body["message"]) == (403, "Permission check failed (/, Sys.Modify)")
    status, body = api("POST", "/access/roles", roleid="PVEMine", privs="VM.Audit")
    assert status == 400 and "PVE" in body["errors"]["roleid"]
    status, body = api("POST", "/access/roles", roleid="Bad", privs="VM.Fly")
    assert (status, body["message"]) == (500, "create role failed: invalid privilege 'VM.Fly'")
    api.ok("DELETE", "/access/users/deploy@pve/token/ci")
    assert ci("GET", "/version")[0] == 401
    assert not [e for e in api.ok("GET", "/access/acl") if e["ugid"] == "deploy@pve!ci"]


def test_permissions_dump_carries_the_propagate_flag(app: App, api: Client) -> None:
    ci = setup_deployer(api, app, "VM.Audit,VM.PowerMgmt")
    api.ok("PUT", "/access/acl", path="/vms/9000", roles="PVEAuditor", tokens="deploy@pve!ci", propagate=0)
    api.ok("PUT", "/access/acl", path="/vms/9000", roles="PVEAuditor", users="deploy@pve", propagate=0)
    mine = ci.ok("GET", "/access/permissions", path="/vms/9000")["/vms/9000"]
    assert mine["Sys.Audit"] == 0 and mine["VM.Audit"] == 0 and "VM.PowerMgmt" not in mine
    assert ci.ok("GET", "/access/permissions")["/"] == {"VM.Audit": 1, "VM.PowerMgmt": 1}
    assert ci("GET", "/access/permissions", userid="root@pam")[0] == 403  # needs Sys.Audit on /access


def test_pool_grant_applies_to_members_and_destroy_cleans_up(app: App, api: Client) -> None:
    create(api)
    api.ok("POST", "/pools", poolid="web")
    api.ok("PUT", "/pools", poolid="web", vms="9000")
    ci = setup_deployer(api, app, "VM.Audit,VM.PowerMgmt", path="/pool/web")
    api.ok("PUT", "/access/acl", path="/vms/9000", roles="PVEAuditor", users="deploy@pve")
    assert ci.ok("GET", "/access/permissions", path="/vms/9000")["/vms/9000"]["VM.PowerMgmt"] == 0
    assert ci.task("POST", "/nodes/pve1/lxc/9000/status/start")["exitstatus"] == "OK"
    assert [r["vmid"] for r in ci.ok("GET", "/cluster/resources", type="vm")] == [9000]
    assert api.task("DELETE", "/nodes/pve1/lxc/9000", force=1)["exitstatus"] == "OK"
    assert api.ok("GET", "/pools", poolid="web")[0]["members"] == []
    assert not [e for e in api.ok("GET", "/access/acl") if e["path"] == "/vms/9000"]


def test_listings_hide_what_the_token_cannot_audit(app: App, api: Client) -> None:
    create(api)
    ci = setup_deployer(api, app, "VM.Audit", path="/vms")
    assert ci.ok("GET", "/cluster/resources", type="storage") == []
    assert ci.ok("GET", "/nodes/pve1/storage") == []
    assert [r["vmid"] for r in ci.ok("GET", "/nodes/pve1/lxc")] == [9000]
    assert "maxmem" not in ci.ok("GET", "/cluster/resources", type="node")[0]  # no Sys.Audit on the node
    ro = token(app, secrets_of(app), "readonly")
    storages = ro.ok("GET", "/cluster/resources", type="storage")
    assert {r["storage"] for r in storages} == {"local", "local-lvm"}


def secrets_of(app: App) -> dict[str, Any]:
    return {"tokens": app.auth.default_tokens}


def test_create_checks_config_privileges_sys_modify_and_sdn(app: App, api: Client) -> None:
    privs = ("VM.Allocate,VM.Audit,VM.Config.Disk,VM.Config.CPU,VM.Config.Memory,VM.Config.Options,"
             "Datastore.AllocateSpace,Datastore.Audit,SDN.Use")
    ci = setup_deployer(api, app, privs)
    status, body = create_as(ci)
    assert (status, body["message"]) == (403, "Permission check failed (/vms/9000, VM.Config.Network)")
    api.ok("PUT", "/access/roles/Deployer", privs="VM.Config.Network", append=1)
    status, body = create_as(ci, unprivileged=0)
    assert (status, body["message"]) == (403, "Permission check failed (/, Sys.Modify)")
    status, body = create_as(ci, features="nesting=1,keyctl=1")
    assert body["message"] == ("Permission check failed (changing feature flags (except nesting) is only "
                               "allowed for root@pam)")
    status, body = create_as(ci)
    assert status == 200


def create_as(client: Client, **extra: Any) -> tuple[int, dict[str, Any]]:
    return client("POST", "/nodes/pve1/lxc", vmid=9000, ostemplate=f"local:vztmpl/{TEMPLATE}",
                  rootfs="local-lvm:8", hostname="ct9000",
                  net0="name=eth0,bridge=vmbr20,ip=10.0.20.50/24", **extra)


def test_unprivileged_kept_only_when_one(app: App, api: Client) -> None:
    create(api, vmid=9000)
    assert api.ok("GET", "/nodes/pve1/lxc/9000/config")["unprivileged"] == 1
    ticket = Client(app, {})
    login = ticket.ok("POST", "/access/ticket", username="root@pam", password=app.auth._password)
    root = Client(app, {"cookie": f"PVEAuthCookie={login['ticket']}",
                        "csrfpreventiontoken": login["CSRFPreventionToken"]})
    assert root.task("POST", "/nodes/pve1/lxc", vmid=9001, ostemplate=f"local:vztmpl/{TEMPLATE}",
                     rootfs="local-lvm:8", unprivileged=0)["exitstatus"] == "OK"
    assert "unprivileged" not in root.ok("GET", "/nodes/pve1/lxc/9001/config")


def test_rule_create_unshifts_and_moveto_moves(app: App, api: Client) -> None:
    create(api)
    fw = "/nodes/pve1/lxc/9000/firewall/rules"
    for port in ("1", "2", "3"):
        api.ok("POST", fw, type="in", action="ACCEPT", proto="tcp", dport=port, pos=99, enable=1)
    assert [r["dport"] for r in api.ok("GET", fw)] == ["3", "2", "1"]
    api.ok("PUT", f"{fw}/0", moveto=3)
    assert [r["dport"] for r in api.ok("GET", fw)] == ["2", "1", "3"]


def test_locks_fail_inside_the_task_and_mounted_is_tolerated(app: App, api: Client) -> None:
    create(api)
    api.ok("PUT", "/nodes/pve1/lxc/9000/config", lock="mounted")
    assert api.task("POST", "/nodes/pve1/lxc/9000/status/start")["exitstatus"] == "OK"
    api.ok("PUT", "/nodes/pve1/lxc/9000/config", lock="backup")
    rec = api.task("POST", "/nodes/pve1/lxc/9000/status/stop")
    assert rec["exitstatus"] == "CT is locked (backup)"
    status, body = api("POST", "/nodes/pve1/lxc/9000/status/stop", skiplock=1)
    assert status == 400 and body["errors"] == {"skiplock": "Only root may use this option."}


def test_backup_of_several_guests_is_invisible_to_the_vmid_filter(app: App, api: Client) -> None:
    create(api)
    upid = backup_fault.lock(app.state, 9000, multi=True)
    assert ":vzdump::root@pam:" in upid
    assert api.ok("GET", "/nodes/pve1/lxc/9000/config")["lock"] == "backup"
    assert api.ok("GET", "/nodes/pve1/tasks", source="active", vmid=9000) == []
    running = api.ok("GET", "/nodes/pve1/tasks", source="active", typefilter="vzdump")
    assert [t["upid"] for t in running] == [upid]
    backup_fault.release(app.state)
    assert "lock" not in api.ok("GET", "/nodes/pve1/lxc/9000/config")
    assert api.ok("GET", f"/nodes/pve1/tasks/{upid}/status")["exitstatus"] == "OK"
    single = backup_fault.lock(app.state, 9000, multi=False)
    assert [t["upid"] for t in api.ok("GET", "/nodes/pve1/tasks", source="active", vmid=9000)] == [single]
    assert json.loads(app.state.faults.read_text())["backup_locks"][0]["upid"] == single


def test_hostname_on_a_running_container_is_config_only_until_start(app: App, api: Client) -> None:
    create(api, start=1)
    calls = app.backend.calls  # type: ignore[attr-defined]
    api.ok("PUT", "/nodes/pve1/lxc/9000/config", hostname="renamed")
    assert api.ok("GET", "/nodes/pve1/lxc/9000/config", current=1)["hostname"] == "renamed"
    calls.clear()
    api.task("POST", "/nodes/pve1/lxc/9000/status/reboot")
    assert calls[:2] == [("update", 9000), ("start", 9000)]  # guest files written before the start
