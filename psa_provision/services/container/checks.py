"""The container's verify checks: its Proxmox config matches the phase file; nothing but SSH and the
public services listens on every address."""

from __future__ import annotations

from typing import Any

from psa_provision.suites.checks import net0_fields, public_ports, wildcard_listeners


def test_container_config_matches_phase(container: dict[str, Any], proxmox: Any) -> None:
    # where it is now: the HA manager moves a phase-3 member (recovery, anti-affinity rules) off the
    # node the phase file created it on
    node = proxmox.find_vmid(container["vmid"]) or container["node"]
    config = proxmox.get_container(node, container["vmid"])
    assert config is not None, (f"container {container['vmid']} does not exist "
                                f"(phase: node {container['node']})")
    want = {
        "hostname": container["hostname"], "cores": container["cores"], "memory": container["memory_mb"],
        "swap": container["swap_mb"], "unprivileged": 1 if container["unprivileged"] else 0,
    }
    found = {key: config.get(key) for key in want}
    found = {k: (int(v) if k != "hostname" and v is not None else v) for k, v in found.items()}
    net = net0_fields(str(config.get("net0", "")))
    want_net = {"bridge": container["bridge"], "ip": container["ip_cidr"], "gw": container["gateway"]}
    found_net = {k: net.get(k) for k in want_net}
    features = dict(f.split("=", 1) for f in str(config.get("features", "")).split(",") if "=" in f)
    want_features = {k: str(v) for k, v in container["features"].items()}
    found_features = {k: features.get(k) for k in want_features}
    wrong = [f"{k}={found[k]!r} (phase: {want[k]!r})" for k in want if found[k] != want[k]]
    wrong += [f"net0 {k}={found_net[k]!r} (phase: {want_net[k]!r})"
              for k in want_net if found_net[k] != want_net[k]]
    wrong += [f"features {k}={found_features[k]!r} (phase: {want_features[k]!r})"
              for k in want_features if found_features[k] != want_features[k]]
    assert not wrong, "Proxmox config differs from the phase file: " + "; ".join(wrong)


def test_no_wildcard_listener_but_ssh_and_public_services(host: Any, container: dict[str, Any],
                                                         ctx: dict[str, Any]) -> None:
    # Stores, epmd (4369) and RabbitMQ's distribution port (25672) bind loopback or the private IP.
    allowed = public_ports(ctx["services"], container["hostname"])
    allowed |= set(ctx["expected"][container["hostname"]].get("haproxy", {}).get("wildcard_ports", []))
    found = wildcard_listeners(host.socket.get_listening_sockets(), allowed)
    assert not found, f"listening on every address (only ports {sorted(allowed)} may): {found}"
