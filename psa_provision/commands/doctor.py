"""`psa-provision doctor PHASE`: is this Proxmox ready for `up`? One list of checks, nothing written.

Checks: phase files and their references; API reachable with TLS verified (CA file or pinned
fingerprint shown); the token's privileges against the PSAProvision role (privileges.py), each missing
one by name and path; the datacenter firewall; nodes online; storages with their content types;
the template; bridges on each node; each vmid free or ours; an SSH path to the guests' network.
A failed check is a blocker (exit 1); a warning is not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from psa_provision import firewall, privileges
from psa_provision.access import Access, datacenter_firewall
from psa_provision.errors import ProvisionError
from psa_provision.inventory import Inventory, load_inventory
from psa_provision.phases import SUBNETS, Phase, check_all, load_phase
from psa_provision.preflight import container_state, find_resource, privilege_target
from psa_provision.proxmox import ProxmoxClient, connect
from psa_provision.secrets import Secrets
from psa_provision.ssh import reachable

Status = Literal["ok", "warn", "fail"]
CONTENT = {"rootdir": "container disks", "vztmpl": "container templates"}


@dataclass(frozen=True)
class Check:
    """One row of doctor's table."""

    name: str
    status: Status
    detail: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def blocked(checks: list[Check]) -> bool:
    return any(c.status == "fail" for c in checks)


def run(inventory_path: Path, phase_name: str, *,
        connect_to: Callable[[Inventory], ProxmoxClient] = connect,
        reach: Callable[[str, int], tuple[bool, str]] = reachable) -> list[Check]:
    """Every check, in order; an unreachable API ends the list after saying so."""
    inv = load_inventory(inventory_path)
    out = static_checks(inv, phase_name)
    if blocked(out):
        return out
    phase = load_phase(phase_name, inv.phases_dir)
    try:
        px = connect_to(inv)
    except ProvisionError as exc:
        return [*out, Check("API", "fail", f"{exc.message} ({exc.hint})" if exc.hint else exc.message)]
    out.append(Check("API", "ok", f"{px.settings.url} answers, {tls_in_use(inv)}"))
    out += api_checks(px, inv, phase)
    out += ssh_checks(inv, phase, reach)
    return out


def tls_in_use(inv: Inventory) -> str:
    """How the API's certificate is checked: pinned fingerprint, CA file, system CAs, or not at all."""
    tls = inv.proxmox.tls
    if tls.fingerprint:
        return f"TLS pinned to fingerprint {tls.fingerprint}"
    if tls.ca_file:
        return f"TLS verified with CA file {tls.ca_file}"
    if tls.insecure:
        return "TLS NOT verified (tls.insecure)"
    return "TLS verified with the system CAs"


def static_checks(inv: Inventory, phase_name: str) -> list[Check]:
    """Phase files alone and together (phases --check), then this phase's references."""
    problems = [p for p in check_all(inv.phases_dir) if p.severity == "error"]
    if problems:
        return [Check("phase files", "fail", str(p)) for p in problems]
    out = [Check("phase files", "ok", f"{inv.phases_dir}: valid")]
    phase = load_phase(phase_name, inv.phases_dir)
    for spec in phase.containers:
        if phase.nodes and spec.node not in phase.nodes:
            out.append(Check("references", "fail", f"container {spec.vmid}: node {spec.node} is not declared "
                             f"under nodes ({', '.join(phase.nodes)})"))
        if spec.bridge not in {inv.network.bridge, *SUBNETS}:
            out.append(Check("references", "warn", f"container {spec.vmid}: bridge {spec.bridge} is neither "
                             f"the inventory's ({inv.network.bridge}) nor a known one"))
        if spec.rootfs_storage != inv.storage.rootfs:
            out.append(Check("references", "warn", f"container {spec.vmid}: rootfs_storage "
                             f"{spec.rootfs_storage} differs from the inventory's {inv.storage.rootfs}"))
    return out


def api_checks(px: ProxmoxClient, inv: Inventory, phase: Phase) -> list[Check]:
    out = privilege_checks(px, inv, phase)
    resources = px.cluster_resources()
    nodes = sorted({c.node for c in phase.containers})
    for node in nodes:
        entry = find_resource(resources, "node", node=node)
        online = entry is not None and entry.get("status") == "online"
        out.append(Check(f"node {node}", "ok" if online else "fail",
                         "online" if online else "not online (or not in the cluster)"))
    for node in nodes:
        out += storage_checks(px, inv, phase, node, resources)
        out += bridge_checks(px, phase, node)
    out += vmid_checks(px, phase, resources)
    return out


def privilege_checks(px: ProxmoxClient, inv: Inventory, phase: Phase) -> list[Check]:
    """Each privilege the role grants that the token lacks on a path the phase uses, then the firewall."""
    from psa_provision.site import Site  # a Site only to reuse privilege_target

    access = Access(px)
    site = Site(inv, inv.path or Path(), phase, Secrets({}))
    need = privileges.required("doctor", privilege_target(site))
    lacking = access.missing(need)
    out: list[Check] = []
    if lacking is None:
        out.append(Check("privileges", "warn", "the API cannot list permissions: checked per call by `up`"))
    elif lacking:
        for priv, path in lacking:
            need_of = privileges.need_for(priv, path)
            used = f" ({need_of.why}; needed by {', '.join(need_of.commands)})" if need_of else ""
            out.append(Check("privilege", "fail", f"{px.settings.who} lacks {priv} on {path}{used}"))
    else:
        out.append(Check("privileges", "ok", f"{px.settings.who} holds every privilege of the "
                                             f"{privileges.ROLE} role on the phase's paths"))
    if firewall.enabled(phase) and lacking is not None and not any(p == "/" for _, p in lacking):
        try:
            on = datacenter_firewall(px, access)
            out.append(Check("datacenter firewall", "ok",
                             "on" if on else f"off; `up` switches it on ({privileges.SYS_MODIFY} on /)"))
        except ProvisionError as exc:
            out.append(Check("datacenter firewall", "fail", f"{exc.message}; {exc.hint}"))
    return out


def storage_checks(px: ProxmoxClient, inv: Inventory, phase: Phase, node: str,
                   resources: list[dict[str, Any]]) -> list[Check]:
    wanted: dict[str, set[str]] = {}
    for spec in phase.containers:
        if spec.node == node:
            wanted.setdefault(spec.rootfs_storage, set()).add("rootdir")
    wanted.setdefault(inv.storage.templates, set()).add("vztmpl")
    out = []
    for sid, content in sorted(wanted.items()):
        entry = find_resource(resources, "storage", node=node, storage=sid)
        name = f"storage {sid} on {node}"
        if entry is None:
            out.append(Check(name, "fail", privileges.not_visible("storage", sid, node)))
            continue
        has = set(str(entry.get("content", "")).split(","))
        lacking = sorted(content - has)
        out.append(Check(name, "fail" if lacking else "ok",
                         f"no content type {', '.join(lacking)} ({CONTENT[lacking[0]]})" if lacking
                         else f"content {', '.join(sorted(content))}"))
    out.append(template_check(px, inv, node))
    return out


def template_check(px: ProxmoxClient, inv: Inventory, node: str) -> Check:
    name = f"template on {node}"
    try:
        if inv.template_volid in px.templates(node, inv.storage.templates):
            return Check(name, "ok", f"{inv.template_volid} present")
        if inv.template in px.available_templates(node):
            return Check(name, "ok", f"{inv.template} downloadable (aplinfo); `up` downloads it")
    except ProvisionError as exc:
        return Check(name, "fail", exc.message)
    return Check(name, "fail", f"{inv.template} is neither on {inv.storage.templates} nor downloadable")


def bridge_checks(px: ProxmoxClient, phase: Phase, node: str) -> list[Check]:
    try:
        seen = px.bridges(node)
    except ProvisionError as exc:
        return [Check(f"bridges on {node}", "fail", exc.message)]
    out = []
    for bridge in sorted({c.bridge for c in phase.containers if c.node == node}):
        ok = bridge in seen
        out.append(Check(f"bridge {bridge} on {node}", "ok" if ok else "fail",
                         "present" if ok else privileges.not_visible("bridge", bridge, node)))
    return out


def vmid_checks(px: ProxmoxClient, phase: Phase, resources: list[dict[str, Any]]) -> list[Check]:
    out = []
    for spec in phase.containers:
        name = f"vmid {spec.vmid}"
        try:
            state = container_state(px, spec, resources)
        except ProvisionError as exc:
            out.append(Check(name, "fail", exc.message))
            continue
        out.append(Check(name, "ok", "free" if state.config is None else
                         f"held by {spec.hostname}, created by psa-provision"))
    return out


def ssh_checks(inv: Inventory, phase: Phase, reach: Callable[[str, int], tuple[bool, str]]) -> list[Check]:
    """TCP to the jump host, or to each bridge's gateway (an answer, even a refusal, proves the path)."""
    if inv.ssh.jump_host:
        host, _, port = inv.ssh.jump_host.rpartition("@")[2].partition(":")
        ok, why = reach(host, int(port or 22))
        return [Check("SSH path", "ok" if ok else "fail", f"jump host {host}:{port or 22}: {why}")]
    out = []
    for gateway in sorted({c.gateway for c in phase.containers}):
        ok, why = reach(gateway, 22)
        out.append(Check("SSH path", "ok" if ok else "fail", f"guests' network via {gateway}: {why}"))
    return out


def rows(checks: list[Check]) -> list[list[str]]:
    return [[c.status, c.name, c.detail] for c in checks]

