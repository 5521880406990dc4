"""Proxmox firewall endpoints for containers and the datacenter: options, rules, ipsets, aliases.

Configs live in etc/pve/firewall/<vmid>.fw and cluster.fw (firewall_conf); every change and every
container config change re-creates the nftables tables (firewall_nft) from all of them via sync().
As in PVE: new rules go on top whatever `pos` says, and are disabled unless enable=1; digests are
SHA1s of the file; nothing is enforced unless the datacenter firewall is enabled too.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

from pvesim import firewall_nft, guestconf
from pvesim import handlers_lxcstore as store
from pvesim.firewall_conf import FirewallConf, FirewallConfError, IpSet, digest, parse, write
from pvesim.firewall_nft import Guest, RuleError
from pvesim.server import ApiError, App, Request, route

VM_OPTIONS = ("enable", "policy_in", "policy_out", "log_level_in", "log_level_out", "dhcp", "ndp", "radv",
              "macfilter", "ipfilter")
CLUSTER_OPTIONS = ("enable", "policy_in", "policy_out", "policy_forward", "ebtables", "log_ratelimit")
INT_OPTIONS = {"enable", "dhcp", "ndp", "radv", "macfilter", "ipfilter", "ebtables"}
RULE_FIELDS = ("type", "action", "macro", "enable", "iface", "source", "dest", "proto", "dport", "sport",
               "icmp-type", "log", "comment")
MODIFIED = "detected modified configuration - file changed by other user? Try again."


# --- files ------------------------------------------------------------------------------------

def _read(path: Path) -> tuple[FirewallConf, str]:
    """A .fw file and its digest (a missing file is an empty config, as in PVE)."""
    text = path.read_text() if path.exists() else ""
    try:
        return parse(text), digest(text)
    except FirewallConfError as e:
        raise ApiError(500, f"{path.name}: {e}") from None


def _write(app: App, path: Path, conf: FirewallConf) -> None:
    """Write atomically, then enforce the new state; if nft refuses it, the old file comes back."""
    previous = path.read_text() if path.exists() else None
    _replace(path, write(conf))
    try:
        sync(app)
    except ApiError:
        if previous is None:
            path.unlink(missing_ok=True)
        else:
            _replace(path, previous)
        raise


def _replace(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _check_digest(req: Request, current: str) -> None:
    if "digest" in req.params and req.params["digest"] != current:
        raise ApiError(500, MODIFIED)


def _guest(req: Request) -> tuple[int, Path]:
    """vmid and its .fw path; PVE's error when the container is not on the node."""
    node, vmid = req.node(), req.int("vmid")
    store.load(req.app, node, vmid)
    return vmid, req.app.state.vm_firewall(vmid)


# --- enforcement ------------------------------------------------------------------------------

def guests(app: App) -> list[Guest]:
    """Every container with a .fw file, with the interfaces of its current config."""
    out = []
    for node in app.nodes:
        for vmid in store.vmids(app, node):
            path = app.state.vm_firewall(vmid)
            if not path.exists():
                continue
            try:
                conf = parse(path.read_text())
                values = store.load(app, node, vmid)[0].main.values
            except (FirewallConfError, ApiError, OSError) as e:  # one bad file must not open the others
                print(f"firewall: CT {vmid} skipped: {e}", file=sys.stderr, flush=True)
                continue
            out.append(Guest(vmid, conf, dict(guestconf.networks(values))))
    return out


def sync(app: App) -> None:
    """Re-create the nftables tables from cluster.fw and every <vmid>.fw (one nft transaction)."""
    with app.conf_lock:
        cluster, _ = _read(app.state.cluster_firewall)
        script = firewall_nft.ruleset(cluster.options.get("enable") == "1", guests(app))
        try:
            firewall_nft.load(script)
        except RuntimeError as e:
            raise ApiError(500, str(e)) from None


def forget(app: App, vmid: int) -> None:
    """A destroyed container's firewall goes with it (PVE removes <vmid>.fw on destroy)."""
    app.state.vm_firewall(vmid).unlink(missing_ok=True)
    sync(app)


# --- options ----------------------------------------------------------------------------------

def _typed_options(options: dict[str, str], fw_digest: str) -> dict[str, Any]:
    out: dict[str, Any] = {k: int(v) if k in INT_OPTIONS and v.isdigit() else v for k, v in options.items()}
    out["digest"] = fw_digest
    return out


def _put_options(req: Request, path: Path, allowed: tuple[str, ...]) -> None:
    """Set and delete options of one .fw file under the config lock, with digest check."""
    deletes = [k for k in re.split(r"[,;\s]+", req.params.get("delete", "")) if k]
    with req.app.conf_lock:
        conf, fw_digest = _read(path)
        _check_digest(req, fw_digest)
        for key in deletes:
            if key not in allowed:
                raise ApiError(400, "Parameter verification failed.", {"delete": f"no such option '{key}'"})
            conf.options.pop(key, None)
        conf.options.update({k: v for k, v in req.params.items() if k in allowed})
        _write(req.app, path, conf)


@route("GET", "/nodes/{node}/lxc/{vmid}/firewall")
def index(req: Request) -> list[dict[str, str]]:
    """Directory index."""
    _guest(req)
    return [{"name": n} for n in ("rules", "aliases", "ipset", "options")]


@route("GET", "/nodes/{node}/lxc/{vmid}/firewall/options")
def options_get(req: Request) -> dict[str, Any]:
    """The container's firewall options with the file's digest."""
    _, path = _guest(req)
    conf, fw_digest = _read(path)
    return _typed_options(conf.options, fw_digest)


@route("PUT", "/nodes/{node}/lxc/{vmid}/firewall/options")
def options_put(req: Request) -> None:
    """Change options (enable, policy_in/out, ipfilter...); enforced at once."""
    _, path = _guest(req)
    _put_options(req, path, VM_OPTIONS)


@route("GET", "/cluster/firewall/options")
def cluster_options_get(req: Request) -> dict[str, Any]:
    """Datacenter firewall options (enable defaults to 0, as in PVE)."""
    conf, fw_digest = _read(req.app.state.cluster_firewall)
    return _typed_options(conf.options, fw_digest)


@route("PUT", "/cluster/firewall/options")
def cluster_options_put(req: Request) -> None:
    """Turn the datacenter firewall on or off (no guest firewall is active while it is off)."""
    _put_options(req, req.app.state.cluster_firewall, CLUSTER_OPTIONS)


# --- rules ------------------------------------------------------------------------------------

def _rule_out(rule: dict[str, str], pos: int, fw_digest: str) -> dict[str, Any]:
    """A rule as PVE returns it: pos, digest, enable as a number, ipversion when addresses say so."""
    out: dict[str, Any] = {k: rule[k] for k in RULE_FIELDS if k in rule}
    out["enable"] = int(rule.get("enable", "1"))
    out.update(pos=pos, digest=fw_digest)
    if rule.get("source") or rule.get("dest"):
        out["ipversion"] = 4
    return out


def _verify(req: Request, rule: dict[str, str], conf: FirewallConf) -> None:
    """pve-firewall's checks; a macro's name is stored as PVE spells it; 400 naming the field."""
    node, vmid = req.node(), req.int("vmid")
    values = store.load(req.app, node, vmid)[0].main.values
    try:
        if rule.get("macro"):
            rule["macro"] = firewall_nft.macro_name(rule["macro"])
        firewall_nft.verify_rule(rule, conf, (k for k in values if re.fullmatch(r"net\d+", k)))
    except RuleError as e:
        raise ApiError(400, "Parameter verification failed.", {e.field: str(e)}) from None


def moved(rules: list[dict[str, str]], pos: int, moveto: int) -> list[dict[str, str]]:
    """The rule at `pos` placed before the rule now at `moveto` (at the end past the last), as PVE does."""
    out = [r for i, r in enumerate(rules) if i != pos and i < moveto]
    return out + [rules[pos]] + [r for i, r in enumerate(rules) if i != pos and i >= moveto]


def _rule_at(conf: FirewallConf, pos: int) -> dict[str, str]:
    if pos >= len(conf.rules):
        raise ApiError(500, f"no rule at position {pos}")
    return conf.rules[pos]


@route("GET", "/nodes/{node}/lxc/{vmid}/firewall/rules")
def rules_get(req: Request) -> list[dict[str, Any]]:
    """Rules in order (the first match decides)."""
    _, path = _guest(req)
    conf, fw_digest = _read(path)
    return [_rule_out(r, i, fw_digest) for i, r in enumerate(conf.rules)]


@route("POST", "/nodes/{node}/lxc/{vmid}/firewall/rules")
def rules_post(req: Request) -> None:
    """Add a rule on top, disabled unless enable=1. pve-firewall API2/Firewall/Rules.pm create_rule
    `unshift`s the rule and reads neither `pos` nor `digest` (only PUT .../rules/{pos} moves, with moveto)."""
    _, path = _guest(req)
    rule = {k: req.params[k] for k in RULE_FIELDS if k in req.params}
    rule.setdefault("enable", "0")
    with req.app.conf_lock:
        conf, _ = _read(path)
        _verify(req, rule, conf)
        conf.rules.insert(0, rule)
        _write(req.app, path, conf)


@route("GET", "/nodes/{node}/lxc/{vmid}/firewall/rules/{pos}")
def rule_get(req: Request) -> dict[str, Any]:
    """One rule."""
    _, path = _guest(req)
    conf, fw_digest = _read(path)
    pos = req.int("pos")
    return _rule_out(_rule_at(conf, pos), pos, fw_digest)


@route("PUT", "/nodes/{node}/lxc/{vmid}/firewall/rules/{pos}")
def rule_put(req: Request) -> None:
    """Change a rule's fields (`delete` clears some), or move it with `moveto`."""
    _, path = _guest(req)
    pos = req.int("pos")
    with req.app.conf_lock:
        conf, fw_digest = _read(path)
        _check_digest(req, fw_digest)
        rule = _rule_at(conf, pos)
        if "moveto" in req.params:
            conf.rules = moved(conf.rules, pos, req.int("moveto"))
        else:
            updated = {**rule, **{k: req.params[k] for k in RULE_FIELDS if k in req.params}}
            for key in (k for k in re.split(r"[,;\s]+", req.params.get("delete", "")) if k):
                if key in ("type", "action"):
                    raise ApiError(400, "Parameter verification failed.", {"delete": f"'{key}' is required"})
                updated.pop(key, None)
            _verify(req, updated, conf)
            conf.rules[pos] = updated
        _write(req.app, path, conf)


@route("DELETE", "/nodes/{node}/lxc/{vmid}/firewall/rules/{pos}")
def rule_delete(req: Request) -> None:
    """Remove a rule; the ones below move up."""
    _, path = _guest(req)
    with req.app.conf_lock:
        conf, fw_digest = _read(path)
        _check_digest(req, fw_digest)
        pos = req.int("pos")
        _rule_at(conf, pos)
        del conf.rules[pos]
        _write(req.app, path, conf)


# --- ipsets and aliases -----------------------------------------------------------------------

@route("GET", "/nodes/{node}/lxc/{vmid}/firewall/ipset")
def ipsets_get(req: Request) -> list[dict[str, Any]]:
    """The container's ipsets (name, comment, digest)."""
    _, path = _guest(req)
    conf, fw_digest = _read(path)
    return [{"name": n, "digest": fw_digest, **({"comment": s.comment} if s.comment else {})}
            for n, s in sorted(conf.ipsets.items())]


@route("POST", "/nodes/{node}/lxc/{vmid}/firewall/ipset")
def ipset_post(req: Request) -> None:
    """Create an ipset (or rename one with `rename`)."""
    _, path = _guest(req)
    name = req.params["name"]
    with req.app.conf_lock:
        conf, fw_digest = _read(path)
        _check_digest(req, fw_digest)
        if "rename" in req.params:
            old = conf.ipsets.pop(req.params["rename"], None)
            if old is None:
                raise ApiError(500, f"IPSet '{req.params['rename']}' does not exist")
            conf.ipsets[name] = old
        elif name in conf.ipsets:
            raise ApiError(500, f"IPSet '{name}' already exists")
        else:
            conf.ipsets[name] = IpSet(comment=req.params.get("comment", ""))
        _write(req.app, path, conf)


def _ipset(conf: FirewallConf, name: str) -> IpSet:
    if name not in conf.ipsets:
        raise ApiError(500, f"no such IPSet '{name}'")
    return conf.ipsets[name]


@route("GET", "/nodes/{node}/lxc/{vmid}/firewall/ipset/{name}")
def ipset_get(req: Request) -> list[dict[str, Any]]:
    """The entries of one ipset."""
    _, path = _guest(req)
    conf, fw_digest = _read(path)
    return [{**{k: int(v) if k == "nomatch" else v for k, v in e.items()}, "digest": fw_digest}
            for e in _ipset(conf, req.params["name"]).entries]


@route("POST", "/nodes/{node}/lxc/{vmid}/firewall/ipset/{name}")
def ipset_add(req: Request) -> None:
    """Add an address or CIDR to an ipset."""
    _, path = _guest(req)
    with req.app.conf_lock:
        conf, _ = _read(path)
        ipset = _ipset(conf, req.params["name"])
        cidr = req.params["cidr"]
        try:
            firewall_nft.addresses(cidr, conf)
        except ValueError as e:
            raise ApiError(400, "Parameter verification failed.", {"cidr": str(e)}) from None
        if any(e["cidr"] == cidr for e in ipset.entries):
            raise ApiError(500, f"address '{cidr}' already exists")
        entry = {"cidr": cidr, **({"nomatch": "1"} if req.flag("nomatch") else {})}
        if req.params.get("comment"):
            entry["comment"] = req.params["comment"]
        ipset.entries.append(entry)
        _write(req.app, path, conf)


@route("DELETE", "/nodes/{node}/lxc/{vmid}/firewall/ipset/{name}")
def ipset_delete(req: Request) -> None:
    """Delete an ipset; one with entries only with force=1, as in PVE."""
    _, path = _guest(req)
    with req.app.conf_lock:
        conf, _ = _read(path)
        ipset = _ipset(conf, req.params["name"])
        if ipset.entries and not req.flag("force"):
            raise ApiError(500, f"IPSet '{req.params['name']}' is not empty")
        del conf.ipsets[req.params["name"]]
        _write(req.app, path, conf)


@route("GET", "/nodes/{node}/lxc/{vmid}/firewall/aliases")
def aliases_get(req: Request) -> list[dict[str, Any]]:
    """The container's aliases (read-only in the sandbox)."""
    _, path = _guest(req)
    conf, fw_digest = _read(path)
    return [{**a, "digest": fw_digest} for a in conf.aliases.values()]
