"""Proxmox VE HA for a `high_availability` phase: every container an HA resource, kept apart by rules.

Pure: the phase and what /cluster/ha lists in, the ApiCalls still needed out (none when converged).
- resources: `ct:<vmid>` with state `started` and PVE's own restart/relocate counts written out, so a
  changed default never changes ours (pve-ha-manager API2/HA/Resources.pm create);
- PVE 9: one negative resource-affinity rule per cluster and per app service on several containers
  (/cluster/ha/rules): the HA manager never places two of them on one node, not even on recovery;
- PVE 8 has no such rules: one HA group per node that prefers it (`pve1:2,pve2:1,pve3:1`), each
  container in its phase-file node's group, so members sit apart while every node is up and go back
  once their node returns (failback). A second loss during a recovery may stack two members on one
  node until then; PVE 9's rules do not.
Which API: GET /version's major (9 and later: rules; 8: groups), read once at connect.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...changes import ApiCall, Change, Noop
from ...phases import Phase

COMPONENT = "ha"
HOST = "cluster"  # HA rules and groups belong to no one container
COMMENT = "psa-provision"
WANTED: dict[str, str] = {"state": "started", "max_restart": "1", "max_relocate": "1"}
RULES_SINCE = 9  # /cluster/ha/rules (resource-affinity) since PVE 9.0; HA groups before


def sid(vmid: int) -> str:
    return f"ct:{vmid}"


def apart(phase: Phase) -> dict[str, list[int]]:
    """rule id -> vmids never to share a node: each cluster's members, each service's containers."""
    out: dict[str, list[int]] = {}
    for c in phase.containers:
        if c.cluster:
            out.setdefault(f"psa-{c.cluster}-apart", []).append(c.vmid)
    for name, svc in sorted(phase.services.items()):
        if len(svc.containers) > 1:
            out[f"psa-app-{name}-apart"] = list(svc.containers)
    return {rid: vmids for rid, vmids in out.items() if len(vmids) > 1}


def group_of(node: str) -> str:
    return f"psa-{node}"


def group_nodes(node: str, nodes: Sequence[str]) -> str:
    """PVE 8 group `nodes`: its node first (priority 2), the others after it (1)."""
    return ",".join([f"{node}:2", *(f"{n}:1" for n in sorted(nodes) if n != node)])


def _same_list(have: object, want: Sequence[str]) -> bool:
    return sorted(p for p in str(have or "").replace(";", ",").split(",") if p) == sorted(want)


def plan(phase: Phase, major: int, resources: list[dict[str, Any]], rules: list[dict[str, Any]] | None,
         groups: list[dict[str, Any]] | None) -> list[Change]:
    """The HA changes of the phase (groups or rules need the resources first; rules come last)."""
    if not phase.high_availability:
        return []
    use_groups = major < RULES_SINCE
    nodes = sorted({c.node for c in phase.containers})
    out: list[Change] = []
    if use_groups:
        out += _groups(nodes, groups or [])
    have = {str(r.get("sid")): r for r in resources}
    for spec in phase.containers:
        want = dict(WANTED, **({"group": group_of(spec.node)} if use_groups else {}))
        current = have.get(sid(spec.vmid))
        if current is None:
            shown = ", ".join(f"{k} {v}" for k, v in want.items())
            out.append(ApiCall(spec.hostname, COMPONENT, f"HA resource {sid(spec.vmid)} ({shown})",
                               action="ha-resource-create", params={"sid": sid(spec.vmid), **want,
                                                                    "comment": COMMENT}, effect="create"))
            continue
        differs = {k: v for k, v in want.items() if str(current.get(k, "")) != v}
        if differs:
            shown = ", ".join(f"{k} {current.get(k, '(unset)')} -> {v}" for k, v in differs.items())
            out.append(ApiCall(spec.hostname, COMPONENT, f"HA resource {sid(spec.vmid)}: {shown}",
                               action="ha-resource-update", params={"sid": sid(spec.vmid), **differs},
                               diff={k: (current.get(k), v) for k, v in differs.items()}))
        else:
            out.append(Noop(spec.hostname, COMPONENT, f"HA resource {sid(spec.vmid)} started"))
    if not use_groups:
        out += _rules(phase, rules or [])
    return out


def _rules(phase: Phase, rules: list[dict[str, Any]]) -> list[Change]:
    have = {str(r.get("rule")): r for r in rules}
    out: list[Change] = []
    for rid, vmids in apart(phase).items():
        sids = [sid(v) for v in vmids]
        want = {"type": "resource-affinity", "affinity": "negative", "resources": ",".join(sids)}
        current = have.get(rid)
        what = f"HA rule {rid}: keep {', '.join(sids)} on different nodes"
        if current is None:
            out.append(ApiCall(HOST, COMPONENT, what, action="ha-rule-create",
                               params={"rule": rid, **want, "comment": COMMENT}, effect="create"))
            continue
        enabled = str(current.get("disable", 0)) in ("0", "")
        right = (current.get("type") == want["type"] and current.get("affinity") == "negative"
                 and _same_list(current.get("resources"), sids) and enabled)
        if right:
            out.append(Noop(HOST, COMPONENT, f"HA rule {rid} in place"))
            continue
        params: dict[str, object] = {"rule": rid, **want}
        if str(current.get("disable", 0)) not in ("0", ""):
            params["delete"] = "disable"
        out.append(ApiCall(HOST, COMPONENT, f"{what} (was {current.get('affinity')} "
                           f"{current.get('resources')})", action="ha-rule-update", params=params))
    return out


def _groups(nodes: list[str], groups: list[dict[str, Any]]) -> list[Change]:
    have = {str(g.get("group")): g for g in groups}
    out: list[Change] = []
    for node in nodes:
        name, want = group_of(node), group_nodes(node, nodes)
        current = have.get(name)
        if current is None:
            out.append(ApiCall(HOST, COMPONENT, f"HA group {name} preferring {node} ({want})",
                               action="ha-group-create", params={"group": name, "nodes": want,
                                                                 "comment": COMMENT}, effect="create"))
        elif not _same_list(current.get("nodes"), want.split(",")) or \
                str(current.get("restricted", 0)) not in ("0", "") or \
                str(current.get("nofailback", 0)) not in ("0", ""):
            out.append(ApiCall(HOST, COMPONENT, f"HA group {name}: nodes {want}, failback",
                               action="ha-group-update",
                               params={"group": name, "nodes": want, "restricted": 0, "nofailback": 0}))
        else:
            out.append(Noop(HOST, COMPONENT, f"HA group {name} in place"))
    return out
