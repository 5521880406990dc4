"""access.py with a fake client: privileges as Proxmox reports them, datacenter firewall, backup locks."""

from __future__ import annotations

from typing import Any

import pytest

from psa_provision import access, privileges
from psa_provision.errors import ProxmoxAuthError
from psa_provision.proxmox import ApiSettings, ProxmoxClient


class FakePx(ProxmoxClient):
    """GET answers by path (+ the params of the last call); permissions by path."""

    def __init__(self, dump: dict[str, dict[str, int]], by_path: dict[str, dict[str, int]] | None = None,
                 answers: dict[str, Any] | None = None) -> None:
        self.dump, self.by_path, self.answers = dump, by_path or {}, answers or {}
        self.settings = ApiSettings(host="pve", token_name="psa", user="root@pam")
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def permission_dump(self) -> dict[str, dict[str, int]]:
        return self.dump

    def permissions(self, path: str) -> set[str]:
        self.calls.append(("GET", "/access/permissions", {"path": path}))
        return set(self.by_path.get(path, {}))

    def request(self, method: str, path: str, params: dict[str, Any] | None = None) -> Any:
        self.calls.append((method, path, params or {}))
        return self.answers.get(path)


def test_missing_names_each_privilege_and_path_and_asks_a_path_before_calling_it_missing() -> None:
    # the dump has no /pool entry to show it; asked on its own, /vms/200 holds VM.Allocate via a pool
    px = FakePx({"/vms": {"VM.Audit": 1}}, by_path={"/vms/200": {"VM.Audit": 1, "VM.Allocate": 0}})
    acc = access.Access(px)  # type: ignore[arg-type]
    assert acc.missing({"/vms/200": {"VM.Audit", "VM.Allocate"}}) == []
    assert acc.missing({"/vms/201": {"VM.Audit", "VM.Snapshot"}}) == [("VM.Audit", "/vms/201"),
                                                                       ("VM.Snapshot", "/vms/201")]
    with pytest.raises(ProxmoxAuthError, match=r"lacks VM.Audit on /vms/201; VM.Snapshot on /vms/201"):
        access.require(acc, {"/vms/201": {"VM.Audit", "VM.Snapshot"}}, note=lambda _: None)


def test_a_privilege_the_dump_shows_is_not_asked_again() -> None:
    px = FakePx({"/vms": {"VM.Audit": 1, "VM.PowerMgmt": 1}})
    acc = access.Access(px)  # type: ignore[arg-type]
    assert acc.missing({"/vms/200": {"VM.Audit"}}) == []
    assert px.calls == []


def test_datacenter_firewall_on_is_left_alone() -> None:
    px = FakePx({}, answers={"/cluster/firewall/options": {"enable": 1}})
    assert access.datacenter_firewall(px, access.Access(px)) is True  # type: ignore[arg-type]


def test_datacenter_firewall_options_already_read_are_not_read_again() -> None:
    px = FakePx({}, answers={"/cluster/firewall/options": {"enable": 0}})
    assert access.datacenter_firewall(px, access.Access(px), {"enable": 1}) is True  # type: ignore[arg-type]
    assert px.calls == []


def test_datacenter_firewall_off_is_refused_with_the_command_unless_the_token_has_sys_modify() -> None:
    px = FakePx({"/": {"Sys.Audit": 0}}, answers={"/cluster/firewall/options": {"enable": 0}})
    with pytest.raises(ProxmoxAuthError, match=r"Sys.Modify on /") as exc:
        access.datacenter_firewall(px, access.Access(px))  # type: ignore[arg-type]
    assert exc.value.hint is not None and privileges.DATACENTER_FIREWALL_COMMAND in exc.value.hint
    px = FakePx({"/": {"Sys.Audit": 0, "Sys.Modify": 0}}, answers={"/cluster/firewall/options": {}})
    assert access.datacenter_firewall(px, access.Access(px)) is False  # type: ignore[arg-type]


def test_a_backup_lock_names_the_running_backup_and_never_suggests_unlock() -> None:
    upid = "UPID:pve1:00001234:00005678:65000000:vzdump::root@pam:"  # several guests: empty id
    px = FakePx({}, answers={"/nodes/pve1/tasks": [{"upid": upid, "type": "vzdump", "id": ""}]})
    err = access.lock_diagnosis(px, "pve1", 200, "backup")  # type: ignore[arg-type]
    assert upid in err.message and "pct unlock" not in (err.hint or "") + err.message
    assert px.calls == [("GET", "/nodes/pve1/tasks", {"typefilter": "vzdump", "source": "active"})]


def test_a_lock_without_any_task_suggests_unlock() -> None:
    px = FakePx({}, answers={"/nodes/pve1/tasks": []})
    err = access.lock_diagnosis(px, "pve1", 200, "backup")  # type: ignore[arg-type]
    assert "pct unlock 200" in (err.hint or "")


def test_own_path_grants_are_those_destroy_would_delete() -> None:
    px = FakePx({"/vms": {"VM.Audit": 1}, "/vms/210": {"VM.Allocate": 0}})
    assert access.Access(px).own_path_grants([200, 210]) == [210]  # type: ignore[arg-type]
