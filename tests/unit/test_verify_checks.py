"""The suites' pure helpers and the context built from a phase (what the suites compare against)."""

from __future__ import annotations

import pytest

from psa_provision import verify
from psa_provision.errors import ProvisionError
from psa_provision.inventory import Inventory
from psa_provision.packaged import PHASES_DIR
from psa_provision.phases import ContainerSpec, Phase, ServiceSpec, load_phase
from psa_provision.suites import checks


def test_listening_ports_and_loopback() -> None:
    sockets = ["tcp://127.0.0.1:5432", "tcp://::1:5432", "tcp://0.0.0.0:22", "unix:///run/x.sock",
               "tcp://127.0.0.1:15432"]
    found = checks.listening_ports(sockets, 5432)
    assert found == ["tcp://127.0.0.1:5432", "tcp://::1:5432"]
    assert checks.loopback_only(found)
    assert not checks.loopback_only([*found, "tcp://0.0.0.0:5432"])
    assert not checks.loopback_only(["tcp://10.0.20.100:6379"])
    # phase 1: the store also listens on its container's private IP for the app container
    assert checks.loopback_only(["tcp://127.0.0.1:6379", "tcp://10.0.30.11:6379"], also="10.0.30.11")
    assert not checks.loopback_only(["tcp://0.0.0.0:6379"], also="10.0.30.11")
    assert not checks.loopback_only(["tcp://:::6379"], also="10.0.30.11")


def test_wildcard_listeners_outside_the_allowed_ports() -> None:
    # as testinfra reports `ss -ltn`: `*:4369` becomes both `::` and `0.0.0.0`, `[::]` loses brackets
    sockets = ["tcp://0.0.0.0:22", "tcp://:::22", "tcp://0.0.0.0:3000", "tcp://127.0.0.1:4369",
               "tcp://::1:5432", "tcp://10.0.20.100:6379", "unix:///run/x.sock", "udp://0.0.0.0:68"]
    assert checks.wildcard_listeners(sockets, {22, 3000}) == []
    # the guest before epmd and the distribution port were bound to loopback
    before = [*sockets, "tcp://:::4369", "tcp://0.0.0.0:4369", "tcp://0.0.0.0:25672", "tcp://0.0.0.0%lo:9300"]
    assert checks.wildcard_listeners(before, {22, 3000}) == [
        "tcp://0.0.0.0%lo:9300", "tcp://0.0.0.0:25672", "tcp://0.0.0.0:4369", "tcp://:::4369"]
    assert checks.wildcard_listeners(sockets, {22}) == ["tcp://0.0.0.0:3000"]


def test_public_ports_per_placement() -> None:
    phase0 = {"api-gateway": {"port": 3000, "hostname": "aio"}, "auth": {"port": 3010, "hostname": "aio"}}
    assert checks.public_ports(phase0, "aio") == {22, 3000}
    # the gateway on another container reaches auth: auth may listen beyond loopback there
    split = {"api-gateway": {"port": 3000, "hostname": "gw"}, "auth": {"port": 3010, "hostname": "app"}}
    assert checks.public_ports(split, "gw") == {22, 3000}
    assert checks.public_ports(split, "app") == {22, 3010}
    assert checks.public_ports(split, "db") == {22}


def test_net0_fields() -> None:
    net0 = "name=eth0,bridge=vmbr20,hwaddr=BC:24:11:00:00:01,ip=10.0.20.100/24,gw=10.0.20.1,type=veth"
    fields = checks.net0_fields(net0)
    assert (fields["bridge"], fields["ip"], fields["gw"]) == ("vmbr20", "10.0.20.100/24", "10.0.20.1")


@pytest.mark.parametrize(("a", "b", "equal"), [
    ("4GB", "4096MB", True), ("128MB", "131072kB", True), ("20MB", "2GB", False), ("1.1", "1.1", True),
    ("200", "100", False),
])
def test_pg_bytes_compares_units(a: str, b: str, equal: bool) -> None:
    assert (checks.pg_bytes(a) == checks.pg_bytes(b)) is equal


@pytest.mark.parametrize(("text", "value"), [
    ("4g", 4 * 1024**3), ("512m", 512 * 1024**2), ("2gb", 2 * 1024**3), ("1073741824", 1024**3)])
def test_size_bytes(text: str, value: int) -> None:
    assert checks.size_bytes(text) == value


def test_jump_host_parsing() -> None:
    assert verify.parse_jump(None, "root") is None
    jump = verify.parse_jump("ops@bastion.example:2222", "root")
    assert jump == verify.JumpHost("bastion.example", "ops", 2222)
    assert verify.parse_jump("bastion", "root") == verify.JumpHost("bastion", "root", 22)


def _inventory() -> Inventory:
    return Inventory.model_validate({
        "proxmox": {"url": "https://127.0.0.1:8006", "node": "pve1",
                    "auth": {"token_id": "root@pam!psa", "token_secret_env": "X"}},
        "network": {"bridge": "vmbr20", "gateway": "10.0.20.1", "nameserver": "10.0.20.1"},
        "template": "debian-12-standard_12.7-1_amd64.tar.zst",
        "ssh": {"key_file": "/inv/id_ed25519", "jump_host": "ops@bastion"},
        "secrets_file": "/inv/sandbox.secrets.yml",
        "tuning": {"postgresql": {"shared_buffers": "1GB"}, "elasticsearch": {"heap": "1g"}},
        "path": "/inv/sandbox.yml",
    })


def _phase() -> Phase:
    aio = ContainerSpec(vmid=200, hostname="psa-all-in-one", role="all-in-one", node="pve1", cores=4,
                        memory_mb=8192, swap_mb=1024, rootfs_gb=20, bridge="vmbr20", ip_cidr="10.0.20.100/24",
                        gateway="10.0.20.1", components=["base", "postgresql", "elasticsearch", "app"],
                        services=["api-gateway"])
    return Phase(name="phase0", containers=[aio],
                 services={"api-gateway": ServiceSpec(port=3000, instances=2, container=200)})


def test_context_names_containers_by_hostname_and_places_services() -> None:
    ctx = verify.build_context(_inventory(), _phase())
    aio = ctx["containers"]["psa-all-in-one"]
    assert (aio["vmid"], aio["ip"], aio["memory_mb"]) == (200, "10.0.20.100", 8192)
    assert ctx["services"]["api-gateway"] == {"port": 3000, "instances": 2, "container": 200, "also_on": [],
                                              "hostname": "psa-all-in-one"}
    pg = ctx["expected"]["psa-all-in-one"]["postgresql"]
    # the inventory's override wins; the rest derive from the container's 8 GiB like the rendered file
    assert (pg["shared_buffers"], pg["listen_addresses"], pg["port"]) == ("1GB", "localhost", "5432")
    assert pg["effective_cache_size"] == "1536MB"
    es = ctx["expected"]["psa-all-in-one"]["elasticsearch"]
    assert es == {"cluster_name": "psa-platform", "heap": "1g"}
    assert ctx["secrets_file"] == "/inv/sandbox.secrets.yml"
    assert ctx["expected"]["psa-all-in-one"]["listen"] == "127.0.0.1"  # no other container uses its stores
    assert verify.targets_of(_phase()) == [verify.Target("psa-all-in-one", "10.0.20.100")]


def test_hs256_token_verifies_like_the_gateway() -> None:
    import base64
    import hashlib
    import hmac
    import json

    token = checks.hs256_token("k" * 40, now=1_700_000_000, ttl_s=60)
    header, payload, sig = token.split(".")
    want = hmac.new(b"k" * 40, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    assert base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)) == want
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert {k: claims[k] for k in ("iat", "exp", "role")} == {"iat": 1_700_000_000, "exp": 1_700_000_060,
                                                             "role": "admin"}
    assert {"sub", "email", "jti"} <= set(claims)


@pytest.mark.parametrize("tags", [["administrator"], "[administrator]", "administrator"])
def test_rabbit_tags_in_either_format(tags: object) -> None:
    assert checks.rabbit_tags(tags) == ["administrator"]
    assert checks.rabbit_tags("[]") == [] and checks.rabbit_tags([]) == []


@pytest.mark.parametrize("name", ["phase1", "phase2"])
def test_split_phases_place_each_check_on_its_container(name: str) -> None:
    phase = load_phase(name, PHASES_DIR)
    ctx = verify.build_context(_inventory(), phase)
    report = verify.run_suite(verify.suite_files(name), verify.host_specs(verify.targets_of(phase)),
                              context=ctx, phase=name, extra=["--collect-only"])
    planned: dict[str, set[str]] = {}
    for host, check in report.planned:
        planned.setdefault(host, set()).add(check.split("[")[0])
    for spec in phase.containers:
        checks_here = planned.get(spec.hostname, set())
        assert "test_container_config_matches_phase" in checks_here
        assert ("test_redis_requires_auth" in checks_here) == ("redis" in spec.components)
        assert ("test_postgresql_15_installed" in checks_here) == ("postgresql" in spec.components)
        assert ("test_pm2_app_online_with_instances" in checks_here) == bool(spec.services)
    gateway = phase.services["api-gateway"].container
    routed = {c for h, c in report.planned if c.startswith("test_gateway_routes_to_service")}
    assert routed == {f"test_gateway_routes_to_service[{s}]" for s in phase.services if s != "api-gateway"}
    assert {h for h, c in report.planned if c in routed} == {phase.container(gateway).hostname}


def test_a_phase_without_a_suite_is_refused_before_any_connection() -> None:
    phase = load_phase("phase3", PHASES_DIR).model_copy(update={"name": "phase9"})
    with pytest.raises(ProvisionError, match="no verify suite for phase9"):
        verify.run(_inventory(), phase)
