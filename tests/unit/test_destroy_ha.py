"""`destroy` of a high-availability phase against pvesim's API in-process (App.handle under the client's
HTTP seam, the in-memory backend of test_pvesim_api_logic): an HA resource's stop is a request the HA
manager carries out in a later round, so destroy waits for it before the delete, and the delete purges
the container from the HA resources and rules (PVE refuses to destroy an HA resource without purge)."""

# ruff: noqa: F811  (the fixture secrets comes from test_pvesim_api_logic)
from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_converged_cost import make_site
from test_pvesim_api_logic import TEMPLATE, Client, MemoryBackend, create, secrets, token  # noqa: F401

from psa_provision.commands import destroy as destroy_cmd
from psa_provision.errors import ProxmoxError
from psa_provision.output import Output
from psa_provision.proxmox import ApiSettings, ProxmoxClient
from psa_provision.proxmox.session import CallCounter
from psa_provision.site import MARKER
from pvesim import auth
from pvesim.ha_config import HaFiles
from pvesim.ha_manager import Crm
from pvesim.paths import StateDir
from pvesim.server import App


class InProcessPve(ProxmoxClient):
    """The typed client whose one HTTP call is pvesim's App.handle; `before(method, path)` runs first."""

    def __init__(self, app: App, headers: dict[str, str], before: Callable[[str, str], None]) -> None:
        super().__init__(api=None, settings=ApiSettings(host="pve.test", token_name="psa-provision",
                                                        user="root@pam"),
                         counter=CallCounter(), notify=lambda _: None)
        self.app, self.headers, self.before = app, headers, before

    def _send(self, method: str, path: str, params: dict[str, Any] | None) -> Any:
        self.before(method, path)
        status, _reason, body, _user = self.app.handle(method, path, dict(params or {}), self.headers)
        if status != 200:
            raise ProxmoxError(f"Proxmox API {method} {path}: {body['message']}")
        return body["data"]


def _settle(app: App) -> None:
    deadline = time.monotonic() + 10
    while any(t["status"] == "running" for t in app.tasks.all()):
        assert time.monotonic() < deadline, "tasks still running after 10 s"
        time.sleep(0.01)


def _pve(tmp_path: Path, secrets: dict[str, Any]) -> tuple[App, Client]:
    """pvesim's App on an in-memory backend with a template, and a token client of it."""
    state = StateDir(tmp_path / "pvesim")
    state.template_cache.mkdir(parents=True)
    (state.template_cache / TEMPLATE).write_bytes(b"not really a tarball")
    app = App(state, ["pve1", "pve2", "pve3"], MemoryBackend(), auth.Auth(secrets))
    return app, token(app, secrets)


def _watched(app: App, api: Client, monkeypatch: pytest.MonkeyPatch) -> tuple[InProcessPve, list[str]]:
    """destroy's client, and the calls it makes. A CRM round (and its tasks) runs before each read of
    a container's status, never between a stop request and the next call: PVE's CRM acts every 10 s."""
    crm = Crm(app)
    calls: list[str] = []

    def ha_manager_acts(method: str, path: str) -> None:
        calls.append(f"{method} {path}")
        if method == "GET" and path.endswith("/status/current"):
            crm.round()
            _settle(app)

    px = InProcessPve(app, api.headers, ha_manager_acts)
    monkeypatch.setattr(destroy_cmd, "connect", lambda inv: px)
    return px, calls


def test_destroy_stops_an_ha_resource_through_the_ha_manager_then_purges_it(
        tmp_path: Path, secrets: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    site = make_site(tmp_path / "site", "phase3")
    app, api = _pve(tmp_path, secrets)
    running, stopped = site.phase.containers[0], site.phase.containers[1]  # 100 on pve1, 101 on pve2
    create(api, running.vmid, running.node, tags=MARKER, start=1)
    create(api, stopped.vmid, stopped.node, tags=MARKER)
    api.ok("POST", "/cluster/ha/resources", sid=f"ct:{running.vmid}", state="started")
    api.ok("POST", "/cluster/ha/resources", sid=f"ct:{stopped.vmid}", state="stopped")
    api.ok("POST", "/cluster/ha/rules", rule="psa-postgresql-apart", type="resource-affinity",
           affinity="negative", resources=f"ct:{running.vmid},ct:{stopped.vmid}")
    px, calls = _watched(app, api, monkeypatch)
    got, targets, _notes = destroy_cmd.destroy_targets(site)
    assert got is px and [t.spec.vmid for t in targets] == [running.vmid, stopped.vmid]
    err = io.StringIO()
    summary = destroy_cmd.destroy(site, px, targets, Output(stdout=io.StringIO(), stderr=err))
    _settle(app)

    assert summary.changed == 2
    assert px.find_vmid(running.vmid) is None and px.find_vmid(stopped.vmid) is None
    ha = HaFiles(app.state.root)
    assert ha.read("resources").ids == {} and ha.read("rules").ids == {}
    writes = [call for call in calls if not call.startswith("GET")]
    assert writes == [f"POST /nodes/pve1/lxc/{running.vmid}/status/stop",  # a hastop task
                      f"DELETE /nodes/pve1/lxc/{running.vmid}", f"DELETE /nodes/pve2/lxc/{stopped.vmid}"]
    stops = [t for t in app.tasks.all() if t["id"] == str(running.vmid) and t["type"] in ("hastop", "vzstop")]
    # the tool's request, then the HA manager's stop (before the delete, which pvesim refuses otherwise)
    assert sorted((t["type"], t["user"]) for t in stops) == [("hastop", "root@pam!psa-provision"),
                                                             ("vzstop", "root@pam")]
    assert "stopping container 100 (an HA resource: through the HA manager)" in err.getvalue()
    assert "deleting container 101 and its HA resource" in err.getvalue()


def test_destroy_asks_every_ha_resource_to_stop_before_it_waits_for_any(
        tmp_path: Path, secrets: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The HA manager then stops them in the same rounds: a phase's destroy does not wait a round per
    container (33 of them took minutes)."""
    site = make_site(tmp_path / "site", "phase3")
    app, api = _pve(tmp_path, secrets)
    first, second = site.phase.containers[0], site.phase.containers[1]  # 100 on pve1, 101 on pve2
    for spec in (first, second):
        create(api, spec.vmid, spec.node, tags=MARKER, start=1)
        api.ok("POST", "/cluster/ha/resources", sid=f"ct:{spec.vmid}", state="started")
    px, calls = _watched(app, api, monkeypatch)
    _px, targets, _notes = destroy_cmd.destroy_targets(site)
    summary = destroy_cmd.destroy(site, px, targets, Output(stdout=io.StringIO(), stderr=io.StringIO()))
    _settle(app)
    assert summary.changed == 2
    assert px.find_vmid(first.vmid) is None and px.find_vmid(second.vmid) is None
    writes = [call for call in calls if not call.startswith("GET")]
    assert writes == [f"POST /nodes/pve1/lxc/{first.vmid}/status/stop",
                      f"POST /nodes/pve2/lxc/{second.vmid}/status/stop",
                      f"DELETE /nodes/pve1/lxc/{first.vmid}", f"DELETE /nodes/pve2/lxc/{second.vmid}"]
