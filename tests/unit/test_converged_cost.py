"""What a converged `plan` / `up` asks Proxmox, counted at the client's HTTP seam (converged_pve.py).

Cluster-wide facts are read once per run or once per node (whether its containers run: its own list,
live, where /cluster/resources has pvestatd's last sample), whatever the container count; each container
costs exactly its three own reads (pending config, firewall options, firewall rules: PVE has no call
returning several), and those are made side by side. Call counts only: timing is bench/run's.
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from converged_pve import ConvergedPve

from psa_provision import facts_ahead, reads, waves
from psa_provision.changes import ApiCall
from psa_provision.commands import plan as plan_cmd
from psa_provision.cost import Cost
from psa_provision.errors import ProxmoxError
from psa_provision.inventory import load_inventory
from psa_provision.migration import handover
from psa_provision.output import Output
from psa_provision.packaged import PHASES_DIR, SANDBOX_INVENTORY
from psa_provision.phases import around, load_phase
from psa_provision.preflight import ContainerState, preflight
from psa_provision.secrets import Secrets, generate
from psa_provision.site import Site

OWN_READS = ("GET /nodes/{node}/lxc/{vmid}/pending", "GET /nodes/{node}/lxc/{vmid}/firewall/options",
             "GET /nodes/{node}/lxc/{vmid}/firewall/rules")


def make_site(tmp_path: Path, phase_name: str) -> Site:
    inv = load_inventory(SANDBOX_INVENTORY).model_copy(update={"path": tmp_path / "site.yml"})
    return Site(inv, tmp_path / "site.yml", load_phase(phase_name, PHASES_DIR), Secrets(generate()),
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPerfTestKey perf@test")


def cluster_wide(nodes: int, *, ha: bool = False) -> Counter[str]:
    """The calls of a converged plan that name no container: per run, or per node (and for an HA phase
    the HA resources and rules, once each)."""
    # the earlier phases' containers that still exist come from preflight's /cluster/resources
    out = Counter({"GET /access/permissions": 1, "GET /cluster/resources": 1,
                   "GET /cluster/firewall/options": 1,  # preflight's check, shared with the firewall plans
                   "GET /nodes/{node}/network": nodes, "GET /nodes/{node}/storage/local/content": nodes,
                   "GET /nodes/{node}/lxc": nodes})
    if ha:
        # /version chooses rules or groups (a real run has read it at connect already)
        out.update({"GET /cluster/ha/resources": 1, "GET /cluster/ha/rules": 1, "GET /version": 1})
    return out


@pytest.mark.parametrize("phase_name", ["phase1", "phase2", "phase3"])
def test_a_converged_plan_reads_the_cluster_once_and_each_container_its_own_three_reads(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, phase_name: str) -> None:
    site = make_site(tmp_path, phase_name)
    # stopped: `plan` then gathers no facts (no SSH here); its Proxmox reads are those of running ones
    px = ConvergedPve(site.phase, site.inventory, running=False)
    monkeypatch.setattr(plan_cmd, "connect", lambda inv: px)
    cost = Cost()
    changes = plan_cmd.plan(site, Output(), cost=cost).changes
    assert [c.summary for c in changes if isinstance(c, ApiCall)] == []  # the fake is converged
    count = len(site.phase.containers)
    assert px.per_container == Counter(dict.fromkeys(OWN_READS, count))
    nodes = len({c.node for c in site.phase.containers})
    wide = cluster_wide(nodes, ha=site.phase.high_availability)
    assert px.calls - px.per_container == wide
    assert cost.api_calls == sum(wide.values()) + 3 * count


def test_up_reads_each_container_once_before_its_wave_and_nothing_in_it(tmp_path: Path) -> None:
    """up's reads before the waves (preflight, earlier phases, the handover, the firewalls); then a
    converged container's firewall plan asks nothing more."""
    site = make_site(tmp_path, "phase2")
    px = ConvergedPve(site.phase, site.inventory)
    checked = preflight(px, site, download=True, note=lambda _: None)
    states = checked.states
    assert all(s.running and s.config is not None for s in states)
    plan_cmd.earlier_containers(site, checked.resources)
    handover.before_up(px, site.inventory_path, site.inventory.phases_dir, site.phase, lambda _: None)
    walls = reads.firewall_now(px, site.phase, [s.spec for s in states], checked.datacenter_firewall)
    before = Counter(px.calls)
    assert before - px.per_container == cluster_wide(1) + Counter({"GET /cluster/resources?type=vm": 1})
    assert px.per_container == Counter(dict.fromkeys(OWN_READS, len(states)))
    for state in states:
        fw = waves.firewall_changes(px, site.phase, state.spec, state.config, walls[state.spec.vmid])
        assert not [c for c in fw if isinstance(c, ApiCall)]
    assert px.calls == before


class Sampled(ConvergedPve):
    """/cluster/resources with the status pvestatd last broadcast (`stale`), the nodes' lists live."""

    def __init__(self, *args: Any, stale: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stale = stale

    def _answer(self, path: str, params: dict[str, Any]) -> Any:
        answer = super()._answer(path, params)
        if path == "/cluster/resources":
            return [{**row, "status": self.stale} if row["type"] == "lxc" else row for row in answer]
        return answer


@pytest.mark.parametrize(("live", "stale"), [(True, "stopped"), (True, "unknown"), (False, "running")])
def test_whether_a_container_runs_is_its_nodes_answer_not_the_last_sample(
        tmp_path: Path, live: bool, stale: str) -> None:
    """Started or stopped less than 10 s ago (or never sampled), /cluster/resources still says otherwise."""
    site = make_site(tmp_path, "phase2")
    px = Sampled(site.phase, site.inventory, running=live, stale=stale)
    states = preflight(px, site, download=False, note=lambda _: None).states
    assert [s.running for s in states] == [live] * len(site.phase.containers)
    assert all(s.config is not None for s in states)
    assert all((s.pending == frozenset()) or live for s in states)


class Gate:
    """Holds each arriving call until `want` are in flight at once (or 5 s pass): proves they overlap."""

    def __init__(self, want: int) -> None:
        self.want, self.in_flight, self.most = want, 0, 0
        self._lock = threading.Lock()
        self._open = threading.Event()

    def __call__(self, method: str, path: str) -> None:
        with self._lock:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            if self.in_flight >= self.want:
                self._open.set()
        self._open.wait(5)
        with self._lock:
            self.in_flight -= 1


def test_each_containers_own_reads_overlap(tmp_path: Path) -> None:
    site = make_site(tmp_path, "phase2")
    gates = {"pending": Gate(reads.READERS), "firewall": Gate(reads.READERS)}

    def hold(method: str, path: str) -> None:
        for name, gate in gates.items():
            if f"/{name}" in path and "/cluster/" not in path:
                gate(method, path)

    px = ConvergedPve(site.phase, site.inventory, on_request=hold)
    states = preflight(px, site, download=False, note=lambda _: None).states
    reads.firewall_now(px, site.phase, [s.spec for s in states])
    assert {name: gate.most for name, gate in gates.items()} == {"pending": reads.READERS,
                                                                 "firewall": reads.READERS}


def test_side_by_side_keeps_the_order_and_raises_the_first_failure_in_it() -> None:
    assert reads.side_by_side(lambda n: n * n, range(20), workers=4) == [n * n for n in range(20)]
    done: list[int] = []

    def read(n: int) -> int:
        if n in (3, 7):
            raise ValueError(f"read {n} failed")
        done.append(n)
        return n

    with pytest.raises(ValueError, match="read 3 failed"):
        reads.side_by_side(read, range(10), workers=3)
    assert sorted(done) == [0, 1, 2, 4, 5, 6, 8, 9]  # every read ended before the failure was raised


def test_a_datacenter_firewall_seen_off_is_read_again_for_each_plan(tmp_path: Path) -> None:
    """The first container's plan may switch it on: the others then see it on, as when each read it."""
    site = make_site(tmp_path, "phase2")
    px = ConvergedPve(site.phase, site.inventory)
    spec = site.phase.containers[0]
    config = {"net0": "name=eth0,firewall=1"}
    off = reads.FirewallNow({}, [], {"enable": 0})
    waves.firewall_changes(px, site.phase, spec, config, off)
    assert px.calls == Counter({"GET /cluster/firewall/options": 1})
    waves.firewall_changes(px, site.phase, spec, config, None)  # no `now`: everything read here
    assert px.calls == Counter({"GET /cluster/firewall/options": 2, OWN_READS[1]: 1, OWN_READS[2]: 1})


def test_facts_are_gathered_at_most_so_many_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = make_site(tmp_path, "phase2")
    gate = Gate(3)
    monkeypatch.setattr(facts_ahead, "ssh_connection", lambda inv, spec: _Conn())

    def gather(conn: Any, spec: Any, secrets: Any, phase: Any) -> str:
        gate("ssh", spec.hostname)
        return str(spec.hostname)

    monkeypatch.setattr(facts_ahead, "gather_facts", gather)
    conns: dict[str, Any] = {c.hostname: _Conn() for c in site.phase.containers}
    with facts_ahead.FactsAhead(site, conns, health=False, at_once=3) as ahead:
        for spec in site.phase.containers:  # every container running: all started at once
            ahead.start(ContainerState(spec, {}, running=True))
        got: list[Any] = [ahead.take(c.hostname, usable=True) for c in site.phase.containers]
    assert got == [(c.hostname, False) for c in site.phase.containers]
    assert gate.most == 3


class _Conn:
    def close(self) -> None:
        pass


def test_the_containers_of_earlier_phases_still_there_are_named_from_preflights_rows() -> None:
    earlier, _ = around("phase1", PHASES_DIR)
    phase1 = load_phase("phase1", PHASES_DIR)
    rows = [{"type": "node", "node": "pve1", "status": "online"},
            {"type": "storage", "id": "storage/pve1/local"},
            {"type": "lxc", "vmid": 200, "node": "pve1", "status": "running"}]
    notes = waves.others_holding_data(phase1, earlier, rows)
    assert len(notes) == 1, notes
    assert notes[0].startswith("container 200 (psa-all-in-one, phase0) is not touched"), notes
    assert waves.others_holding_data(phase1, earlier, rows[:2]) == []


class Nodes:
    """cluster_guests as pvestatd last sampled them; each node's list now, or a node that is down."""

    def __init__(self, sampled: list[dict[str, Any]], now: dict[str, list[dict[str, Any]] | None]) -> None:
        self.sampled, self.now = sampled, now

    def cluster_guests(self) -> list[dict[str, Any]]:
        return [dict(g) for g in self.sampled]

    def containers(self, node: str) -> list[dict[str, Any]]:
        rows = self.now[node]
        if rows is None:
            raise ProxmoxError(f"GET /nodes/{node}/lxc: 595 No route to host")
        return rows


def test_guests_now_take_each_containers_status_from_its_node_and_keep_unknown_where_it_is_down() -> None:
    sampled = [{"vmid": 200, "node": "pve1", "type": "lxc", "status": "stopped"},   # started since
               {"vmid": 201, "node": "pve1", "type": "lxc", "status": "running"},   # stopped since
               {"vmid": 202, "node": "pve2", "type": "lxc", "status": "unknown"},   # its node is down
               {"vmid": 300, "node": "pve1", "type": "qemu", "status": "running"}]
    px = Nodes(sampled, {"pve1": [{"vmid": 200, "status": "running", "mem": 512},
                                  {"vmid": 201, "status": "stopped", "mem": 0}],
                         "pve2": None})
    guests = reads.guests_now(px)  # type: ignore[arg-type]
    assert {v: g["status"] for v, g in guests.items()} == {200: "running", 201: "stopped", 202: "unknown",
                                                           300: "running"}
    assert guests[200]["mem"] == 512
    phases = [load_phase(name, PHASES_DIR) for name in ("phase0", "phase1")]
    assert reads.newest_running(phases, guests) is phases[0]
    assert reads.newest_running(phases, {}) is None


def test_a_container_is_found_by_its_hostname_in_its_nodes_list_not_by_the_samples_name() -> None:
    """A container created moments ago has no name in /cluster/resources yet (pvestatd has not sampled it)."""
    sampled = [{"vmid": 199, "node": "pve0", "type": "lxc", "status": "unknown", "name": "psa-away"},
               {"vmid": 200, "node": "pve1", "type": "lxc", "status": "unknown"},
               {"vmid": 201, "node": "pve2", "type": "lxc", "status": "running", "name": "psa-other"}]
    px = Nodes(sampled, {"pve0": None,  # down: passed over
                         "pve1": [{"vmid": 200, "status": "running", "name": "psa-core"}],
                         "pve2": [{"vmid": 201, "status": "running", "name": "psa-other"}]})
    assert reads.container_named(px, "psa-core") == ("pve1", 200)  # type: ignore[arg-type]
    assert reads.container_named(px, "psa-other") == ("pve2", 201)  # type: ignore[arg-type]
    assert reads.container_named(px, "psa-away") is None  # type: ignore[arg-type]
