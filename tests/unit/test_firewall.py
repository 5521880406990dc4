"""Phase 1 planning differences, pure: firewall rules from the phase topology, their reconcile calls,
pg_hba client lines and listen addresses per phase, and the parallel runner's waves and failures."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from psa_provision import firewall, inventory, phases, waves
from psa_provision.changes import ApiCall, Noop
from psa_provision.errors import GuestError
from psa_provision.packaged import PHASES_DIR, SANDBOX_INVENTORY
from psa_provision.phases import ContainerSpec, Phase
from psa_provision.proxmox import ProxmoxClient
from psa_provision.render import render
from psa_provision.secrets import Secrets, generate
from psa_provision.services.context import HostContext
from psa_provision.services.elasticsearch import component as elasticsearch
from psa_provision.services.postgresql import component as postgresql

SECRETS = Secrets(generate())


def phase(name: str) -> Phase:
    return phases.load_phase(name, PHASES_DIR)


def ctx(name: str, vmid: int) -> HostContext:
    inv = inventory.load_inventory(SANDBOX_INVENTORY)
    ph = phase(name)
    return HostContext(inv, ph, ph.container(vmid), SECRETS)


def hba_clients(text: str) -> list[str]:
    """Addresses of the `host` lines of a pg_hba.conf (loopback included), each checked for SCRAM."""
    out = []
    for line in text.splitlines():
        words = line.split()
        if words and words[0] == "host":
            assert words[1:3] == ["psa_platform", "psa_app"] and words[4] == "scram-sha-256", line
            out.append(words[3])
    return out


# -- listen addresses and pg_hba per phase -------------------------------------------------------------
def test_phase0_keeps_every_store_on_loopback() -> None:
    c = ctx("phase0", 200)
    assert c.listen_address() == "127.0.0.1"
    assert hba_clients(postgresql.hba_content(c)) == ["127.0.0.1/32", "::1/128"]
    assert postgresql.settings(c)["listen_addresses"] == "localhost"


def test_phase1_pg_hba_admits_the_app_container_only() -> None:
    c = ctx("phase1", 100)
    assert hba_clients(postgresql.hba_content(c)) == ["127.0.0.1/32", "::1/128", "10.0.20.230/32"]
    assert postgresql.settings(c)["listen_addresses"] == "10.0.30.10,localhost"


def test_phase2_pg_hba_admits_each_service_container() -> None:
    c = ctx("phase2", 100)
    apps = sorted(f"{s.ip}/32" for s in c.phase.containers if "app" in s.components)
    assert len(apps) == 8
    assert hba_clients(postgresql.hba_content(c)) == ["127.0.0.1/32", "::1/128", *apps]


def test_phase1_rabbitmq_and_elasticsearch_listen_on_their_private_address() -> None:
    rabbit = ctx("phase1", 210)
    conf = render("rabbitmq.conf.j2", bind=rabbit.listen_address()).splitlines()
    assert "listeners.tcp.default = 10.0.30.30:5672" in conf
    es = elasticsearch.conf_content(ctx("phase1", 220)).splitlines()
    assert "network.host: [10.0.30.40, 127.0.0.1]" in es


def test_phase0_rabbitmq_and_elasticsearch_stay_on_loopback() -> None:
    c = ctx("phase0", 200)
    conf = render("rabbitmq.conf.j2", bind=c.listen_address()).splitlines()
    listeners = [line for line in conf if line.startswith("listeners.")]
    assert listeners == ["listeners.tcp.default = 127.0.0.1:5672"]
    assert "network.host: 127.0.0.1" in elasticsearch.conf_content(c).splitlines()


# -- rules from the topology ---------------------------------------------------------------------------
def rule_rows(ph: Phase, vmid: int) -> list[tuple[int, str]]:
    return [(r.dport, r.source) for r in firewall.rules(ph, ph.container(vmid))]


def test_phase0_has_no_firewall() -> None:
    ph = phase("phase0")
    assert not firewall.enabled(ph)
    assert firewall.plan(ph, ph.containers[0], config={}, options={}, current_rules=[], cluster={}) == []


def test_phase1_rules_follow_the_topology() -> None:
    ph = phase("phase1")
    ssh = [(22, "10.0.20.1"), (22, "10.0.30.1")]
    assert rule_rows(ph, 100) == [*ssh, (5432, "10.0.20.230")]
    assert rule_rows(ph, 110) == [*ssh, (6379, "10.0.20.230")]
    assert rule_rows(ph, 210) == [*ssh, (5672, "10.0.20.230")]
    assert rule_rows(ph, 220) == [*ssh, (9200, "10.0.20.230")]
    assert rule_rows(ph, 230) == [*ssh, (3000, "")]  # the gateway is the public entry; 3010.. stay local


def test_phase2_service_ports_open_to_the_other_app_containers_only() -> None:
    ph = phase("phase2")
    auth = ph.services["auth"]
    rows = rule_rows(ph, auth.container)
    callers = sorted(c.ip for c in ph.containers if "app" in c.components and c.vmid != auth.container)
    assert [src for port, src in rows if port == auth.port] == callers
    assert ph.container(auth.container).ip not in callers


@pytest.mark.parametrize("name", ["phase1", "phase2"])
def test_firewall_clients_are_pg_hba_clients(name: str) -> None:
    """The firewall and pg_hba/bind decisions come from one topology: they must name the same hosts."""
    ph = phase(name)
    for spec in ph.containers:
        assert firewall.clients(ph, spec) == ctx(name, spec.vmid).client_addresses()


def test_rule_params_are_enabled_tcp_accepts() -> None:
    params = firewall.Rule(5432, "10.0.20.230", "postgresql client").params()
    assert params == {"type": "in", "action": "ACCEPT", "proto": "tcp", "dport": "5432", "enable": 1,
                      "comment": "psa-provision: postgresql client", "source": "10.0.20.230"}
    assert "source" not in firewall.Rule(3000, "", "gateway").params()


# -- reconcile -----------------------------------------------------------------------------------------
def as_listed(rules: list[firewall.Rule]) -> list[dict[str, Any]]:
    """Rules as GET .../firewall/rules returns them (pos, enable as a number)."""
    return [{**{k: v for k, v in r.params().items()}, "pos": i, "digest": "d"} for i, r in enumerate(rules)]


def spec100() -> tuple[Phase, ContainerSpec]:
    ph = phase("phase1")
    return ph, ph.container(100)


CONFIG = {"net0": "name=eth0,bridge=vmbr30,hwaddr=BC:24:11:00:00:01,ip=10.0.30.10/24,gw=10.0.30.1,type=veth",
          "digest": "abc"}


def test_fresh_container_gets_rules_in_order_then_options_net_flag_and_datacenter() -> None:
    ph, spec = spec100()
    changes = firewall.plan(ph, spec, config=CONFIG, options={}, current_rules=[], cluster={"enable": 0})
    calls = [c for c in changes if isinstance(c, ApiCall)]
    posts = [c for c in calls if c.method == "POST"]
    # POST unshifts (pve-firewall Rules.pm register_create_rule), so the last wanted rule goes first
    assert [(c.params["dport"], c.params.get("source")) for c in posts] == [
        ("5432", "10.0.20.230"), ("22", "10.0.30.1"), ("22", "10.0.20.1")]
    assert not any("pos" in c.params for c in posts)  # PVE ignores it on create
    assert all(c.params["enable"] == 1 and c.path == "/nodes/pve1/lxc/100/firewall/rules" for c in posts)
    options, net, cluster = calls[3:]
    assert options.path.endswith("/lxc/100/firewall/options") and options.params["policy_in"] == "DROP"
    assert options.params["enable"] == "1"
    assert "digest" not in options.params  # the rule posts before it change the file the digest is of
    assert net.params["net0"] == CONFIG["net0"] + ",firewall=1" and net.params["digest"] == "abc"
    assert (cluster.path, cluster.params) == ("/cluster/firewall/options", {"enable": 1})


def test_converged_firewall_is_all_noops() -> None:
    ph, spec = spec100()
    config = {**CONFIG, "net0": CONFIG["net0"] + ",firewall=1"}
    options = {"enable": 1, "policy_in": "DROP", "policy_out": "ACCEPT", "digest": "x"}
    changes = firewall.plan(ph, spec, config=config, options=options,
                            current_rules=as_listed(firewall.rules(ph, spec)), cluster={"enable": 1})
    assert changes and all(isinstance(c, Noop) for c in changes)


def test_stale_rules_of_ours_are_replaced_and_an_operators_rule_kept() -> None:
    ph, spec = spec100()
    stale = firewall.Rule(5432, "10.0.20.99", "postgresql client")
    listed = as_listed([*firewall.rules(ph, spec)[:2], stale])
    listed.append({"type": "in", "action": "ACCEPT", "proto": "icmp", "enable": 1, "pos": 3,
                   "comment": "operator's ping"})
    changes = firewall.rule_changes(spec, firewall.rules(ph, spec), listed)
    deletes = [c.path for c in changes if isinstance(c, ApiCall) and c.method == "DELETE"]
    assert deletes == [f"/nodes/pve1/lxc/100/firewall/rules/{i}" for i in (2, 1, 0)]  # last first
    assert sum(isinstance(c, ApiCall) and c.method == "POST" for c in changes) == 3


def test_a_disabled_rule_of_ours_is_not_in_place() -> None:
    ph, spec = spec100()
    listed = as_listed(firewall.rules(ph, spec))
    listed[2]["enable"] = 0
    assert not all(isinstance(c, Noop) for c in firewall.rule_changes(spec, firewall.rules(ph, spec), listed))


# -- parallel runner -----------------------------------------------------------------------------------
class State:
    def __init__(self, spec: ContainerSpec) -> None:
        self.spec = spec


def test_the_app_container_builds_alongside_the_stores_and_starts_its_apps_after_them() -> None:
    states = [State(c) for c in phase("phase1").containers]
    # then the stores, longest first: PostgreSQL and RabbitMQ, Elasticsearch, Redis (a short one last)
    assert [s.spec.vmid for s in waves.first_wave_order(states)] == [230, 100, 210, 220, 110]
    assert [s.spec.vmid for s in waves.second_wave_order(
        [s for s in states if waves.is_app(s.spec)])] == [230]


def test_a_failing_container_does_not_stop_the_others_and_the_app_waits_for_stores() -> None:
    ph = phase("phase1")
    done: list[tuple[str, int]] = []
    lock = threading.Lock()
    running = [0, 0]  # now, most at once

    def work(state: State) -> waves.Finish:
        with lock:
            running[0] += 1
            running[1] = max(running[1], running[0])
        try:
            if state.spec.vmid == 110:
                raise GuestError("redis: install failed")
            with lock:
                done.append(("own part", state.spec.vmid))
        finally:
            with lock:
                running[0] -= 1
        return lambda: done.append(("apps started", state.spec.vmid))

    notes: list[str] = []
    failures = waves.run_all([State(c) for c in ph.containers], work, note=notes.append, workers=2)
    assert [f.spec.vmid for f in failures] == [110]
    # the others converged, the app container built too; its apps need redis: not started
    # the other stores did the rest that needs their peers; the app container only its own part
    assert sorted(done) == [("apps started", 100), ("apps started", 210), ("apps started", 220),
                            ("own part", 100), ("own part", 210), ("own part", 220), ("own part", 230)]
    assert any("psa-redis-1" in n and "redis: install failed" in n for n in notes)
    assert any(n.startswith("psa-app: PM2 apps not started") and "psa-redis-1" in n for n in notes)
    assert running[1] <= 2


def test_phase3_starts_the_etcd_members_together_and_the_load_balancers_last() -> None:
    """etcd's first start waits for a quorum: its three members run at once even with 2 workers."""
    states = [State(c) for c in phase("phase3").containers]
    order = [s.spec.vmid for s in waves.first_wave_order(states)]
    assert order[:3] == [105, 106, 107] and order[-2:] == [240, 241]
    apps = [v for v in order if 120 <= v < 200]
    assert order[3:3 + len(apps)] == apps and len(apps) == 16
    lock = threading.Lock()
    inside: set[int] = set()
    met = threading.Event()

    def work(state: State) -> waves.Finish:
        if 105 <= state.spec.vmid <= 107:
            with lock:
                inside.add(state.spec.vmid)
                if len(inside) == 3:
                    met.set()
            assert met.wait(10), "the etcd members did not run side by side"
        return lambda: None

    assert waves.run_all(states, work, note=lambda _: None, workers=2) == []


def test_all_containers_run_when_none_fails_the_apps_start_last() -> None:
    seen: list[tuple[str, int]] = []

    def work(state: State) -> waves.Finish:
        seen.append(("own part", state.spec.vmid))
        return lambda: seen.append(("apps started", state.spec.vmid))

    failures = waves.run_all([State(c) for c in phase("phase1").containers], work, note=lambda _: None)
    assert failures == [] and sorted(v for _, v in seen[:5]) == [100, 110, 210, 220, 230]
    # the stores' rest (a member joining its cluster) before any app starts
    assert sorted(seen[5:9]) == [("apps started", v) for v in (100, 110, 210, 220)]
    assert seen[9:] == [("apps started", 230)]


def test_a_failed_app_container_does_not_keep_the_other_apps_from_starting() -> None:
    ph = phase("phase2")
    started: list[int] = []

    def work(state: State) -> waves.Finish:
        if state.spec.vmid == 140:
            raise GuestError("npm ci failed")
        return lambda: started.append(state.spec.vmid)

    failures = waves.run_all([State(c) for c in ph.containers], work, note=lambda _: None)
    assert [f.spec.vmid for f in failures] == [140]
    assert set(started[:4]) == {100, 110, 210, 220}  # the stores' rest first
    assert started[-1] == 120 and sorted(started[4:]) == [120, 121, 130, 150, 160, 170, 180]


# -- against a model of PVE's rule list ------------------------------------------------------------------
class PveRules(ProxmoxClient):
    """A container's rule list as pve-firewall API2/Firewall/Rules.pm edits it: create unshifts (pos is
    ignored), delete splices at pos, update with moveto moves (to the end when moveto >= the length)."""

    def __init__(self, rules: list[dict[str, Any]] | None = None) -> None:
        self.rules = [dict(r) for r in rules or []]
        self.calls = 0

    def listed(self) -> list[dict[str, Any]]:
        return [{**r, "pos": i} for i, r in enumerate(self.rules)]

    def request(self, method: str, path: str, params: dict[str, Any] | None = None,
                effect: Any = None) -> Any:
        if method == "GET":
            return self.listed()
        self.calls += 1
        params = dict(params or {})
        if method == "POST":
            params.pop("pos", None)
            self.rules.insert(0, {k: v for k, v in params.items()})
        elif method == "DELETE":
            del self.rules[int(path.rsplit("/", 1)[1])]
        elif method == "PUT" and "moveto" in params:
            pos, moveto = int(path.rsplit("/", 1)[1]), int(params["moveto"])
            moved: list[dict[str, Any]] = []
            for i, r in enumerate(self.rules):  # the loop of register_update_rule
                if i == pos:
                    continue
                if i == moveto:
                    moved.append(self.rules[pos])
                moved.append(r)
            self.rules = [*moved, self.rules[pos]] if moveto >= len(self.rules) else moved
        return None

    def apply(self, changes: list[Any]) -> None:
        for c in changes:
            if isinstance(c, ApiCall):
                self.request(c.method, c.path, c.params)


def test_rules_posted_to_pve_land_in_order_and_a_second_run_makes_no_call() -> None:
    ph, spec = spec100()
    want = firewall.rules(ph, spec)
    pve = PveRules([{"type": "in", "action": "ACCEPT", "proto": "icmp", "enable": 1, "comment": "operator"}])
    pve.apply(firewall.rule_changes(spec, want, pve.listed()))
    ours = [f"{firewall.TAG} {w.comment}" for w in want]
    assert [r.get("comment") for r in pve.rules] == [*ours, "operator"]
    pve.calls = 0
    second = firewall.rule_changes(spec, want, pve.listed())
    assert all(isinstance(c, Noop) for c in second) and pve.calls == 0


def test_stale_rules_replaced_on_pve_converge_in_one_run() -> None:
    ph, spec = spec100()
    want = firewall.rules(ph, spec)
    pve = PveRules([{k: v for k, v in r.items() if k != "pos"} for r in as_listed(list(reversed(want)))])
    pve.apply(firewall.rule_changes(spec, want, pve.listed()))
    assert all(isinstance(c, Noop) for c in firewall.rule_changes(spec, want, pve.listed()))


def test_a_migration_grant_goes_below_our_rules_so_up_stays_converged() -> None:
    from psa_provision.migration import handover

    ph, spec = spec100()
    want = firewall.rules(ph, spec)
    pve = PveRules()
    pve.apply(firewall.rule_changes(spec, want, pve.listed()))
    client = phase("phase0").container(200)
    handover.grant(pve, spec, 5432, client, "phase1", note=lambda _: None)  # type: ignore[arg-type]
    assert str(pve.rules[-1]["comment"]).startswith(handover.GRANT_TAG)
    assert all(isinstance(c, Noop) for c in firewall.rule_changes(spec, want, pve.listed()))
    pve.calls = 0
    handover.grant(pve, spec, 5432, client, "phase1", note=lambda _: None)  # type: ignore[arg-type]
    assert pve.calls == 0  # already there


def test_phase3_elasticsearch_members_reach_each_others_transport() -> None:
    ph = phase("phase3")
    members = ph.with_component("elasticsearch")
    for member in members:
        peers = sorted(src for port, src in rule_rows(ph, member.vmid) if port == 9300)
        assert peers == sorted(m.ip for m in members if m.vmid != member.vmid)


def test_phase3_load_balancer_pair_rules() -> None:
    ph = phase("phase3")
    lb1, lb2 = ph.with_component("keepalived")
    apps = sorted(c.ip for c in ph.containers if "app" in c.components)
    rows = rule_rows(ph, lb1.vmid)
    assert (3000, "") in rows  # the gateway through the VIP: the public entry
    assert sorted(src for port, src in rows if port == 3030) == apps
    vrrp = [r.params() for r in firewall.rules(ph, lb1) if r.proto == "vrrp"]
    assert [(p["source"], "dport" in p) for p in vrrp] == [(lb2.ip, False)]
    tickets = next(c for c in ph.containers if "tickets" in c.services)
    callers = {src for port, src in rule_rows(ph, tickets.vmid) if port == 3030}
    assert {lb1.ip, lb2.ip} <= callers  # health checks and forwarded requests from both balancers


def test_phase3_patroni_and_etcd_reach_what_they_need() -> None:
    """Patroni members replicate and ask each other's /leader; the load balancers reach the server and
    its REST checks; etcd admits its peers and the Patroni members; the apps reach 5000/5001 on the LBs."""
    ph = phase("phase3")
    pg = [c for c in ph.with_component("postgresql")]
    lbs = sorted(c.ip for c in ph.with_component("haproxy"))
    etcd = ph.with_component("etcd")
    apps = sorted(c.ip for c in ph.containers if "app" in c.components)
    for member in pg:
        rows = rule_rows(ph, member.vmid)
        others = sorted(c.ip for c in pg if c.vmid != member.vmid)
        for port in (5432, 8008):
            allowed = {*others, *lbs} | ({*apps} if port == 5432 else set())
            assert sorted(src for p, src in rows if p == port) == sorted(allowed)
    for member in etcd:
        rows = rule_rows(ph, member.vmid)
        peers = sorted(c.ip for c in etcd if c.vmid != member.vmid)
        assert sorted(src for p, src in rows if p == 2380) == peers
        assert {c.ip for c in pg} <= {src for p, src in rows if p == 2379}
    for lb in ph.with_component("haproxy"):
        rows = rule_rows(ph, lb.vmid)
        assert sorted(src for p, src in rows if p == 5000) == apps
        assert sorted(src for p, src in rows if p == 5001) == apps
    assert not any(p in (2379, 2380, 8008) for p, _ in rule_rows(phase("phase2"), 100))  # phase 2: none
