"""rrddata through App.handle: a sampler fed by a stub backend and a stub host, rows that validate
against the schema's `returns`, parameter validation and the privileges the schema names."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, cast

import pytest

from pvesim import auth, handlers, schema  # noqa: F401 - handlers registers every endpoint
from pvesim.backend import Backend, BackendError, RuntimeStatus
from pvesim.paths import StateDir
from pvesim.rrd_sampler import Sampler, sampler_for
from pvesim.server import App

MIB = 1024 * 1024
CONF = "hostname: ct101\ncores: 2\nmemory: 512\nrootfs: local-lvm:vm-101-disk-0,size=4G\n"


class Clock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class StubBackend:
    """CT 101 running: CPU time grows half a second per second, 40 kB/s received."""

    def __init__(self, clock: Clock) -> None:
        self.clock, self.start = clock, clock.now

    def is_running(self, vmid: int) -> bool:
        return self.status(vmid).status == "running"

    def status(self, vmid: int) -> RuntimeStatus:
        if vmid != 101:
            raise BackendError(f"CT {vmid} does not exist")
        up = self.clock.now - self.start
        return RuntimeStatus("running", pid=4242, mem=200 * MIB, disk=MIB, cputime=0.5 * up,
                             netin=int(40_000 * up), netout=0, diskread=0, diskwrite=int(1000 * up))


class StubHost:
    def values(self) -> dict[str, float | None]:
        return {"loadavg": 0.5, "maxcpu": 2, "cpu": 0.1, "iowait": 0.0, "memtotal": 1024.0,
                "memused": 512.0, "netin": 0, "netout": 0}


def check_returns(spec: dict[str, Any], value: Any, path: str = "data") -> None:
    """Assert that `value` fits a PVE `returns` schema (types, properties, optional)."""
    kinds: dict[str, type | tuple[type, ...]] = {
        "array": list, "object": dict, "string": str, "boolean": int, "integer": int,
        "number": (int, float), "null": type(None)}
    typ = spec.get("type")
    if typ is not None:
        assert isinstance(value, kinds[typ]), f"{path}: {value!r} is not {typ}"
    if typ == "array":
        for i, item in enumerate(value):
            check_returns(spec.get("items", {}), item, f"{path}[{i}]")
    if typ == "object":
        for name, prop in spec.get("properties", {}).items():
            if name in value:
                check_returns(prop, value[name], f"{path}.{name}")
            else:
                assert prop.get("optional"), f"{path}.{name} missing"
        if spec.get("additionalProperties") == 0:
            assert set(value) <= set(spec.get("properties", {})), path


@pytest.fixture
def app(tmp_path: Path) -> tuple[App, dict[str, Any], Clock]:
    clock = Clock(int(time.time() // 60) * 60 - 600)  # ten minutes of samples up to about now
    state = StateDir(tmp_path)
    state.lxc_conf("pve1", 101).parent.mkdir(parents=True)
    state.lxc_conf("pve1", 101).write_text(CONF)
    secrets = auth.new_secrets()
    app = App(state, ["pve1", "pve2"], cast(Backend, StubBackend(clock)), auth.Auth(secrets))
    return app, secrets, clock


def get(app: App, secrets: dict[str, Any], url: str, **params: Any) -> tuple[int, dict[str, Any]]:
    headers = {"authorization": f"PVEAPIToken=root@pam!psa-provision={secrets['tokens']['psa-provision']}"}
    status, _reason, body, _user = app.handle("GET", url, params, headers)
    return status, body


def sampled(app: App, clock: Clock, seconds: int = 600) -> Sampler:
    sampler = sampler_for(app)
    sampler.clock, sampler.host = clock, cast(Any, StubHost())
    for _ in range(seconds // 10 + 1):
        sampler.sample()
        clock.now += 10
    return sampler


def test_container_rows_validate_and_carry_cpu_of_its_cores_mem_and_rates(app: Any) -> None:
    app, secrets, clock = app
    sampled(app, clock)
    status, body = get(app, secrets, "/nodes/pve1/lxc/101/rrddata", timeframe="hour")
    assert status == 200, body
    spec = schema.endpoints()["/nodes/{node}/lxc/{vmid}/rrddata"]["GET"]["returns"]
    check_returns(spec, body["data"])
    rows = [r for r in body["data"] if "mem" in r]
    assert len(rows) >= 8
    assert all(r["time"] % 60 == 0 for r in body["data"])
    full = rows[1:]  # the first minute has no cpu delta yet
    assert {r["cpu"] for r in full} == {0.25}  # 0.5 s of CPU per second over 2 cores
    assert {r["mem"] for r in rows} == {200 * MIB}
    assert {r["maxcpu"] for r in rows} == {2} and {r["maxmem"] for r in rows} == {512 * MIB}
    assert {r["netin"] for r in full} == {40_000} and {r["diskwrite"] for r in full} == {1000}
    status, body = get(app, secrets, "/nodes/pve1/lxc/101/rrddata", timeframe="day", cf="MAX")
    assert status == 200 and len(body["data"]) >= 1400


def test_node_rows_validate(app: Any) -> None:
    app, secrets, clock = app
    sampled(app, clock)
    status, body = get(app, secrets, "/nodes/pve2/rrddata", timeframe="decade")
    assert status == 200, body
    check_returns(schema.endpoints()["/nodes/{node}/rrddata"]["GET"]["returns"], body["data"])
    status, body = get(app, secrets, "/nodes/pve2/rrddata", timeframe="hour", cf="AVERAGE")
    assert [r["loadavg"] for r in body["data"] if "loadavg" in r][-1] == 0.5


def test_samples_persist_for_a_new_daemon(app: Any) -> None:
    app, secrets, clock = app
    sampled(app, clock)
    fresh = App(app.state, app.nodes, app.backend, app.auth)
    status, body = get(fresh, secrets, "/nodes/pve1/lxc/101/rrddata", timeframe="hour")
    assert status == 200 and any(r.get("mem") == 200 * MIB for r in body["data"])


@pytest.mark.parametrize(("url", "params", "bad"), [
    ("/nodes/pve1/lxc/101/rrddata", {"timeframe": "decade"}, "timeframe"),  # not in the LXC enum
    ("/nodes/pve1/lxc/101/rrddata", {}, "timeframe"),
    ("/nodes/pve1/rrddata", {"timeframe": "hour", "cf": "MIN"}, "cf"),
    ("/nodes/pve1/rrddata", {"timeframe": "hour", "ds": "cpu"}, "ds"),
])
def test_parameters_are_checked_against_the_schema(app: Any, url: str, params: dict[str, str],
                                                   bad: str) -> None:
    app, secrets, _clock = app
    status, body = get(app, secrets, url, **params)
    assert status == 400 and bad in body["errors"], body


def test_a_container_never_sampled_is_rrds_error_and_an_unknown_node_fails(app: Any) -> None:
    app, secrets, _clock = app
    status, body = get(app, secrets, "/nodes/pve1/lxc/999/rrddata", timeframe="hour")
    assert status == 500 and "pve-vm-9.0/999" in body["message"]
    status, body = get(app, secrets, "/nodes/nope/rrddata", timeframe="hour")
    assert status == 500 and "hostname lookup 'nope' failed" in body["message"]


def token_with(app: App, secrets: dict[str, Any], name: str, privs: str) -> dict[str, str]:
    """Headers of a new token of user `name`@pve whose role on / holds exactly `privs`."""
    root = {"authorization": f"PVEAPIToken=root@pam!psa-provision={secrets['tokens']['psa-provision']}"}

    def call(method: str, url: str, **params: Any) -> Any:
        status, _reason, body, _user = app.handle(method, url, params, root)
        assert status == 200, body
        return body["data"]

    call("POST", "/access/roles", roleid=f"Only{name}", privs=privs)
    call("POST", "/access/users", userid=f"{name}@pve")
    made = call("POST", f"/access/users/{name}@pve/token/tok", privsep=0)
    call("PUT", "/access/acl", path="/", roles=f"Only{name}", users=f"{name}@pve")
    return {"authorization": f"PVEAPIToken={name}@pve!tok={made['value']}"}


def test_privileges_are_vm_audit_and_sys_audit(app: Any) -> None:
    app, secrets, clock = app
    sampled(app, clock, seconds=120)
    only_sys = token_with(app, secrets, "sys", "Sys.Audit")
    only_vm = token_with(app, secrets, "vm", "VM.Audit")

    def get_as(headers: dict[str, str], url: str) -> tuple[int, dict[str, Any]]:
        status, _reason, body, _user = app.handle("GET", url, {"timeframe": "hour"}, headers)
        return status, body

    status, body = get_as(only_sys, "/nodes/pve1/lxc/101/rrddata")
    assert status == 403 and "VM.Audit" in body["message"]
    assert get_as(only_sys, "/nodes/pve1/rrddata")[0] == 200
    assert get_as(only_vm, "/nodes/pve1/rrddata")[0] == 403
    assert get_as(only_vm, "/nodes/pve1/lxc/101/rrddata")[0] == 200


@pytest.mark.parametrize(("limits", "cpus"), [("cores: 2\n", 2.0), ("cpulimit: 4\n", 4.0), ("", None)])
def test_status_cpu_is_a_fraction_of_the_containers_cpus(app: Any, limits: str, cpus: float | None) -> None:
    """vmstatus: `cpus` is cores, else cpulimit, else the host's; `cpu` is the time used over the time
    elapsed over `cpus` (half a core in use: 0.25 of two), as in the RRD rows."""
    app, secrets, _clock = app
    conf = app.state.lxc_conf("pve1", 101)
    kept = [line + "\n" for line in CONF.splitlines() if not line.startswith("cores:")]
    conf.write_text("".join(kept) + limits)
    cast(Any, app.backend).status = lambda vmid: RuntimeStatus("running", pid=4242, cpu=0.5)
    want = cpus or float(os.cpu_count() or 1)
    for url in ("/nodes/pve1/lxc/101/status/current", "/nodes/pve1/lxc"):
        status, body = get(app, secrets, url)
        assert status == 200, body
        entry = body["data"] if isinstance(body["data"], dict) else body["data"][0]
        assert (entry["cpus"], entry["cpu"]) == (want, pytest.approx(0.5 / want))
