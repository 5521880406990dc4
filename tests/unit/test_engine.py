"""engine.py pure bits: our marker, create params, where-things-are rows."""

from __future__ import annotations

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
