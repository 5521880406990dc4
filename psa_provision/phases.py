"""Phase files (phases/phaseN.yml) -> topology: containers, their components, where services run.

Data, not code. `load_phase(name, dir)` validates one file (unique vmids/IPs/hostnames, known
components and services, IPs inside their bridge's subnet, memory >= component minimums, and
phase_ha.py's rules: quorum clusters of >= 3, no lone load balancer, and in a `high_availability` phase
every service on 2 nodes and every store in a cluster).
`check_all(dir)` also checks across files: a vmid keeps one role (and hostname) for its whole life,
and reports capacity per node as warnings.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .errors import InputError
from .loader import Loc, line_of, load_model_and_lines, show

APP_SERVICES: dict[str, int] = {
    "api-gateway": 3000, "auth": 3010, "crm": 3020, "tickets": 3030,
    "billing": 3040, "projects": 3050, "assets": 3060, "reports": 3070,
}
# Components in install order; a container lists the ones it runs.
COMPONENTS: tuple[str, ...] = (
    "base", "postgresql", "pgbackrest", "redis", "rabbitmq", "elasticsearch", "nodejs", "app", "scripts",
    "haproxy", "etcd", "keepalived", "backup",
)
# Memory a component needs at least (MiB), summed per container.
MIN_MEMORY_MB: dict[str, int] = {
    "base": 128, "postgresql": 1024, "redis": 256, "rabbitmq": 512, "elasticsearch": 2048,
    "nodejs": 0, "app": 0, "scripts": 0, "haproxy": 128, "etcd": 256, "keepalived": 0, "pgbackrest": 0,
    "backup": 256,
}
APP_INSTANCE_MB = 128
SUBNETS: dict[str, str] = {"vmbr20": "10.0.20.0/24", "vmbr30": "10.0.30.0/24"}
_PHASE_NAME = re.compile(r"^phase[0-9]+$")
MAX_MEMORY_MB = 4 * 1024 * 1024  # 4 TiB: more than any Proxmox node holds
MAX_DISK_GB = 1024 * 1024  # 1 PiB


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ContainerSpec(_Strict):
    """One LXC container, as `pct create` takes it, plus what runs on it."""

    vmid: int = Field(ge=100, le=999_999_999, examples=[200])  # PVE reserves ids below 100
    hostname: str = Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", examples=["psa-db"],
                          description="a host name: 1-63 lowercase letters, digits and '-' (no '_', "
                          "no '-' at either end)")
    role: str = Field(pattern=r"^[a-z0-9-]+$", description="lowercase letters, digits and '-'",
                      examples=["postgresql"])
    node: str = Field(pattern=r"^[a-zA-Z0-9][a-zA-Z0-9-]*$", description="a Proxmox node name",
                      examples=["pve1"])
    cores: int = Field(ge=1, le=512, examples=[4])
    memory_mb: int = Field(ge=256, le=MAX_MEMORY_MB, examples=[8192])
    swap_mb: int = Field(default=0, ge=0, le=MAX_MEMORY_MB, examples=[1024])
    rootfs_storage: str = Field(default="local-lvm", pattern=r"^[A-Za-z][A-Za-z0-9._-]*$",
                                description="a Proxmox storage id", examples=["local-lvm"])
    rootfs_gb: int = Field(ge=1, le=MAX_DISK_GB, examples=[100])
    bridge: str = Field(pattern=r"^vmbr[0-9]+$", description="a Linux bridge name vmbrN", examples=["vmbr20"])
    ip_cidr: str = Field(examples=["10.0.20.100/24"])
    gateway: str = Field(examples=["10.0.20.1"])
    nameserver: str | None = Field(default=None, examples=["10.0.20.1"])  # None: the inventory's
    unprivileged: bool = True
    features: dict[Literal["nesting", "keyctl", "fuse", "mknod", "force_rw_sys"],
                   Annotated[int, Field(ge=0, le=1)]] = Field(default={"nesting": 1},
                                                              examples=["{nesting: 1}"])
    onboot: bool = True
    components: list[str] = []
    services: list[str] = []
    cluster: str | None = Field(default=None, pattern=r"^[a-z0-9-]+$", examples=["postgresql"],
                                description="lowercase letters, digits and '-'")  # members on different nodes
    vip: str | None = Field(default=None, examples=["10.0.20.250/24"],
                            description="the virtual IP with prefix that keepalived moves between the "
                            "members of this container's cluster (a load balancer pair)")

    @model_validator(mode="after")
    def _check(self) -> ContainerSpec:
        self._check_addresses()
        unknown = [c for c in self.components if c not in COMPONENTS]
        if unknown:
            raise ValueError(f"unknown component(s) {', '.join(map(show, unknown))}"
                             f"{_close(unknown, COMPONENTS)} -> use only: {', '.join(COMPONENTS)}")
        if "pgbackrest" in self.components and "postgresql" not in self.components:
            raise ValueError("the 'pgbackrest' component archives a PostgreSQL: add postgresql to its "
                             "components, or remove pgbackrest")
        if self.services and "app" not in self.components:
            raise ValueError("a container with services needs the 'app' component -> add app (and nodejs) "
                             "to its components")
        return self

    def _check_addresses(self) -> None:
        """ip_cidr is a host address with prefix, in its bridge's subnet; the gateway is inside it."""
        if self.nameserver is not None:
            try:
                ipaddress.IPv4Address(self.nameserver)
            except ValueError:
                raise ValueError(f"nameserver '{self.nameserver}' is not an IPv4 address -> write e.g. "
                                 "10.0.20.1, or leave it out to use the inventory's") from None
        try:
            iface = ipaddress.IPv4Interface(self.ip_cidr)
        except ValueError:
            raise ValueError(f"ip_cidr '{self.ip_cidr}' is not an IPv4 address with prefix "
                             "-> write e.g. 10.0.20.100/24") from None
        if "/" not in self.ip_cidr:
            raise ValueError(f"ip_cidr '{self.ip_cidr}' needs a prefix -> write e.g. {self.ip_cidr}/24")
        net = iface.network
        if net.prefixlen < 31 and iface.ip in (net.network_address, net.broadcast_address):
            raise ValueError(f"ip_cidr {self.ip_cidr} is the network's own or broadcast address -> "
                             f"write a host address, e.g. {_host(net, 100)}/{net.prefixlen}")
        try:
            gw = ipaddress.IPv4Address(self.gateway)
        except ValueError:
            raise ValueError(f"gateway '{self.gateway}' is not an IPv4 address -> write e.g. "
                             f"{_host(iface.network, 1)}") from None
        if gw not in iface.network:
            raise ValueError(f"gateway {gw} is outside {iface.network} -> write the bridge's address in "
                             f"{iface.network}, e.g. {_host(iface.network, 1)}")
        subnet = SUBNETS.get(self.bridge)
        if subnet and iface.network != ipaddress.IPv4Network(subnet):
            net = ipaddress.IPv4Network(subnet)
            raise ValueError(f"ip_cidr {self.ip_cidr} is not in {self.bridge}'s subnet {subnet} -> write an "
                             f"address in {subnet}, e.g. {_host(net, 100)}/{net.prefixlen}, or change bridge")

    @property
    def ip(self) -> str:
        """The address without prefix (e.g. 10.0.20.100)."""
        return str(ipaddress.IPv4Interface(self.ip_cidr).ip)

    @property
    def min_memory_mb(self) -> int:
        return sum(MIN_MEMORY_MB[c] for c in self.components)


def _host(net: ipaddress.IPv4Network, n: int) -> ipaddress.IPv4Address:
    """The n-th address of a network (or its first host when the network is smaller)."""
    return net.network_address + n if n < net.num_addresses - 1 else next(net.hosts(), net.network_address)


def _close(words: list[str], known: tuple[str, ...] | dict[str, int]) -> str:
    """` (did you mean 'x'?)` for the first misspelt word that resembles a known one, else ''."""
    for w in words:
        close = difflib.get_close_matches(str(w), list(known), n=1, cutoff=0.6)
        if close:
            return f" (did you mean '{close[0]}'?)"
    return ""


class ServiceSpec(_Strict):
    """An application service: its port, PM2 instance count, and the container (vmid) it runs on."""

    port: int = Field(ge=1024, le=65535, examples=[3000])
    instances: int = Field(default=2, ge=1, le=64, examples=[2])
    container: int = Field(examples=[200])
    also_on: list[int] = Field(default=[], examples=["[125]"],
                               description="more containers (vmids) that run the service too, each with "
                               "`instances` processes, behind the load balancer")

    @property
    def containers(self) -> list[int]:
        """Every container that runs the service: `container` first, then `also_on`."""
        return [self.container, *self.also_on]


class NodeSpec(_Strict):
    """A Proxmox node's capacity, for the per-node capacity check (warnings only)."""

    cores: int = Field(ge=1, le=65536, examples=[32])
    memory_mb: int = Field(ge=1024, le=MAX_MEMORY_MB, examples=[131072])


class Phase(_Strict):
    """One phase: its containers and where each app service runs."""

    name: str = Field(pattern=_PHASE_NAME.pattern, description="phase followed by a number",
                      examples=["phase0"])
    description: str = ""
    nodes: dict[str, NodeSpec] = {}
    high_availability: bool = False  # `phases --check` enforces no single point of failure (phase_ha.py)
    containers: list[ContainerSpec]
    services: dict[str, ServiceSpec] = {}

    def container(self, vmid: int) -> ContainerSpec:
        for c in self.containers:
            if c.vmid == vmid:
                return c
        raise KeyError(vmid)

    def services_on(self, vmid: int) -> dict[str, ServiceSpec]:
        return {n: s for n, s in self.services.items() if vmid in s.containers}

    def with_component(self, component: str) -> list[ContainerSpec]:
        """Containers running `component` (e.g. where PostgreSQL lives)."""
        return [c for c in self.containers if component in c.components]


@dataclass(frozen=True)
class Problem:
    """A validation finding; errors fail `phases --check`, warnings (capacity) are printed."""

    file: str
    line: int
    message: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.severity}: {self.message}"


def phase_path(name: str, phases_dir: Path) -> Path:
    return Path(phases_dir) / f"{name}.yml"


def _raw(name: str, phases_dir: Path) -> tuple[Phase, dict[Loc, int], Path]:
    if not _PHASE_NAME.match(name):
        raise InputError(f"unknown phase '{name}'", hint="write phase0, phase1, phase2 or phase3")
    path = phase_path(name, phases_dir)
    if not path.is_file():
        known = ", ".join(p.stem for p in sorted(Path(phases_dir).glob("phase*.yml"))) or "none"
        raise InputError(f"unknown phase '{name}': no {path}", hint=f"phases in {phases_dir}: {known}")
    try:
        key = (str(path.resolve()), path.read_bytes())
    except OSError:  # load_model_and_lines says why, with the file's name
        key = (str(path), b"")
    phase, lines = _LOADED.get(key) or load_model_and_lines(path, Phase)
    if key[1]:
        _LOADED[key] = phase, lines
    if phase.name != name:
        raise InputError(f"{path}:{line_of(('name',), lines)}: name is '{phase.name}' but the file is "
                         f"{path.name} -> write name: {name}")
    return phase, lines, path


# Phase files parsed in this process, by path and content: one `up` reads every phase file in three
# places (earlier phases' containers, handover, migrations); Phase is frozen, so one parse is shared.
_LOADED: dict[tuple[str, bytes], tuple[Phase, dict[Loc, int]]] = {}


def _dupes(phase: Phase, lines: dict[Loc, int], path: Path) -> list[Problem]:
    """Duplicate vmids, IPs, hostnames within one phase, naming both places."""
    out: list[Problem] = []
    for key in ("vmid", "ip", "hostname"):
        seen: dict[object, int] = {}
        for i, c in enumerate(phase.containers):
            value = getattr(c, key)
            line = line_of(("containers", i, "ip_cidr" if key == "ip" else key), lines)
            if value in seen:
                out.append(Problem(str(path), line, f"duplicate {key} {value}: also at "
                                   f"{path}:{seen[value]} -> give each container its own {key}"))
            else:
                seen[value] = line
    return out


def _placement(phase: Phase, lines: dict[Loc, int], path: Path) -> list[Problem]:
    """Every service placed on a container of this phase that runs the app; known services only."""
    out: list[Problem] = []
    vmids: dict[int, ContainerSpec] = {}
    for c in phase.containers:  # the first of duplicate vmids (the duplicate is reported by _dupes)
        vmids.setdefault(c.vmid, c)
    for name, svc in phase.services.items():
        line = line_of(("services", name), lines)
        if name not in APP_SERVICES:
            known = ", ".join(APP_SERVICES)
            out.append(Problem(str(path), line, f"unknown service '{show(name)}'"
                               f"{_close([name], APP_SERVICES)} -> use one of: {known}"))
        for k, vmid in enumerate(svc.containers):
            at = line if k == 0 else line_of(("services", name, "also_on", k - 1), lines)
            if vmid not in vmids:
                fix = "set container: to" if k == 0 else "in also_on use"
                out.append(Problem(str(path), at, f"service {show(name)} placed on container {vmid}, "
                                   f"which this phase does not define -> {fix} one of "
                                   f"{', '.join(map(str, vmids)) or '(none defined)'}"))
            elif name not in vmids[vmid].services:
                out.append(Problem(str(path), at, f"service {show(name)} placed on {vmid} but that "
                                   f"container's services list does not name it -> add {show(name)} to it"))
    for i, c in enumerate(phase.containers):
        for s in c.services:
            if s not in phase.services:
                out.append(Problem(str(path), line_of(("containers", i, "services"), lines),
                                   f"container {c.vmid} lists service '{show(s)}' without an entry under "
                                   f"services -> add `{show(s)}: {{port: ..., container: {c.vmid}}}` "
                                   "under services"))
            elif c.vmid not in (where := phase.services[s].containers) and set(where) <= set(vmids):
                out.append(Problem(str(path), line_of(("containers", i, "services"), lines),
                                   f"container {c.vmid} lists service {show(s)}, which runs on "
                                   f"{', '.join(map(str, where))} -> add {c.vmid} to "
                                   f"{show(s)}'s also_on, or remove {show(s)} here"))
    if phase.services and set(phase.services) != set(APP_SERVICES):
        missing = sorted(set(APP_SERVICES) - set(phase.services))
        if missing:
            out.append(Problem(str(path), line_of(("services",), lines),
                               f"services not placed: {', '.join(missing)} -> add each under services "
                               "with its port and container"))
    ports: dict[tuple[int, int], str] = {}
    for name, svc in phase.services.items():
        for vmid in svc.containers:
            if (vmid, svc.port) in ports:
                other = ports[vmid, svc.port]
                out.append(Problem(str(path), line_of(("services", name, "port"), lines),
                                   f"port {svc.port} on {vmid} also used by {show(other)} -> give each "
                                   "service its own port"))
            ports[vmid, svc.port] = name
    return out


def _resources(phase: Phase, lines: dict[Loc, int], path: Path) -> list[Problem]:
    """Memory >= component minimums (error); clusters spread over nodes; node capacity (warning)."""
    out: list[Problem] = []
    for i, c in enumerate(phase.containers):
        need = c.min_memory_mb + APP_INSTANCE_MB * sum(
            s.instances for n, s in phase.services.items() if c.vmid in s.containers)
        if c.memory_mb < need:
            out.append(Problem(str(path), line_of(("containers", i, "memory_mb"), lines),
                               f"container {c.vmid} has {c.memory_mb} MB, its components need >= {need} MB"
                               f" -> write memory_mb: {need} or more"))
    members: dict[str, dict[str, int]] = defaultdict(dict)
    for i, c in enumerate(phase.containers):
        if c.cluster is None:
            continue
        if c.node in members[c.cluster]:
            other = members[c.cluster][c.node]
            out.append(Problem(str(path), line_of(("containers", i, "node"), lines),
                               f"cluster {show(c.cluster)}: {c.vmid} and {other} share node {c.node} -> "
                               "place cluster members on different nodes"))
        members[c.cluster][c.node] = c.vmid
    for node, cap in phase.nodes.items():
        on = [c for c in phase.containers if c.node == node]
        mem = sum(c.memory_mb for c in on)
        if mem > cap.memory_mb:
            out.append(Problem(str(path), line_of(("nodes", node), lines),
                               f"node {show(node)}: containers ask {mem} MB of {cap.memory_mb} MB",
                               "warning"))
        cores = sum(c.cores for c in on)
        if cores > cap.cores:
            out.append(Problem(str(path), line_of(("nodes", node), lines),
                               f"node {show(node)}: containers ask {cores} cores of {cap.cores} (overcommit)",
                               "warning"))
    return out


def _backup(phase: Phase, lines: dict[Loc, int], path: Path) -> list[Problem]:
    """A container archiving PostgreSQL (pgbackrest) needs the phase's one backup container (the
    repository host); the backup container runs nothing else that holds data."""
    out: list[Problem] = []
    repos = [i for i, c in enumerate(phase.containers) if "backup" in c.components]
    for i in repos[1:]:
        out.append(Problem(str(path), line_of(("containers", i, "components"), lines),
                           "a second container with the backup component -> one repository host per phase"))
    for i, c in enumerate(phase.containers):
        if "pgbackrest" in c.components and not repos:
            out.append(Problem(str(path), line_of(("containers", i, "components"), lines),
                               f"container {c.vmid} archives PostgreSQL (pgbackrest) but no container of "
                               "this phase has the backup component -> add the backup container "
                               "(repository host), or remove pgbackrest"))
        if "backup" in c.components and {"postgresql", "redis", "rabbitmq", "elasticsearch"} & set(
                c.components):
            out.append(Problem(str(path), line_of(("containers", i, "components"), lines),
                               f"container {c.vmid} holds both a store and the backup repository -> keep "
                               "the repository off the containers whose data it backs up"))
    return out


def validate(phase: Phase, lines: dict[Loc, int], path: Path) -> list[Problem]:
    """All single-file checks beyond the schema."""
    from .phase_ha import ha_problems  # it builds on Problem and the models above

    return (_dupes(phase, lines, path) + _placement(phase, lines, path) + _resources(phase, lines, path)
            + _backup(phase, lines, path) + ha_problems(phase, lines, path))


def load_phase(name: str, phases_dir: Path) -> Phase:
    """Load and validate phases_dir/NAME.yml; InputError (file:line) on any error-level problem."""
    phase, lines, path = _raw(name, phases_dir)
    errors = [p for p in validate(phase, lines, path) if p.severity == "error"]
    if errors:
        raise InputError("\n".join(str(p) for p in errors))
    return phase


def where(name: str, phases_dir: Path, *loc: str | int) -> str:
    """`file:line` of a key of phase `name` (e.g. where("phase0", d, "containers", 0, "features"))."""
    _, lines, path = _raw(name, phases_dir)
    return f"{path}:{line_of(tuple(loc), lines)}"


def load_all(phases_dir: Path) -> list[Phase]:
    """Every phase file in the directory, in order (each validated alone)."""
    return [load_phase(p.stem, phases_dir) for p in sorted(Path(phases_dir).glob("phase*.yml"))]


def around(name: str, phases_dir: Path) -> tuple[list[Phase], list[Phase]]:
    """(the phases before `name`, the phases after it) in phase-file order; both empty when no phase
    file is called `name`. The one place that says which phase comes before or after another."""
    phases = load_all(phases_dir)
    names = [p.name for p in phases]
    if name not in names:
        return [], []
    at = names.index(name)
    return phases[:at], phases[at + 1:]


def _across(loaded: list[tuple[Phase, dict[Loc, int], Path]]) -> list[Problem]:
    """A vmid keeps its role and hostname across phases; an IP belongs to one vmid."""
    out: list[Problem] = []
    by_vmid: dict[int, tuple[str, str, str]] = {}
    by_ip: dict[str, tuple[int, str]] = {}
    for phase, lines, path in loaded:
        for i, c in enumerate(phase.containers):
            here = f"{path}:{line_of(('containers', i, 'vmid'), lines)}"
            if c.vmid in by_vmid:
                role, host, there = by_vmid[c.vmid]
                if (role, host) != (c.role, c.hostname) and not there.startswith(f"{path}:"):
                    out.append(Problem(str(path), line_of(("containers", i, "vmid"), lines),
                                       f"vmid {c.vmid} is {c.role} ({c.hostname}) here but {role} ({host}) "
                                       f"at {there} -> a vmid keeps one role for life; pick a free vmid"))
            else:
                by_vmid[c.vmid] = (c.role, c.hostname, here)
            if c.ip in by_ip and by_ip[c.ip][0] != c.vmid and not by_ip[c.ip][1].startswith(f"{path}:"):
                vmid, there = by_ip[c.ip]
                out.append(Problem(str(path), line_of(("containers", i, "ip_cidr"), lines),
                                   f"IP {c.ip} is vmid {c.vmid} here but vmid {vmid} at {there} -> an IP "
                                   "belongs to one container; pick a free one"))
            by_ip.setdefault(c.ip, (c.vmid, here))
    return out


def check_all(phases_dir: Path) -> list[Problem]:
    """Validate every phase file alone and together; returns problems (errors and warnings)."""
    problems: list[Problem] = []
    loaded: list[tuple[Phase, dict[Loc, int], Path]] = []
    files = sorted(Path(phases_dir).glob("phase*.yml"))
    if not files:
        return [Problem(str(phases_dir), 0, "no phase*.yml files here")]
    for f in files:
        try:
            phase, lines, path = _raw(f.stem, phases_dir)
        except InputError as exc:
            found = exc.message.splitlines()
            if exc.hint:  # keep the "what to write" of a one-line error (e.g. a YAML syntax error)
                found[-1] += f" -> {exc.hint}"
            problems.extend(_problem(str(f), m) for m in found)
            continue
        problems.extend(validate(phase, lines, path))
        loaded.append((phase, lines, path))
    return problems + _across(loaded)


def _problem(file: str, message: str) -> Problem:
    """A Problem from an InputError line `file:line: text` (line 0 if it has none)."""
    m = re.match(r"^([^:]+):(\d+): (.*)$", message)
    return Problem(m.group(1), int(m.group(2)), m.group(3)) if m else Problem(file, 0, message)
