"""The machinery under the commands, its pure bits: our marker, create params, where-things-are rows,
privileges, facts gathered ahead, refusals."""

from __future__ import annotations

from typing import Any

from psa_provision import facts_ahead, planner, preflight, refusals
from psa_provision import site as site_mod
from psa_provision.changes import ApiCall, Noop
from psa_provision.commands import up as up_cmd
from psa_provision.inventory import load_inventory
from psa_provision.packaged import PHASES_DIR, SANDBOX_INVENTORY
from psa_provision.phases import load_phase
from psa_provision.secrets import Secrets


def test_is_ours_reads_tags_or_description() -> None:
    assert site_mod.is_ours({"tags": "web;psa-provision"})
    assert site_mod.is_ours({"tags": "psa-provision"})
    assert site_mod.is_ours({"description": "psa-provision: phase0"})
    assert not site_mod.is_ours({"tags": "web", "description": "made by hand"})
    assert not site_mod.is_ours({})


def test_create_gets_the_marker_other_calls_do_not() -> None:
    create = ApiCall("ct", "container", "create", action="create", node="pve1",
                     params={"vmid": 200}, effect="create")
    update = ApiCall("ct", "container", "update", node="pve1", vmid=200, params={"cores": 2})
    marked = planner.marked(create, "phase0")
    assert isinstance(marked, ApiCall)
    assert marked.params == {"vmid": 200, "tags": "psa-provision", "description": "psa-provision: phase0"}
    assert planner.marked(update, "phase0") is update
    noop = Noop("ct", "container", "ok")
    assert planner.marked(noop, "phase0") is noop


def test_endpoints_name_every_service_url() -> None:
    phase = load_phase("phase0", PHASES_DIR)
    inventory = SANDBOX_INVENTORY
    site = site_mod.Site(load_inventory(inventory), inventory, phase, Secrets({}))
    rows = dict(up_cmd.endpoints(site))
    assert rows["container 200 psa-all-in-one"] == "ssh root@10.0.20.100"
    assert rows["tickets (x4)"] == "http://10.0.20.100:3030/health"
    assert len(rows) == 1 + len(phase.services)


def test_privileges_needed_depend_on_create_or_reconcile() -> None:
    phase = load_phase("phase0", PHASES_DIR)
    inventory = SANDBOX_INVENTORY
    site = site_mod.Site(load_inventory(inventory), inventory, phase, Secrets({}))
    spec = phase.container(200)
    fresh = preflight.required_privileges(site, "up", creating=[spec])
    assert fresh["/vms/200"] == {"VM.Allocate", "VM.PowerMgmt", "VM.Audit", "VM.Config.CPU",
                                 "VM.Config.Memory", "VM.Config.Disk", "VM.Config.Network",
                                 "VM.Config.Options"}
    assert fresh["/storage/local-lvm"] == {"Datastore.AllocateSpace", "Datastore.Audit"}
    assert fresh["/sdn/zones/localnetwork/vmbr20"] == {"SDN.Use"}
    assert fresh["/nodes/pve1"] == {"Sys.Audit"}
    assert "/" not in fresh  # one container: no firewall, so no datacenter options read
    existing = preflight.required_privileges(site, "up", creating=[])
    assert "VM.Allocate" not in existing["/vms/200"]
    assert {"VM.Config.CPU", "VM.Config.Memory"} <= existing["/vms/200"]
    planning = preflight.required_privileges(site, "plan", creating=[spec])
    assert planning["/vms/200"] == {"VM.Audit"}


def test_a_privileged_container_to_create_needs_sys_modify_on_root() -> None:
    phase = load_phase("phase0", PHASES_DIR)
    inventory = SANDBOX_INVENTORY
    site = site_mod.Site(load_inventory(inventory), inventory, phase, Secrets({}))
    spec = phase.container(200).model_copy(update={"unprivileged": False})
    assert preflight.required_privileges(site, "up", creating=[spec])["/"] == {"Sys.Modify"}
    assert "/" not in preflight.required_privileges(site, "up", creating=[])


def test_phases_of_several_containers_need_sys_audit_on_root_for_the_datacenter_firewall() -> None:
    phase = load_phase("phase1", PHASES_DIR)
    inventory = SANDBOX_INVENTORY
    site = site_mod.Site(load_inventory(inventory), inventory, phase, Secrets({}))
    assert preflight.required_privileges(site, "plan", creating=[])["/"] == {"Sys.Audit"}


class _FakeConn:
    def __init__(self, name: str) -> None:
        self.name, self.closed = name, 0

    def close(self) -> None:
        self.closed += 1


def test_facts_ahead_start_early_only_where_we_pinned_a_host_key_and_use_them_only_if_untouched(
        tmp_path: Any, monkeypatch: Any) -> None:
    import threading

    import paramiko

    from psa_provision.errors import ConnectionFailed

    phase = load_phase("phase1", PHASES_DIR)
    inventory = SANDBOX_INVENTORY
    site = site_mod.Site(load_inventory(inventory), inventory, phase, Secrets({}))
    pinned, second, failing, stopped, slow = phase.containers
    known = tmp_path / "known_hosts"
    keys = paramiko.HostKeys()
    for spec in (pinned, stopped):
        keys.add(spec.ip, "ecdsa-sha2-nistp256", paramiko.ECDSAKey.generate())
    keys.save(str(known))
    monkeypatch.setattr(facts_ahead, "known_hosts", lambda inv: known)
    opened: dict[str, _FakeConn] = {}
    monkeypatch.setattr(facts_ahead, "ssh_connection",
                        lambda inv, spec: opened.setdefault(spec.hostname, _FakeConn(spec.hostname)))
    release = threading.Event()

    def gather(conn: Any, phase_: Any, spec: Any, secrets: Any) -> tuple[str, bool]:
        if spec is failing:
            raise ConnectionFailed("no route")
        if spec is stopped:  # a stopped container's address: fails only after seconds
            release.wait(10)
            raise ConnectionFailed("no route to host")
        return f"facts of {spec.hostname}", True

    monkeypatch.setattr(facts_ahead, "gather_facts_and_health", gather)
    conns = {c.hostname: _FakeConn("run's own") for c in phase.containers}
    states = [preflight.ContainerState(c, {"hostname": c.hostname}, running=c is not stopped)
              for c in phase.containers]
    with facts_ahead.FactsAhead(site, conns, health=True) as ahead:  # type: ignore[arg-type]
        ahead.start_known()
        assert set(ahead._futures) == {pinned.hostname, stopped.hostname}  # the others: after preflight
        for state in states:
            ahead.start(state)
        assert set(ahead._futures) == {c.hostname for c in phase.containers}
        assert ahead.take(pinned.hostname, usable=True) == (f"facts of {pinned.hostname}", True)
        assert conns[pinned.hostname] is opened[pinned.hostname]  # its connection serves the run
        assert opened[pinned.hostname].closed == 0
        ahead._futures[second.hostname].result(5)
        assert ahead.take(second.hostname, usable=False) is None  # e.g. the container is restarted
        assert opened[second.hostname].closed == 1 and conns[second.hostname].name == "run's own"
        assert ahead.take(failing.hostname, usable=True) is None  # failed: gathered again, reported then
        attempt = ahead._futures[stopped.hostname]
        assert ahead.take(stopped.hostname, usable=False) is None
        assert not attempt.done()  # not waited for: it fails seconds later, in the background
    release.set()
    assert ahead.take(slow.hostname, usable=True) is None  # dropped when the run ended


def test_features_only_root_at_pam_may_set_are_refused_at_validation_for_a_token(tmp_path: Any) -> None:
    import shutil

    import pytest

    from psa_provision.errors import InputError

    phases_dir = tmp_path / "phases"
    shutil.copytree(PHASES_DIR, phases_dir)
    text = (phases_dir / "phase0.yml").read_text(encoding="utf-8")
    assert "nesting: 1" in text
    (phases_dir / "phase0.yml").write_text(text.replace("nesting: 1", "nesting: 1, keyctl: 1"),
                                           encoding="utf-8")
    inv = load_inventory(SANDBOX_INVENTORY)
    inv = inv.model_copy(update={"phases_dir": phases_dir})
    assert inv.proxmox.auth.kind == "token"
    phase = load_phase("phase0", phases_dir)
    with pytest.raises(InputError, match=r"phase0.yml:\d+: container 200: features other than "
                                         r"nesting \(keyctl\).*root@pam"):
        refusals.refuse_root_only(inv, phase)
    refusals.refuse_root_only(inv, load_phase("phase0", PHASES_DIR))  # nesting alone is fine
