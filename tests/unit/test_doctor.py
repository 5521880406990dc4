"""doctor's checks against a fake Proxmox: a ready site passes, each fault is named, exit status follows."""

from __future__ import annotations

from typing import Any

from psa_provision import privileges
from psa_provision.commands import doctor
from psa_provision.packaged import SANDBOX_INVENTORY
from psa_provision.proxmox import ApiSettings, ProxmoxClient

INVENTORY = SANDBOX_INVENTORY
TEMPLATE = "debian-12-standard_12.7-1_amd64.tar.zst"
ROLE = dict.fromkeys(privileges.ROLE_PRIVILEGES, 1)
ALL = {"/vms": ROLE, "/storage": ROLE,
       "/sdn/zones/localnetwork": {"SDN.Use": 1}, "/nodes": {"Sys.Audit": 1}, "/": {"Sys.Audit": 0}}


class FakePx(ProxmoxClient):
    def __init__(self, *, dump: dict[str, dict[str, int]] | None = None, node_status: str = "online",
                 bridges: tuple[str, ...] = ("vmbr20", "vmbr30"), firewall_on: bool = True,
                 guests: list[dict[str, Any]] | None = None) -> None:
        self.settings = ApiSettings(host="127.0.0.1", user="root@pam", token_name="psa-provision")
        self.dump = ALL if dump is None else dump
        self.node_status, self._bridges, self.firewall_on = node_status, bridges, firewall_on
        self.guests = guests or []
        self.writes = 0

    def cluster_resources(self) -> list[dict[str, Any]]:
        nodes = [{"type": "node", "node": n, "status": self.node_status} for n in ("pve1", "pve2", "pve3")]
        storages = [{"type": "storage", "node": n, "storage": s, "content": c}
                    for n in ("pve1", "pve2", "pve3")
                    for s, c in (("local", "vztmpl,iso,backup"), ("local-lvm", "rootdir,images"))]
        return nodes + storages + self.guests

    def permission_dump(self) -> dict[str, dict[str, int]]:
        return self.dump

    def permissions(self, path: str) -> set[str]:
        from psa_provision.proxmox import inherited_privileges

        return inherited_privileges(self.dump, path)

    def request(self, method: str, path: str, params: Any = None) -> Any:
        assert method == "GET", "doctor writes nothing"
        assert path == "/cluster/firewall/options"
        return {"enable": int(self.firewall_on)}

    def templates(self, node: str, storage: str) -> list[str]:
        return [f"{storage}:vztmpl/{TEMPLATE}"]

    def available_templates(self, node: str) -> list[str]:
        return [TEMPLATE]

    def bridges(self, node: str) -> list[str]:
        return list(self._bridges)

    def container_pending(self, node: str, vmid: int) -> tuple[dict[str, Any], set[str]]:
        return {"hostname": "someone-else", "tags": ""}, set()


def run(px: FakePx, phase: str = "phase1") -> list[doctor.Check]:
    return doctor.run(INVENTORY, phase, connect_to=lambda _inv: px,  # type: ignore[arg-type,return-value]
                      reach=lambda host, port: (True, "TCP 22 open"))


def failed(checks: list[doctor.Check]) -> list[str]:
    return [c.detail for c in checks if c.status == "fail"]


def test_a_ready_site_has_no_blocker_and_shows_the_tls_ca_in_use() -> None:
    checks = run(FakePx())
    assert failed(checks) == [] and not doctor.blocked(checks)
    api = next(c for c in checks if c.name == "API")
    assert "CA file /var/lib/pvesim/ca/ca.pem" in api.detail
    assert {c.name for c in checks} >= {"phase files", "privileges", "datacenter firewall", "node pve1",
                                        "storage local-lvm on pve1", "template on pve1",
                                        "bridge vmbr20 on pve1", "vmid 100", "SSH path"}


def test_a_role_without_vm_snapshot_names_the_privilege_and_path() -> None:
    dump = {**ALL, "/vms": {k: v for k, v in ALL["/vms"].items() if k != "VM.Snapshot"}}
    fails = failed(run(FakePx(dump=dump), "phase0"))
    assert fails == ["root@pam!psa-provision lacks VM.Snapshot on /vms/200 (snapshot before each migration "
                     "step; needed by migrate, doctor)"]


def test_hidden_bridge_offline_node_taken_vmid_and_firewall_off_are_blockers() -> None:
    guest = {"type": "lxc", "vmid": 100, "node": "pve1", "status": "running"}
    checks = run(FakePx(node_status="offline", bridges=("vmbr20",), firewall_on=False, guests=[guest]))
    text = "\n".join(failed(checks))
    assert "not online" in text
    assert "bridge vmbr30 is not visible on node pve1" in text and "SDN.Use" in text
    assert "vmid 100 is taken by container 'someone-else'" in text
    assert privileges.DATACENTER_FIREWALL_COMMAND in text
    assert doctor.blocked(checks)


def test_no_ssh_path_is_a_blocker() -> None:
    checks = doctor.run(INVENTORY, "phase0", connect_to=lambda _inv: FakePx(),  # type: ignore[arg-type,return-value]
                        reach=lambda host, port: (False, f"no path to {host}:{port}"))
    assert failed(checks) == ["guests' network via 10.0.20.1: no path to 10.0.20.1:22"]
