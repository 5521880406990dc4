"""The container itself: phase spec + Proxmox GET config -> create / live / restart / recreate calls."""

from __future__ import annotations

import pytest

from psa_provision import phases
from psa_provision.changes import ApiCall, Noop
from psa_provision.errors import InputError
from psa_provision.packaged import PHASES_DIR
from psa_provision.services.container import component as container

SPEC = phases.load_phase("phase0", PHASES_DIR).containers[0]
KW: dict[str, object] = {"node": "pve1",
                         "template_volid": "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
                         "ssh_public_key": "ssh-ed25519 AAAA test", "nameserver": "10.0.20.1"}
# What PVE's GET /nodes/pve1/lxc/200/config returns for the seed's container.
CURRENT: dict[str, object] = {
    "arch": "amd64", "cores": 16, "digest": "d1g3st", "features": "nesting=1", "hostname": "psa-all-in-one",
    "memory": 65536, "nameserver": "10.0.20.1", "onboot": 1, "ostype": "debian", "swap": 8192,
    "net0": "name=eth0,bridge=vmbr20,gw=10.0.20.1,hwaddr=BC:24:11:AA:BB:CC,ip=10.0.20.100/24,type=veth",
    "rootfs": "local-lvm:vm-200-disk-0,size=1000G", "unprivileged": 1,
}


def plan(current: dict[str, object] | None, force: bool = False) -> list[object]:
    return list(container.plan(SPEC, current, force=force, **KW))  # type: ignore[arg-type]


def test_absent_container_is_created_with_the_seed_parameters() -> None:
    (call,) = plan(None)
    assert isinstance(call, ApiCall)
    assert (call.method, call.path, call.effect) == ("POST", "/nodes/pve1/lxc", "create")
    assert call.params == {
        "vmid": 200, "ostemplate": KW["template_volid"], "hostname": "psa-all-in-one", "cores": 16,
        "memory": 65536, "swap": 8192, "rootfs": "local-lvm:1000",
        "net0": "name=eth0,bridge=vmbr20,ip=10.0.20.100/24,gw=10.0.20.1", "nameserver": "10.0.20.1",
        "features": "nesting=1", "unprivileged": 1, "onboot": 1, "ssh-public-keys": "ssh-ed25519 AAAA test"}
    assert "ssh-public-keys" not in call.diff


def test_matching_container_is_a_noop() -> None:
    assert [type(c) for c in plan(CURRENT)] == [Noop]


def test_memory_change_is_live_and_carries_the_digest() -> None:
    (call,) = plan({**CURRENT, "memory": 32768, "cores": 8})
    assert isinstance(call, ApiCall) and call.effect == "live" and call.method == "PUT"
    assert call.params == {"memory": 65536, "cores": 16, "digest": "d1g3st"}
    assert call.diff == {"memory": (32768, 65536), "cores": (8, 16)}


def test_nameserver_needs_restart_and_net_change_keeps_the_mac() -> None:
    (call,) = plan({**CURRENT, "nameserver": "10.0.10.1",
                    "net0": CURRENT["net0"].replace("10.0.20.100", "10.0.20.99")})  # type: ignore[union-attr]
    assert isinstance(call, ApiCall) and call.effect == "restart"
    assert "hwaddr=BC:24:11:AA:BB:CC" in str(call.params["net0"])
    assert "ip=10.0.20.100/24" in str(call.params["net0"])


def test_bigger_rootfs_is_a_live_resize() -> None:
    (call,) = plan({**CURRENT, "rootfs": "local-lvm:vm-200-disk-0,size=500G"})
    assert isinstance(call, ApiCall) and call.path == "/nodes/pve1/lxc/200/resize"
    assert call.params == {"disk": "rootfs", "size": "1000G"}


@pytest.mark.parametrize("change", [{"unprivileged": 0}, {"rootfs": "local-lvm:vm-200-disk-0,size=2T"},
                                    {"rootfs": "other:vm-200-disk-0,size=1000G"}])
def test_recreate_refused_without_force(change: dict[str, object]) -> None:
    with pytest.raises(InputError, match="--force"):
        plan({**CURRENT, **change})
    calls = plan({**CURRENT, **change}, force=True)
    assert [(c.method, c.effect) for c in calls if isinstance(c, ApiCall)] == [
        ("DELETE", "recreate"), ("POST", "create")]


# -- what only a real Proxmox shows ----------------------------------------------------------------------
PRIVILEGED = SPEC.model_copy(update={"unprivileged": False, "features": {}})


def test_a_privileged_container_converges_although_its_config_has_no_unprivileged_key() -> None:
    # create keeps `unprivileged` only when it is 1 (pve-container API2/LXC.pm create_vm)
    current = {k: v for k, v in CURRENT.items() if k not in ("unprivileged", "features")}
    changes = container.plan(PRIVILEGED, current, **KW)  # type: ignore[arg-type]
    assert [type(c) for c in changes] == [Noop]
    with pytest.raises(InputError, match="unprivileged"):
        container.plan(SPEC, current, **KW)  # type: ignore[arg-type]


def test_a_privileged_container_is_created_without_any_features_key() -> None:
    (call,) = container.plan(PRIVILEGED, None, **KW)  # type: ignore[arg-type]
    assert isinstance(call, ApiCall) and "features" not in call.params and call.params["unprivileged"] == 0


def test_a_hostname_change_needs_a_restart_the_guest_gets_it_only_at_start() -> None:
    (call,) = plan({**CURRENT, "hostname": "old-name"})
    assert isinstance(call, ApiCall) and call.effect == "restart" and call.params["hostname"] == SPEC.hostname


def test_pending_changes_of_a_run_that_died_before_its_reboot_are_finished_with_a_reboot() -> None:
    (call,) = container.plan(SPEC, CURRENT, pending={"nameserver"}, **KW)  # type: ignore[arg-type]
    assert isinstance(call, ApiCall)
    assert (call.method, call.path, call.effect) == ("POST", "/nodes/pve1/lxc/200/status/reboot", "restart")
    (put,) = container.plan(SPEC, {**CURRENT, "memory": 1024}, pending={"nameserver"},  # type: ignore[arg-type]
                            **KW)
    assert isinstance(put, ApiCall) and put.method == "PUT" and put.effect == "restart"


def test_pending_is_read_as_the_next_start_will_see_the_config() -> None:
    from psa_provision.proxmox import ProxmoxClient

    class Fake:
        def request(self, method: str, path: str, params: object = None) -> object:
            assert (method, path) == ("GET", "/nodes/pve1/lxc/200/pending")
            return [{"key": "digest", "value": "d1"}, {"key": "hostname", "value": "psa-all-in-one"},
                    {"key": "nameserver", "value": "10.0.20.1", "pending": "10.0.20.2"},
                    {"key": "searchdomain", "value": "lan", "delete": 1}]

    config, pending = ProxmoxClient.container_pending(Fake(), "pve1", 200)  # type: ignore[arg-type]
    assert config == {"digest": "d1", "hostname": "psa-all-in-one", "nameserver": "10.0.20.2"}
    assert pending == {"nameserver", "searchdomain"}
