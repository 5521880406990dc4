"""`psa-provision health`: the seed's health-check script as a command, for any phase.

For each container of the phase: its Proxmox status (CPU, memory, disk from status/current), then
one probe script over SSH that prints raw facts (`probe<TAB>code<TAB>detail`), judged here into one
line per component: OK or FAILED and why. Judging is pure, so it is tested with recorded output.
Each component's probe and judgement live with it (services/<name>/health.py).

A phase with clusters (phase 3) gets one more line per cluster: the same probe script of each member
also gathers what its cluster's verdict needs (`fact<TAB>...`, services/clusters.py), and once every
container has answered the verdicts are judged across members: one leader, Sentinels agreeing on the
primary, every node in the cluster, the VIP on exactly one load balancer. The containers are probed
side by side, one SSH round trip each.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from psa_provision.errors import ProvisionError
from psa_provision.facts_ahead import FACTS_AT_ONCE
from psa_provision.services.app import health as app_health
from psa_provision.services.app.component import probe_address
from psa_provision.services.app.health import failing_checks
from psa_provision.services.clusters import ClusterVerdict, facts_script, verdicts
from psa_provision.services.elasticsearch import health as elasticsearch_health
from psa_provision.services.etcd import health as etcd_health
from psa_provision.services.haproxy import health as haproxy_health
from psa_provision.services.keepalived import health as keepalived_health
from psa_provision.services.members import MemberFacts
from psa_provision.services.patroni import health as patroni_health
from psa_provision.services.patroni import patroni_managed
from psa_provision.services.postgresql import health as postgresql_health
from psa_provision.services.rabbitmq import health as rabbitmq_health
from psa_provision.services.redis import health as redis_health

__all__ = ["ContainerHealth", "HealthLine", "HealthReport", "Usage", "check_container", "failing_checks",
           "format_report", "judge", "parse_probes", "probe_script", "run", "usage_from"]

GIB = 1024**3
PROBE_TIMEOUT = 120.0
# Components with a health probe; base/nodejs/scripts are covered by the app and verify.
PROBED = ("etcd", "postgresql", "patroni", "redis", "rabbitmq", "elasticsearch", "haproxy", "keepalived",
          "app")
FACT = "fact:"  # a probe line carrying a fact for a cluster's verdict (its output in base64)
AT_ONCE = FACTS_AT_ONCE  # containers probed at once, each one SSH connection (sshd's MaxStartups)

_PROBES: dict[str, str] = {
    "etcd": etcd_health.PROBE,
    "patroni": patroni_health.PROBE,
    "postgresql": postgresql_health.PROBE,
    "redis": redis_health.PROBE,
    "rabbitmq": rabbitmq_health.PROBE,
    "elasticsearch": elasticsearch_health.PROBE,
    "haproxy": haproxy_health.PROBE,
    "keepalived": keepalived_health.PROBE,
}
# A component's own judgement of its probe's answer (None: the default, exit code 0 is OK)
_JUDGES: dict[str, Callable[[int, str], tuple[bool, str] | None]] = {
    "etcd": etcd_health.judge,
    "patroni": patroni_health.judge,
    "redis": redis_health.judge,
    "elasticsearch": elasticsearch_health.judge,
}
_PRELUDE = r"""IFS= read -r REDIS_PASSWORD || true
cd / || exit 1
probe() {
  name=$1; shift
  out=$("$@" 2>&1); rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(printf '%s' "$out" | tr '\t\n' '  ' | cut -c1-300)"
}
fact() {  # whole output (stderr when stdout is empty), base64 on one line
  name=$1; shift
  err=$(mktemp)
  out=$("$@" 2>"$err"); rc=$?
  [ -n "$out" ] || out=$(cat "$err")
  rm -f "$err"
  printf 'fact:%s\t%s\t%s\n' "$name" "$rc" "$(printf '%s' "$out" | base64 -w0)"
}
"""


@dataclass(frozen=True)
class HealthLine:
    """One component (or service) of one container: OK or FAILED, and why."""

    container: str
    component: str
    ok: bool
    why: str


@dataclass(frozen=True)
class Usage:
    """A container's resources from Proxmox status/current."""

    status: str
    cpu_percent: float
    cpus: int
    mem_bytes: int
    maxmem_bytes: int
    disk_bytes: int
    maxdisk_bytes: int

    def describe(self) -> str:
        """`CPU 3.1% of 4 cores, RAM 1.2/8.0 GiB, disk 2.5/20.0 GiB (12%)`."""
        disk_pct = 100 * self.disk_bytes / self.maxdisk_bytes if self.maxdisk_bytes else 0.0
        return (f"CPU {self.cpu_percent:.1f}% of {self.cpus} cores, "
                f"RAM {self.mem_bytes / GIB:.1f}/{self.maxmem_bytes / GIB:.1f} GiB, "
                f"disk {self.disk_bytes / GIB:.1f}/{self.maxdisk_bytes / GIB:.1f} GiB ({disk_pct:.0f}%)")


@dataclass
class ContainerHealth:
    """All lines of one container plus its resources (and, on a cluster member, its cluster's facts)."""

    hostname: str
    vmid: int
    usage: Usage | None
    lines: list[HealthLine] = field(default_factory=list)
    facts: MemberFacts | None = None


@dataclass
class HealthReport:
    """Health of every container of a phase; exit code 1 when anything is down."""

    phase: str
    containers: list[ContainerHealth] = field(default_factory=list)
    clusters: list[ClusterVerdict] = field(default_factory=list)

    @property
    def failed(self) -> list[HealthLine]:
        lines = [line for c in self.containers for line in c.lines]
        return [line for line in [*lines, *self.cluster_lines] if not line.ok]

    @property
    def cluster_lines(self) -> list[HealthLine]:
        """One line per cluster: `cluster <name> (<members>)`, its judging service, the verdict."""
        return [HealthLine(f"cluster {v.name} ({', '.join(v.members)})", v.component, v.ok, v.why)
                for v in self.clusters]

    @property
    def exit_code(self) -> int:
        return 1 if self.failed or not self.containers else 0

    columns: ClassVar[tuple[str, ...]] = ("container", "component", "result", "why")

    def rows(self) -> list[list[str]]:
        """Table rows: per container its resources, then one row per component (cli's table)."""
        out: list[list[str]] = []
        for c in self.containers:
            name = f"{c.hostname} ({c.vmid})"
            usage = c.usage.describe() if c.usage else "status unknown"
            out.append([name, "resources", c.usage.status if c.usage else "?", usage])
            out += [[name, line.component, "OK" if line.ok else "FAILED", line.why] for line in c.lines]
        out += [[line.container, line.component, "OK" if line.ok else "FAILED", line.why]
                for line in self.cluster_lines]
        return out


def usage_from(status: Mapping[str, Any]) -> Usage:
    """Usage from a status/current answer (`cpu` is the fraction of the container's cores in use)."""
    def num(key: str) -> int:
        return int(status.get(key) or 0)

    return Usage(status=str(status.get("status", "unknown")), cpu_percent=100 * float(status.get("cpu") or 0),
                 cpus=num("cpus") or 1, mem_bytes=num("mem"), maxmem_bytes=num("maxmem"),
                 disk_bytes=num("disk"), maxdisk_bytes=num("maxdisk"))


def probe_script(components: Iterable[str], services: Mapping[str, tuple[int, int]],
                 hosts: Mapping[str, str] | None = None, facts: str = "") -> str:
    """The bash script probing one container's components (reads the Redis password from stdin);
    every instance of a service (name -> (port, instances)) is probed on hosts[name] (where it listens),
    else on loopback; `facts`: what its cluster's verdict needs of it (clusters.facts_script), gathered
    last."""
    parts = [_PRELUDE]
    comps = list(components)
    parts += [_PROBES[c] for c in PROBED if c in comps and c in _PROBES]
    if "app" in comps and services:
        parts += app_health.probes(services, hosts)
    if facts:
        parts.append(facts)
    return "\n".join(parts) + "\n"


def parse_probes(stdout: str) -> dict[str, tuple[int, str]]:
    """`name<TAB>code<TAB>detail` lines -> {name: (code, detail)}; other lines are ignored."""
    out: dict[str, tuple[int, str]] = {}
    for line in stdout.splitlines():
        parts = line.split("\t", 2)
        if len(parts) >= 2 and parts[1].strip().lstrip("-").isdigit():
            out[parts[0]] = (int(parts[1]), parts[2].strip() if len(parts) == 3 else "")
    return out


def member_facts(spec: Any, probes: Mapping[str, tuple[int, str]]) -> MemberFacts:
    """The `fact:` answers of the probe (decoded) as its cluster's verdict takes them."""
    facts: dict[str, tuple[int, str]] = {}
    for name, (code, encoded) in probes.items():
        if name.startswith(FACT):
            try:
                text = base64.b64decode(encoded, validate=True).decode("utf-8", errors="replace")
            except (binascii.Error, ValueError):
                text = ""
            facts[name.removeprefix(FACT)] = (code, text)
    return MemberFacts(spec.hostname, spec.ip, facts)


def _judge_component(name: str, code: int, detail: str) -> tuple[bool, str]:
    own = _JUDGES.get(name)
    verdict = own(code, detail) if own is not None else None
    if verdict is not None:
        return verdict
    if code == 0:
        return True, detail or "ok"
    return False, f"exit {code}: {detail[:160]}" if detail else f"exit {code}"


def judge(hostname: str, components: Iterable[str], services: Mapping[str, tuple[int, int]],
          probes: Mapping[str, tuple[int, str]]) -> list[HealthLine]:
    """One HealthLine per probed component and per service (services: name -> (port, instances))."""
    lines: list[HealthLine] = []
    comps = list(components)
    for name in (c for c in PROBED if c in comps and c != "app"):
        if name not in probes:
            lines.append(HealthLine(hostname, name, False, "no answer from the probe"))
            continue
        ok, why = _judge_component(name, *probes[name])
        lines.append(HealthLine(hostname, name, ok, why))
    if "app" in comps:
        lines += [HealthLine(hostname, name, ok, why) for name, ok, why in app_health.judge(services, probes)]
    return lines


def format_report(report: HealthReport) -> list[str]:
    """Plain lines: per container a heading with its resources, then one line per component; then,
    for a phase with clusters, one line per cluster."""
    out: list[str] = []
    for c in report.containers:
        usage = c.usage.describe() if c.usage else "status unknown"
        state = c.usage.status if c.usage else "?"
        out.append(f"{c.hostname} ({c.vmid}) {state}: {usage}")
        width = max((len(line.component) for line in c.lines), default=0)
        out += [f"  {line.component:<{width}}  {'OK' if line.ok else 'FAILED':<6}  {line.why}"
                for line in c.lines]
    if report.clusters:
        out.append("clusters:")
        out += [f"  {line.container}  {line.component}  {'OK' if line.ok else 'FAILED'}  {line.why}"
                for line in report.cluster_lines]
    failed = len(report.failed)
    out.append(f"{failed} failed" if failed else "all components OK")
    return out


class Runner(Protocol):
    """What health needs of an SSH connection (ssh.Connection fits)."""

    def run(self, script: str, *, stdin: str | bytes | None = None, user: str = "root", check: bool = True,
            timeout: float = ..., cwd: str | None = None, idempotent: bool = True) -> Any: ...


def check_container(spec: Any, phase: Any, usage: Usage | None, conn: Runner,
                    redis_password: str) -> ContainerHealth:
    """Probe one container over SSH and judge the answers; a stopped or unreachable one fails whole.
    A cluster member's probe gathers its cluster's facts too (health.facts)."""
    health = ContainerHealth(hostname=spec.hostname, vmid=spec.vmid, usage=usage)
    # Patroni is no component of the phase file: it runs beside PostgreSQL on a cluster member
    patroni = ["patroni"] if patroni_managed(spec.components, spec.cluster) else []
    comps = [c for c in PROBED if c in [*spec.components, *patroni]]
    services = {n: (s.port, s.instances) for n, s in phase.services_on(spec.vmid).items()}
    names = [c for c in comps if c != "app"] + (sorted(services) if "app" in comps else [])
    facts = facts_script(phase, spec)
    if usage is not None and usage.status != "running":
        health.lines = [HealthLine(spec.hostname, n, False, f"container is {usage.status}") for n in names]
        health.facts = MemberFacts(spec.hostname, spec.ip, absent=f"container is {usage.status}")
        return health
    hosts = {n: probe_address(phase, spec, n) for n in services}
    script = probe_script(comps, services, hosts, facts)
    try:
        result = conn.run(script, stdin=redis_password + "\n", check=False, timeout=PROBE_TIMEOUT)
    except (ProvisionError, OSError) as exc:  # SSH down: every component of it is FAILED
        health.lines = [HealthLine(spec.hostname, n, False, f"SSH failed: {exc}") for n in names]
        health.facts = MemberFacts(spec.hostname, spec.ip, absent="SSH failed")
        return health
    probes = parse_probes(result.stdout)
    health.lines = judge(spec.hostname, comps, services, probes)
    health.facts = member_facts(spec, probes) if facts else None
    return health


def run(inventory: Any, phase: Any, *, redis_password: str | None = None, proxmox: Any = None,
        connect: Callable[[Any], Runner] | None = None) -> HealthReport:
    """Health of every container of the phase; what is not given is opened from the inventory.

    `connect(spec)` gives an SSH connection to one container (default: site.ssh_connection, the
    provisioning SSH with its pinned host keys); `redis_password` defaults to the secrets file's.
    """
    from psa_provision import proxmox as proxmox_api
    from psa_provision.reads import side_by_side
    from psa_provision.secrets import load_secrets
    from psa_provision.site import ssh_connection

    if redis_password is None:
        redis_password = load_secrets(inventory.secrets_file).get("redis.password").value
    api = proxmox if proxmox is not None else proxmox_api.connect(inventory)
    opened: list[Any] = []

    def default_connect(spec: Any) -> Runner:
        conn = ssh_connection(inventory, spec)  # the tool's pinned host keys
        opened.append(conn)
        return conn

    report = HealthReport(phase=phase.name)
    # where each container is now: the HA manager may have recovered it to another node than the phase
    # file's (one /cluster/resources read)
    where = {int(g["vmid"]): str(g["node"]) for g in api.cluster_resources()
             if g.get("type") == "lxc" and "vmid" in g and "node" in g}
    try:  # every container at once (each one SSH round trip), the report in phase order
        report.containers = side_by_side(
            lambda spec: _container(spec, where.get(spec.vmid, spec.node), phase, api,
                                    connect or default_connect, redis_password),
            phase.containers, workers=AT_ONCE)
    finally:
        for conn in opened:
            conn.close()
    gathered = {c.hostname: c.facts for c in report.containers if c.facts is not None}
    report.clusters = verdicts(phase, gathered)
    return report


def _container(spec: Any, node: str, phase: Any, api: Any, connect: Callable[[Any], Runner],
               redis_password: str) -> ContainerHealth:
    try:
        usage = usage_from(api.status(node, spec.vmid))
    except (ProvisionError, OSError) as exc:  # an absent container is a FAILED line, not a crash
        return ContainerHealth(spec.hostname, spec.vmid, None, [
            HealthLine(spec.hostname, "container", False, f"Proxmox status failed: {exc}")],
            MemberFacts(spec.hostname, spec.ip, absent="Proxmox status failed"))
    return check_container(spec, phase, usage, connect(spec), redis_password)


def run_phase(inventory_path: Path, phase: str) -> HealthReport:
    """`health PHASE`: the site loaded from the inventory file, then run()."""
    from psa_provision.site import load_site

    site = load_site(inventory_path, phase)
    return run(site.inventory, site.phase)
