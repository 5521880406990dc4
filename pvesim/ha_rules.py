"""HA rules as pve-ha-manager checks and applies them (PVE 9: Rules.pm, Rules/ResourceAffinity.pm,
Rules/NodeAffinity.pm, Manager.pm select_service_node). Pure: data in, data out.

A rule is a section of rules.cfg: {"type": "resource-affinity"|"node-affinity", "resources": "ct:1,ct:2",
"affinity": "positive"|"negative", "nodes": "pve1:2,pve2", "strict": "0|1", "disable": "0|1", ...}.
"""

from __future__ import annotations

from collections.abc import Mapping

from pvesim.ha_config import Section, parse_nodes, split_list

Errors = dict[str, dict[str, list[str]]]  # rule id -> option -> messages
TYPES = ("node-affinity", "resource-affinity")
OPTIONS = {
    "resource-affinity": {"resources": False, "affinity": False, "disable": True, "comment": True},
    "node-affinity": {"resources": False, "nodes": False, "strict": True, "disable": True, "comment": True},
}  # option -> optional


class RuleError(ValueError):
    """A SectionConfig::check_config die (HTTP 500 with its text)."""


def check_options(kind: str, params: Mapping[str, str], create: bool) -> dict[str, str]:
    """SectionConfig::check_config: only the type's options, every required one on create."""
    allowed = OPTIONS[kind]
    for key in params:
        if key not in allowed:
            raise RuleError(f"unexpected property '{key}'")
    if create:
        for key, optional in allowed.items():
            if not optional and key not in params:
                raise RuleError(f"missing value for required option '{key}'")
    return dict(params)


def resources(rule: Section) -> list[str]:
    return split_list(rule.get("resources", ""))


def _enabled(rules: Mapping[str, Section], kind: str, affinity: str | None = None) -> dict[str, Section]:
    return {rid: r for rid, r in rules.items() if r.get("type") == kind and r.get("disable") != "1"
            and (affinity is None or r.get("affinity") == affinity)}


def check_feasibility(rules: Mapping[str, Section], nodes: list[str]) -> Errors:
    """Rules.pm check_feasibility for the checks that matter to placement; rule id -> option -> messages."""
    errors: Errors = {}

    def blame(rid: str, message: str) -> None:
        errors.setdefault(rid, {}).setdefault("resources", []).append(message)

    affinity = _enabled(rules, "resource-affinity")
    for rid in sorted(affinity):
        if len(set(resources(affinity[rid]))) < 2:
            blame(rid, "rule is ineffective as there are less than two resources")
    negative = _enabled(rules, "resource-affinity", "negative")
    positive = _enabled(rules, "resource-affinity", "positive")
    for rid in sorted(negative):
        if len(set(resources(negative[rid]))) > len(nodes):
            blame(rid, "rule defines more resources than available nodes")
    for nid in sorted(negative):
        for pid in sorted(positive):
            if len(set(resources(negative[nid])) & set(resources(positive[pid]))) >= 2:
                blame(nid, "rule shares two or more resources with a positive resource affinity rule")
                blame(pid, "rule shares two or more resources with a negative resource affinity rule")
    node_rules = _enabled(rules, "node-affinity")
    seen: dict[str, str] = {}
    for rid in sorted(node_rules, key=lambda r: int(node_rules[r].get("order", 0) or 0)):
        for sid in resources(node_rules[rid]):
            if sid in seen:
                blame(rid, f"resource '{sid}' is already used in another node affinity rule")
            seen.setdefault(sid, rid)
    return errors


def separate(rules: Mapping[str, Section], sid: str) -> set[str]:
    """Resources that must not share a node with `sid` (enabled negative rules)."""
    return {o for r in _enabled(rules, "resource-affinity", "negative").values() if sid in resources(r)
            for o in resources(r) if o != sid}


def together(rules: Mapping[str, Section], sid: str) -> set[str]:
    """Resources that must share `sid`'s node (enabled positive rules)."""
    return {o for r in _enabled(rules, "resource-affinity", "positive").values() if sid in resources(r)
            for o in resources(r) if o != sid}


def node_priorities(rules: Mapping[str, Section], sid: str, online: list[str]) -> dict[str, int]:
    """get_node_affinity: the online nodes `sid` may use with their priority, the highest class only.
    A strict rule with none of its nodes online leaves none; a non-strict one falls back to every node."""
    for rule in _enabled(rules, "node-affinity").values():
        if sid not in resources(rule):
            continue
        wanted = {n: p for n, p in parse_nodes(rule.get("nodes", "")).items() if n in online}
        if not wanted:
            return {} if rule.get("strict") == "1" else dict.fromkeys(online, 0)
        top = max(wanted.values())
        return {n: p for n, p in wanted.items() if p == top}
    return dict.fromkeys(online, 0)


def select_node(sid: str, current: str | None, online: list[str], rules: Mapping[str, Section],
                placement: Mapping[str, str], stay: bool = True) -> str | None:
    """select_service_node: a node for `sid` among the online ones, or None.

    placement: where every other HA resource is (its node). Negative affinity removes the nodes of the
    resources to keep apart, positive affinity keeps the nodes of the ones to keep together; `stay`
    keeps the current node when it is allowed (no needless moves); else the least loaded node wins,
    then the name (Manager.pm sorts by usage score, then name)."""
    candidates = node_priorities(rules, sid, online)
    for other in separate(rules, sid):
        candidates.pop(placement.get(other, ""), None)
    joined = {placement[o] for o in together(rules, sid) if placement.get(o) in candidates}
    if joined:
        candidates = {n: p for n, p in candidates.items() if n in joined}
    if not candidates:
        return None
    if stay and current in candidates:
        return current
    load = {n: sum(1 for s, at in placement.items() if at == n and s != sid) for n in candidates}
    return sorted(candidates, key=lambda n: (load[n], n))[0]


def violations(rules: Mapping[str, Section], placement: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """(rule id, sid, other sid) for every pair of a negative rule placed on one node."""
    out = []
    for rid, rule in sorted(_enabled(rules, "resource-affinity", "negative").items()):
        members = sorted(s for s in set(resources(rule)) if s in placement)
        for i, a in enumerate(members):
            out += [(rid, a, b) for b in members[i + 1:] if placement[a] == placement[b]]
    return out


def blocking(rules: Mapping[str, Section], sid: str, placement: Mapping[str, str],
             online: list[str]) -> dict[str, list[dict[str, str]]]:
    """Config.pm get_resource_motion_info: per online node, the resources that block moving `sid` there."""
    out: dict[str, list[dict[str, str]]] = {}
    for node in online:
        for other in sorted(separate(rules, sid)):
            if placement.get(other) == node:
                out.setdefault(node, []).append({"sid": other, "cause": "resource-affinity"})
    return out
