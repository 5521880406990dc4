"""/cluster/ha: resources, rules (PVE 9), groups (PVE 8) and status, as pve-ha-manager's API2/HA/*.pm.

Errors are its `die` texts (HTTP 500) unless it raises a 400 itself (rule feasibility). PVE 9 migrates
HA groups to rules: with no group left every /cluster/ha/groups call dies "... ha groups have been
migrated to rules" (API2/HA/Groups.pm since 9.0), and a fresh cluster has none. `pvesim present-as 8`
makes the API a PVE 8.4 one: /version says 8.4, groups work, /cluster/ha/rules is not implemented.
The HA manager that acts on these files is ha_manager.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pvesim import ha_rules
from pvesim import handlers_lxcstore as store
from pvesim.ha_config import (
    HaFiles,
    SectionConfig,
    SidError,
    groups_migrated,
    parse_nodes,
    parse_sid,
    split_list,
)
from pvesim.server import PREFIX, ApiError, App, Request, route

RESOURCE_OPTIONS = ("state", "group", "max_restart", "max_relocate", "comment", "failback")
RESOURCE_DEFAULTS = {"state": "started", "failback": "1", "max_restart": "1", "max_relocate": "1"}


def pve_major(app: App) -> int:
    """The major PVE version the API presents (settings.json `pve_version`, read live; default 9)."""
    try:
        return int(json.loads(app.state.settings.read_text()).get("pve_version", 9))
    except (OSError, ValueError):
        return 9


def _files(req: Request) -> HaFiles:
    return HaFiles(req.app.state.root)


def _die(message: str) -> ApiError:
    return ApiError(500, message)


def _ct_vmids(app: App) -> set[int]:
    return {v for n in app.nodes for v in store.vmids(app, n)}


def _sid(req: Request) -> tuple[str, str, str]:
    try:
        return parse_sid(req.params["sid"], _ct_vmids(req.app))
    except SidError as e:
        raise _die(str(e)) from None


def _groups_migrated(req: Request) -> bool:
    return pve_major(req.app) >= 9 and groups_migrated(_files(req).read("groups"))


# --- resources ---------------------------------------------------------------------------------

def _resource_out(cfg: SectionConfig, sid: str, hide_group: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {k: v for k, v in cfg.ids[sid].items() if not (hide_group and k == "group")}
    for key in ("max_restart", "max_relocate", "failback"):
        if key in entry:
            entry[key] = int(entry[key])
    return {**entry, "sid": sid, "digest": cfg.digest}


@route("GET", "/cluster/ha/resources")
def resources_index(req: Request) -> list[dict[str, Any]]:
    """HA resources (`type` filters)."""
    cfg = _files(req).read("resources")
    hide = _groups_migrated(req)
    return [_resource_out(cfg, sid, hide) for sid in cfg.ids
            if req.params.get("type") in (None, cfg.ids[sid]["type"])]


@route("GET", "/cluster/ha/resources/{sid}")
def resource_read(req: Request) -> dict[str, Any]:
    """One HA resource."""
    sid, _, _ = _sid(req)
    cfg = _files(req).read("resources")
    if sid not in cfg.ids:
        raise _die(f"no such resource '{sid}'")
    return _resource_out(cfg, sid, _groups_migrated(req))


def _check_group(req: Request, group: str | None) -> None:
    if group is None:
        return
    if _groups_migrated(req):
        raise _die("invalid parameter 'group': ha groups have been migrated to rules")
    if group not in _files(req).read("groups").ids:
        raise _die(f"HA group '{group}' does not exist")


@route("POST", "/cluster/ha/resources")
def resource_create(req: Request) -> None:
    """Create an HA resource: the guest must exist (PVECT.pm exists), the sid must be new."""
    sid, kind, name = _sid(req)
    if req.params.get("type") not in (None, kind):
        raise _die("types does not match")
    if kind == "vm":  # the sandbox has no VMs
        raise _die(f"resource '{sid}' does not exist in cluster")
    if kind != "ct":
        raise _die(f"unknown resource type '{kind}'")
    if not name.isdigit() or name.startswith("0") or len(name) < 3:
        raise _die("invalid VMID")
    if int(name) not in _ct_vmids(req.app):
        raise _die(f"resource '{sid}' does not exist in cluster")
    _check_group(req, req.params.get("group"))
    files = _files(req)
    with files.locked():
        cfg = files.read("resources")
        if sid in cfg.ids:
            raise _die(f"resource ID '{sid}' already defined")
        cfg.ids[sid] = {"type": kind, **{k: req.params[k] for k in RESOURCE_OPTIONS if k in req.params}}
        files.write("resources", cfg)


@route("PUT", "/cluster/ha/resources/{sid}")
def resource_update(req: Request) -> None:
    """Update an HA resource (`delete` removes options; `digest` guards concurrent changes)."""
    sid, kind, _ = _sid(req)
    if req.params.get("type") not in (None, kind):
        raise _die("types does not match")
    _check_group(req, req.params.get("group"))
    files = _files(req)
    with files.locked():
        cfg = files.read("resources")
        if req.params.get("digest") and req.params["digest"] != cfg.digest:
            raise _die("detected modified configuration - file changed by other user? Try again.")
        if sid not in cfg.ids:
            raise _die(f"no such resource '{sid}'")
        status = files.manager_status().get("service_status", {}).get(sid, {})
        if status.get("state") == "error" and req.params.get("state") != "disabled":
            raise _die(f"service '{sid}' in error state, must be disabled and fixed first")
        cfg.ids[sid].update({k: req.params[k] for k in RESOURCE_OPTIONS if k in req.params})
        for key in split_list(req.params.get("delete", "")):
            if key not in RESOURCE_OPTIONS:
                raise _die(f"no such option '{key}'")
            cfg.ids[sid].pop(key, None)
        files.write("resources", cfg)


@route("DELETE", "/cluster/ha/resources/{sid}")
def resource_delete(req: Request) -> None:
    """Remove an HA resource; with purge (default) also from the rules, dropping rules left empty."""
    sid, _, _ = _sid(req)
    if not _files(req).delete_service(sid, purge=req.params.get("purge", "1") != "0"):
        raise _die(f"cannot delete service '{sid}', not HA managed!")


def ha_request(req: Request, state: str) -> str | None:
    """A start/stop of an HA-managed container is a request to the HA manager (pve-container's
    Status.pm: a `hastart`/`hastop` task running `ha-manager set ct:ID --state ...`); None otherwise."""
    vmid = req.int("vmid")
    sid = f"ct:{vmid}"
    files = _files(req)
    if files.read("resources").ids.get(sid, {}).get("state") == "ignored" or \
            sid not in files.read("resources").ids:
        return None
    node = req.node()
    store.load(req.app, node, vmid)
    word = "start" if state == "started" else "stop"

    def work(log: Any) -> None:
        log(f"Requesting HA {word} for CT {vmid}")
        files.request_state(sid, state)

    return req.app.tasks.start(node, f"ha{word}", str(vmid), req.identity.name, work)


# --- rules (PVE 9) -----------------------------------------------------------------------------

def _rules_api(req: Request) -> None:
    if pve_major(req.app) < 9:
        raise ApiError(501, f"Method '{req.method} {PREFIX}{req.template}' not implemented")


def _rule_out(cfg: SectionConfig, rid: str, errors: ha_rules.Errors) -> dict[str, Any]:
    rule = dict(cfg.ids[rid])
    order = int(rule.pop("order", 0) or 0)
    out: dict[str, Any] = {**rule, "rule": rid, "digest": cfg.digest, "order": order,
                           "disable": int(rule.get("disable", 0) or 0)}
    if rule["type"] == "node-affinity":
        out["strict"] = int(rule.get("strict", 0) or 0)
    if rid in errors:
        out["errors"] = errors[rid]
    return out


@route("GET", "/cluster/ha/rules")
def rules_index(req: Request) -> list[dict[str, Any]]:
    """HA rules in order, each with the feasibility errors that make the CRM drop it."""
    _rules_api(req)
    cfg = _files(req).read("rules")
    errors = ha_rules.check_feasibility(cfg.ids, req.app.nodes)
    want_type, want_sid = req.params.get("type"), req.params.get("resource")
    out = [_rule_out(cfg, rid, errors) for rid in cfg.ids
           if want_type in (None, cfg.ids[rid]["type"])
           and (want_sid is None or want_sid in ha_rules.resources(cfg.ids[rid]))]
    return sorted(out, key=lambda r: (r["order"], r["rule"]))


@route("GET", "/cluster/ha/rules/{rule}")
def rule_read(req: Request) -> dict[str, Any]:
    """One HA rule."""
    _rules_api(req)
    cfg = _files(req).read("rules")
    rid = req.params["rule"]
    if rid not in cfg.ids:
        raise _die(f"no such ha rule '{rid}'")
    return _rule_out(cfg, rid, ha_rules.check_feasibility(cfg.ids, req.app.nodes))


def _check_members(req: Request, rule: dict[str, str], files: HaFiles) -> None:
    """API2/HA/Rules.pm assert_valid_resources_param / assert_valid_nodes_param."""
    sids = ha_rules.resources(rule)
    if not sids:
        raise _die("no resources were specified")
    known = files.read("resources").ids
    unmanaged = sorted(s for s in set(sids) if s not in known)
    if unmanaged:
        raise _die(f"cannot use unmanaged resource(s) {', '.join(unmanaged)}.")
    if "nodes" in rule:
        nodes = parse_nodes(rule["nodes"])
        if not nodes:
            raise _die("no nodes were specified")
        missing = sorted(n for n in nodes if n not in req.app.nodes)
        if missing:
            raise _die(f"cannot use non-existent node(s) {', '.join(missing)}.")


def _assert_feasible(req: Request, rules: dict[str, Any], rid: str) -> None:
    errors = ha_rules.check_feasibility(rules, req.app.nodes).get(rid)
    if errors:
        raise ApiError(400, f"Rule '{rid}' is invalid.", {k: ", ".join(v) for k, v in errors.items()})


def _rule_params(req: Request) -> dict[str, str]:
    skip = {"rule", "type", "digest", "delete"}
    params = {k: v for k, v in req.params.items() if k not in skip}
    if params.get("disable") == "0":
        del params["disable"]  # Rules.pm: `delete $param->{disable} if !$param->{disable}`
    return params


@contextmanager
def _rules_edit(req: Request, action: str | None) -> Iterator[tuple[HaFiles, SectionConfig]]:
    """rules.cfg under lock_ha_domain, written back unless the block raises; create and update are
    refused while HA groups are left to migrate."""
    _rules_api(req)
    files = _files(req)
    if action is not None and not groups_migrated(files.read("groups")):
        raise _die(f"cannot {action} ha rule: ha groups have not been migrated yet")
    with files.locked():
        cfg = files.read("rules")
        yield files, cfg
        files.write("rules", cfg)


def _options(kind: str, req: Request, create: bool) -> dict[str, str]:
    try:
        return ha_rules.check_options(kind, _rule_params(req), create=create)
    except ha_rules.RuleError as e:
        raise _die(str(e)) from None


@route("POST", "/cluster/ha/rules")
def rule_create(req: Request) -> None:
    """Create an HA rule; refused while HA groups are not migrated, or when it cannot be applied."""
    rid, kind = req.params["rule"], req.params["type"]
    with _rules_edit(req, "create") as (files, cfg):
        opts = _options(kind, req, create=True)
        if rid in cfg.ids:
            raise _die(f"HA rule '{rid}' already defined")
        _check_members(req, opts, files)
        order = 1 + max((int(r.get("order", 0) or 0) for r in cfg.ids.values()), default=0)
        cfg.ids[rid] = {"type": kind, **opts, "order": str(order)}
        _assert_feasible(req, cfg.ids, rid)


@route("PUT", "/cluster/ha/rules/{rule}")
def rule_update(req: Request) -> None:
    """Update an HA rule (`delete`, `digest`); the type cannot change."""
    rid = req.params["rule"]
    with _rules_edit(req, "update") as (files, cfg):
        if req.params.get("digest") and req.params["digest"] != cfg.digest:
            raise _die("detected modified configuration - file changed by other user? Try again.")
        if rid not in cfg.ids:
            raise _die(f"HA rule '{rid}' does not exist")
        kind = cfg.ids[rid]["type"]
        if req.params.get("type") not in (None, kind):
            raise _die("types does not match")
        opts = _options(kind, req, create=False)
        if "resources" in opts or "nodes" in opts:
            _check_members(req, {**cfg.ids[rid], **opts}, files)
        cfg.ids[rid].update(opts)
        for key in split_list(req.params.get("delete", "")):
            if key not in ha_rules.OPTIONS[kind]:
                raise _die(f"no such option '{key}'")
            if not ha_rules.OPTIONS[kind][key]:
                raise _die(f"unable to delete required option '{key}'")
            cfg.ids[rid].pop(key, None)
        _assert_feasible(req, cfg.ids, rid)


@route("DELETE", "/cluster/ha/rules/{rule}")
def rule_delete(req: Request) -> None:
    """Delete an HA rule (no error when it does not exist, as Rules.pm)."""
    with _rules_edit(req, None) as (_, cfg):
        cfg.ids.pop(req.params["rule"], None)
