"""A Proxmox VE cluster where a phase is already converged, answered at the client's HTTP seam.

ConvergedPve is a ProxmoxClient whose `request` (the one HTTP call underneath every typed read)
answers GETs the way PVE shapes them, for a phase whose containers all exist, match the phase and
carry its firewall: every container config, pending list, firewall option and rule is what `up`
would have written. It counts each request by route, like CallCounter. Writes are refused: a
converged run must not write. For counting the calls a converged `plan`/`up` makes, not behaviour.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from psa_provision import firewall, privileges
from psa_provision.inventory import Inventory
from psa_provision.phases import ContainerSpec, Phase
from psa_provision.proxmox import ApiSettings, ProxmoxClient
from psa_provision.proxmox.session import CallCounter
from psa_provision.services.container import component as container_component
from psa_provision.site import MARKER

GIB = 1024 ** 3


def converged_config(spec: ContainerSpec, inv: Inventory, phase: str) -> dict[str, Any]:
    """The config PVE shows for the container `up` created from `spec` (firewall flag on net0)."""
    params = container_component.create_params(spec, template_volid=inv.template_volid, ssh_public_key="",
                                               nameserver=spec.nameserver or inv.network.nameserver,
                                               searchdomain=inv.network.searchdomain)
    config = {k: v for k, v in params.items() if k not in ("vmid", "ostemplate")}
    config["rootfs"] = f"{spec.rootfs_storage}:vm-{spec.vmid}-disk-0,size={spec.rootfs_gb}G"
    config["net0"] = f"{config['net0']},firewall=1,hwaddr=BC:24:11:00:00:{spec.vmid % 100:02X},type=veth"
    if not spec.unprivileged:
        config.pop("unprivileged")
    config.update({"arch": "amd64", "ostype": "debian", "tags": MARKER, "description": f"{MARKER}: {phase}",
                   "digest": f"{spec.vmid:040x}"})
    return config


def _rules(phase: Phase, spec: ContainerSpec) -> list[dict[str, Any]]:
    out = []
    for pos, rule in enumerate(firewall.rules(phase, spec)):
        entry: dict[str, Any] = {k: str(v) for k, v in rule.params().items()}
        entry.update({"pos": pos, "enable": 1, "ipversion": 4, "digest": f"{spec.vmid:040x}"})
        out.append(entry)
    return out


class ConvergedPve(ProxmoxClient):
    """GET answers of a cluster where `phase` is converged; `running` says what status the guests show.

    `extra` guests (earlier phases' containers still there) are listed in /cluster/resources too.
    `created` names the phase whose `up` created a container (its description), by vmid: by default
    `phase`, for a container an earlier phase created and this one took over (a live phase 2 under
    phase 3) that earlier phase.
    `on_request(method, path)` is called before each answer (a test's hook: a barrier, a check).
    """

    def __init__(self, phase: Phase, inv: Inventory, *, running: bool = True,
                 extra: tuple[ContainerSpec, ...] = (), created: dict[int, str] | None = None,
                 on_request: Callable[[str, str], None] | None = None) -> None:
        super().__init__(api=None, settings=ApiSettings(host="pve.test", token_name="psa", user="root@pam"),
                         counter=CallCounter(), notify=lambda _: None)
        self.phase, self.inv, self.running = phase, inv, running
        self.extra = extra
        self.created = created or {}
        self.on_request = on_request
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._specs = {c.vmid: c for c in (*phase.containers, *extra)}

    def request(self, method: str, path: str, params: dict[str, Any] | None = None,
                effect: object = None) -> Any:
        route = re.sub(r"/lxc/\d+", "/lxc/{vmid}", re.sub(r"/nodes/[^/]+", "/nodes/{node}", path))
        if params and path == "/cluster/resources":
            route += "?" + ",".join(f"{k}={v}" for k, v in sorted(params.items()))
        with self._lock:
            self.calls[f"{method} {route}"] += 1
            if method == "GET":
                self.counter.reads += 1
            else:
                self.counter.writes += 1
        if self.on_request is not None:
            self.on_request(method, path)
        if method != "GET":
            raise AssertionError(f"a converged run wrote: {method} {path} {params}")
        return self._answer(path, params or {})

    @property
    def per_container(self) -> Counter[str]:
        """The calls whose route names one container."""
        return Counter({k: n for k, n in self.calls.items() if "{vmid}" in k})

    def _guest(self, spec: ContainerSpec) -> dict[str, Any]:
        status = "running" if self.running else "stopped"
        return {"id": f"lxc/{spec.vmid}", "type": "lxc", "vmid": spec.vmid, "node": spec.node,
                "name": spec.hostname, "status": status, "maxmem": spec.memory_mb * 1024 * 1024,
                "maxcpu": spec.cores, "maxdisk": spec.rootfs_gb * GIB, "tags": MARKER, "template": 0}

    def _apart_rules(self) -> list[dict[str, Any]]:
        groups: dict[str, list[int]] = {}
        for c in self.phase.containers:
            if c.cluster:
                groups.setdefault(f"psa-{c.cluster}-apart", []).append(c.vmid)
        for name, svc in self.phase.services.items():
            groups[f"psa-app-{name}-apart"] = list(svc.containers)
        return [{"rule": rid, "type": "resource-affinity", "affinity": "negative",
                 "resources": ",".join(f"ct:{v}" for v in vmids)}
                for rid, vmids in groups.items() if len(vmids) > 1]

    def _answer(self, path: str, params: dict[str, Any]) -> Any:
        nodes = sorted({c.node for c in self._specs.values()} | {"pve1", "pve2", "pve3"})
        guests = [self._guest(s) for s in self._specs.values()]
        if path == "/version":
            return {"version": "9.0.3", "release": "9.0", "repoid": "0123abcd"}
        if path == "/cluster/resources":
            if params.get("type") == "vm":
                return guests
            return [*({"id": f"node/{n}", "type": "node", "node": n, "status": "online", "maxcpu": 64,
                       "maxmem": 512 * GIB} for n in nodes),
                    *({"id": f"storage/{n}/{s}", "type": "storage", "node": n, "storage": s}
                      for n in nodes for s in ("local", "local-lvm")),
                    *guests]
        if path == "/access/permissions":
            everything = {n.privilege: 1 for n in privileges.NEEDS} | {privileges.SYS_MODIFY: 1}
            return {"/": everything} if "path" not in params else {params["path"]: everything}
        if path == "/cluster/ha/resources":  # every container of an HA phase, started
            if not self.phase.high_availability:
                return []
            return [{"sid": f"ct:{c.vmid}", "type": "ct", "state": "started", "max_restart": 1,
                     "max_relocate": 1} for c in self.phase.containers]
        if path == "/cluster/ha/rules":  # each cluster's members kept apart, and each service's containers
            return self._apart_rules()
        if path == "/cluster/firewall/options":
            return {"enable": 1, "policy_in": "ACCEPT", "digest": "d" * 40}
        node_path = re.fullmatch(r"/nodes/([^/]+)(/.*)", path)
        if node_path is None:
            raise AssertionError(f"unexpected GET {path}")
        rest = node_path.group(2)
        if rest == "/network":
            return [{"iface": "vmbr20", "type": "bridge"}, {"iface": "vmbr30", "type": "bridge"}]
        if rest.startswith("/storage/") and rest.endswith("/content"):
            return [{"volid": self.inv.template_volid, "content": "vztmpl"}]
        if rest == "/lxc":
            return [g for g in guests if g["node"] == node_path.group(1)]
        ct = re.fullmatch(r"/lxc/(\d+)(/.*)", rest)
        if ct is None:
            raise AssertionError(f"unexpected GET {path}")
        spec = self._specs[int(ct.group(1))]
        config = converged_config(spec, self.inv, self.created.get(spec.vmid, self.phase.name))
        return self._container(spec, config, ct.group(2))

    def _container(self, spec: ContainerSpec, config: dict[str, Any], what: str) -> Any:
        if what == "/config":
            return config
        if what == "/pending":
            return [{"key": k, "value": v} for k, v in sorted(config.items())]
        if what == "/status/current":
            return {"status": "running" if self.running else "stopped", "vmid": spec.vmid}
        if what == "/firewall/options":
            return {**firewall.OPTIONS, "digest": f"{spec.vmid:040x}"}
        if what == "/firewall/rules":
            return _rules(self.phase, spec)
        raise AssertionError(f"unexpected GET /nodes/{spec.node}/lxc/{spec.vmid}{what}")
