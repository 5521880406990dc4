"""Container config endpoints: GET/PUT config (digest, delete, revert; live vs pending) and pending."""

from __future__ import annotations

import re
from typing import Any

from pvesim import ctperm
from pvesim import handlers_lxcstore as store
from pvesim.handlers_firewall import sync as sync_firewall
from pvesim.handlers_lxc import NOT_CONFIG, normalize_net, normalize_volume
from pvesim.pveconf import PveConf, Section
from pvesim.server import ApiError, Request, route

# What PVE changes on a running container at once (pve-container's LXC_FASTPLUG_OPTIONS plus
# vmconfig_hotplug_pending: cgroup limits, network; mp/dev only when new); the rest becomes pending.
FASTPLUG = {"description", "onboot", "startup", "protection", "hostname", "hookscript", "cores", "tags",
            "lock"}
HOTPLUG = FASTPLUG | {"memory", "swap", "cpulimit", "cpuunits"}
HOT_DELETE = FASTPLUG | {"swap", "cpulimit", "cpuunits"}


@route("GET", "/nodes/{node}/lxc/{vmid}/config")
def config_get(req: Request) -> dict[str, Any]:
    """Config with digest; pending values shown unless current=1; a snapshot's with snapshot=NAME."""
    node, vmid = req.node(), req.int("vmid")
    conf, digest = store.load(req.app, node, vmid)
    if "snapshot" in req.params:
        snap = conf.snapshots.get(req.params["snapshot"])
        if snap is None:
            raise ApiError(500, f"snapshot '{req.params['snapshot']}' does not exist")
        values: dict[str, Any] = snap.as_dict()
    else:
        values = conf.main.as_dict() if req.flag("current") else store.effective(conf)
    values["digest"] = digest
    return {k: _typed(k, v) for k, v in values.items()}


def _typed(key: str, value: str) -> Any:
    """Integer-valued keys come back as JSON numbers, as PVE returns them."""
    if key in {"cores", "memory", "swap", "cpuunits", "onboot", "unprivileged", "protection", "tty",
               "snaptime", "template", "console", "debug"} and value.lstrip("-").isdigit():
        return int(value)
    if key == "cpulimit":
        return float(value)
    return value


def _is_live(key: str, current: dict[str, str]) -> bool:
    """Whether setting `key` applies now on a running container."""
    if key in HOTPLUG or re.fullmatch(r"net\d+", key):
        return True
    return bool(re.fullmatch(r"(mp|dev)\d+", key)) and key not in current


def _is_live_delete(key: str) -> bool:
    """Whether deleting `key` applies now on a running container."""
    return key in HOT_DELETE or bool(re.fullmatch(r"(net|unused)\d+", key))


def _set(section: Section, key: str, value: str) -> None:
    if key == "description":
        section.description = value
    else:
        section.values[key] = value


def _unset(section: Section, key: str) -> None:
    if key == "description":
        section.description = ""
    else:
        section.values.pop(key, None)


@route("PUT", "/nodes/{node}/lxc/{vmid}/config")
def config_put(req: Request) -> None:
    """Change config: live keys apply now on a running container, the others become pending."""
    app = req.app
    node, vmid = req.node(), req.int("vmid")
    changes = {k: v for k, v in req.params.items() if k not in NOT_CONFIG}
    deletes = [k for k in re.split(r"[,;\s]+", req.params.get("delete", "")) if k]
    reverts = [k for k in re.split(r"[,;\s]+", req.params.get("revert", "")) if k]
    for key in deletes:
        if key in changes:
            raise ApiError(400, "Parameter verification failed.",
                           {"delete": f"unable to delete '{key}' - option is also set"})
        if key in ("rootfs", "hostname", "arch", "ostype"):
            raise ApiError(400, "Parameter verification failed.",
                           {"delete": f"unable to delete required option '{key}'"})
    with app.conf_lock:
        conf, digest = store.load(app, node, vmid)
        if "digest" in req.params and not digest.startswith(req.params["digest"]):
            raise ApiError(500, "detected modified configuration - file changed by other user? Try again.")
        if "lock" not in changes and "lock" not in deletes:
            store.check_lock(conf)
        # API2/LXC/Config.pm update_vm: check_ct_modify_config_perm for deletes, reverts, then values
        unprivileged = conf.main.values.get("unprivileged") == "1"
        cfg, me = req.cfg(), req.identity.name
        for names in (deletes, reverts):
            ctperm.check_modify(cfg, me, vmid, None, conf.main.values, {}, names, unprivileged)
        ctperm.check_modify(cfg, me, vmid, None, conf.main.values, changes, [], unprivileged)
        running = store.is_running(app, vmid)
        applied = _apply_changes(conf, vmid, changes, deletes, reverts, running)
        store.save(app, node, vmid, conf)
    if applied and app.backend.exists(vmid):
        logged: list[str] = []
        app.backend.update(vmid, store.backend_values(conf), logged.append)
    if applied and app.state.vm_firewall(vmid).exists():
        sync_firewall(app)  # net[n] firewall= and ip= decide what the firewall filters


def _apply_changes(conf: PveConf, vmid: int, changes: dict[str, str], deletes: list[str],
                   reverts: list[str], running: bool) -> bool:
    """Edit the config in place; True if the main section changed (the backend must follow)."""
    applied = False
    for key in reverts:
        conf.pending.pop(key, None)
        conf.pending_delete = [k for k in conf.pending_delete if k != key]
    for key in deletes:
        conf.pending.pop(key, None)
        if running and not _is_live_delete(key):
            if key not in conf.pending_delete:
                conf.pending_delete.append(key)
        else:
            _unset(conf.main, key)
            applied = True
    for key, value in changes.items():
        if re.fullmatch(r"net\d+", key):
            value = normalize_net(value, conf.main.values.get(key))
        elif key == "rootfs" or re.fullmatch(r"mp\d+", key):
            value, _ = normalize_volume(value, vmid, 0 if key == "rootfs" else int(key[2:]) + 1)
        conf.pending_delete = [k for k in conf.pending_delete if k != key]
        if running and not _is_live(key, conf.main.values):
            conf.pending[key] = value
        else:
            conf.pending.pop(key, None)
            _set(conf.main, key, value)
            applied = True
    return applied


@route("GET", "/nodes/{node}/lxc/{vmid}/pending")
def pending(req: Request) -> list[dict[str, Any]]:
    """Every key with its current value, pending value and pending delete flag."""
    node, vmid = req.node(), req.int("vmid")
    conf, _ = store.load(req.app, node, vmid)
    current = conf.main.as_dict()
    out = []
    for key in sorted(set(current) | set(conf.pending) | set(conf.pending_delete)):
        entry: dict[str, Any] = {"key": key}
        if key in current:
            entry["value"] = current[key]
        if key in conf.pending:
            entry["pending"] = conf.pending[key]
        if key in conf.pending_delete:
            entry["delete"] = 1
        out.append(entry)
    return out


