"""engine.py pure bits: our marker, create params, where-things-are rows."""

from __future__ import annotations

from typing import Any

from psa_provision import engine
from psa_provision.inventory import REPO_ROOT, load_inventory
from psa_provision.phases import load_phase
from psa_provision.plan import ApiCall, Noop
from psa_provision.secrets import Secrets


def test_is_ours_reads_tags_or_description() -> None:
    assert engine.is_ours({"tags": "web;psa-provision"})
    assert engine.is_ours({"tags": "psa-provision"})
    assert engine.is_ours({"description": "psa-provision: phase0"})
    assert not engine.is_ours({"tags": "web", "description": "made by hand"})
    assert not engine.is_ours({})


def test_create_gets_the_marker_other_calls_do_not() -> None:
    create = ApiCall("ct", "container", "create", method="POST", path="/nodes/pve1/lxc",
                     params={"vmid": 200}, effect="create")
    update = ApiCall("ct", "container", "update", path="/nodes/pve1/lxc/200/config", params={"cores": 2})
    marked = engine._marked(create, "phase0")
    assert isinstance(marked, ApiCall)
    assert marked.params == {"vmid": 200, "tags": "psa-provision", "description": "psa-provision: phase0"}
    assert engine._marked(update, "phase0") is update
    noop = Noop("ct", "container", "ok")
    assert engine._marked(noop, "phase0") is noop


def test_endpoints_name_every_service_url() -> None:
    phase = load_phase("phase0", REPO_ROOT / "phases")
    inventory = REPO_ROOT / "inventories" / "sandbox.yml"
    site = engine.Site(load_inventory(inventory), inventory, phase, Secrets({}))
    rows = dict(engine.endpoints(site))
    assert rows["container 200 psa-all-in-one"] == "ssh root@10.0.20.100"
    assert rows["tickets (x4)"] == "http://10.0.20.100:3030/health"
    assert len(rows) == 1 + len(phase.services)


def test_privileges_needed_depend_on_create_or_reconcile() -> None:
    phase = load_phase("phase0", REPO_ROOT / "phases")
    inventory = REPO_ROOT / "inventories" / "sandbox.yml"
    site = engine.Site(load_inventory(inventory), inventory, phase, Secrets({}))
    spec = phase.container(200)
    fresh = engine.required_privileges(site, [engine.ContainerState(spec, None)])
    assert fresh["/vms/200"] == {"VM.Allocate", "VM.PowerMgmt", "VM.Audit"}
    assert fresh["/storage/local-lvm"] == {"Datastore.AllocateSpace"}
    existing = engine.required_privileges(site, [engine.ContainerState(spec, {"hostname": spec.hostname})])
    assert "VM.Allocate" not in existing["/vms/200"]
    assert {"VM.Config.CPU", "VM.Config.Memory"} <= existing["/vms/200"]


class _FakeConn:
    def __init__(self, known_hosts: object) -> None:
        self.known_hosts, self.closed = known_hosts, 0

    def close(self) -> None:
        self.closed += 1


def test_facts_ahead_start_early_only_where_we_pinned_a_host_key_and_use_them_only_if_untouched(
        tmp_path: Any, monkeypatch: Any) -> None:
    import paramiko

    from psa_provision.errors import ConnectionFailed

    phase = load_phase("phase1", REPO_ROOT / "phases")
    inventory = REPO_ROOT / "inventories" / "sandbox.yml"
    site = engine.Site(load_inventory(inventory), inventory, phase, Secrets({}))
    known = tmp_path / "known_hosts"
    pinned = phase.containers[0]
    keys = paramiko.HostKeys()
    keys.add(pinned.ip, "ecdsa-sha2-nistp256", paramiko.ECDSAKey.generate())
    keys.save(str(known))
    conns = {c.hostname: _FakeConn(known) for c in phase.containers}
    asked: list[str] = []

    def gather(conn: Any, phase_: Any, spec: Any) -> tuple[str, bool]:
        asked.append(spec.hostname)
        if spec.hostname == phase.containers[2].hostname:
            raise ConnectionFailed("no route")
        return f"facts of {spec.hostname}", True

    monkeypatch.setattr(engine, "gather_facts_and_health", gather)
    states = [engine.ContainerState(c, {"hostname": c.hostname}, running=i != 3)
              for i, c in enumerate(phase.containers)]
    with engine.FactsAhead(site, conns, health=True) as ahead:  # type: ignore[arg-type]
        ahead.start_known()
        assert set(ahead._futures) == {pinned.hostname}  # the others: not before preflight saw them
        for state in states:
            ahead.start(state)
        assert ahead.take(pinned.hostname, usable=True) == (f"facts of {pinned.hostname}", True)
        assert conns[pinned.hostname].closed == 0  # its connection stays open for the rest of the run
        second = phase.containers[1].hostname
        assert ahead.take(second, usable=False) is None and conns[second].closed == 1  # e.g. restarted
        third = phase.containers[2].hostname
        assert ahead.take(third, usable=True) is None and conns[third].closed == 1  # failed: gather again
        stopped = phase.containers[3].hostname
        assert ahead.take(stopped, usable=False) is None and conns[stopped].closed == 0  # never asked
    assert sorted(asked) == sorted(c.hostname for i, c in enumerate(phase.containers) if i != 3)
    assert asked.count(pinned.hostname) == 1  # started early, not again when preflight saw it running
