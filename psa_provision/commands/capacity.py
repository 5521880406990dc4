"""`psa-provision capacity [PHASE]`: the live platform's load against the seed's limits.

Reads, changing nothing: tenants, active users and tickets per day from the app's PostgreSQL (a
read-only psql session over the tool's SSH), API requests per minute from the gateway's /metrics (curl
on its own container), CPU and memory in use per container from Proxmox rrddata. capacity.decide
judges them; exit 0 within limits, 3 when one is crossed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psa_provision import proxmox
from psa_provision.capacity import ContainerUse, Measured, Verdict, decide, use_from_rrd
from psa_provision.errors import InputError, ProvisionError, ProxmoxAuthError, ProxmoxError
from psa_provision.inventory import Inventory, load_inventory
from psa_provision.limits import Limits, load_limits
from psa_provision.phases import ContainerSpec, Phase, load_all, load_phase
from psa_provision.reads import guests_now, newest_running
from psa_provision.services.app import usage
from psa_provision.site import ssh_connection
from psa_provision.ssh import Connection

SQL_TIMEOUT = 60.0
COLUMNS = ("figure", "value", "limit", "status", "days until", "note")


@dataclass(frozen=True)
class Report:
    """What the command prints: the verdict and where each figure was read."""

    verdict: Verdict
    sources: dict[str, str]

    @property
    def exit_code(self) -> int:
        return self.verdict.exit_code

    def rows(self) -> list[list[str]]:
        out = []
        for r in self.verdict.rows:
            value = "?" if r.value is None else f"{r.value:g}"
            days = "-" if r.days_until is None else ("now" if r.days_until == 0 else f"{r.days_until:g}")
            out.append([r.figure, value, r.limit, r.status, days, r.note])
        return out

    def lines(self) -> list[str]:
        """The matrix's recommendation, the first limit at the current growth, review and alerts."""
        v = self.verdict
        why = f" (by {', '.join(v.driven_by).replace('_', ' ')})" if v.driven_by else ""
        out = [f"Decision Matrix: {v.matrix_column}, uptime SLA {v.uptime_sla} -> {v.recommended}{why}: "
               f"{v.advice}"]
        growth = "no history" if v.growth_per_day is None else f"{v.growth_per_day:+g} tickets/day per day"
        if v.first_limit is not None and v.first_limit.days_until is not None:
            first = v.first_limit
            when = "reached now" if first.days_until == 0 else f"in {first.days_until:g} days"
            out.append(f"first limit at the current growth ({growth} over 7 days): {first.figure} "
                       f"{first.limit}, {when}")
        else:
            out.append(f"no limit comes nearer at the current growth ({growth} over 7 days)")
        if v.review_due:
            out.append(f"next review due: reached {' or '.join(v.review_due)} (seed: \"Next Review\")")
        if v.crossed:
            out.append("limit crossed: " + "; ".join(f"{r.figure} {r.value:g} ({r.limit})" for r in v.crossed
                                                     if r.value is not None))
        return out

    def as_dict(self) -> dict[str, Any]:
        return {**self.verdict.as_dict(), "sources": self.sources}


def current_phase(inv: Inventory, px: proxmox.ProxmoxClient) -> str:
    """The newest phase whose containers all run (what `status` shows services of)."""
    live = newest_running(load_all(inv.phases_dir), guests_now(px))
    if live is None:
        raise InputError("no phase has all its containers running: nothing to measure",
                         hint="name the phase (`psa-provision capacity phase0`), or `psa-provision status`")
    return live.name


def run(inventory_path: Path, phase: str | None = None, *, limits: Limits | None = None,
        connect: Callable[[ContainerSpec], Connection] | None = None) -> Report:
    """Measure the phase's live platform (default: the newest running phase) and judge it."""
    inv = load_inventory(inventory_path)
    limits = limits or load_limits()
    px = proxmox.connect(inv)
    name = phase or current_phase(inv, px)
    limits.phase(name)  # an unknown phase is refused before anything is read
    ph = load_phase(name, inv.phases_dir)
    with _connections(inv, connect) as open_conn:
        measured, sources = measure(ph, px, open_conn, limits.headroom.window_minutes)
    return Report(decide(limits, name, measured), sources)


@contextmanager
def _connections(inv: Inventory, connect: Callable[[ContainerSpec], Connection] | None
                 ) -> Iterator[Callable[[ContainerSpec], Connection]]:
    """One SSH connection per container, opened when first asked for, all closed at the end."""
    opened: dict[int, Connection] = {}

    def get(spec: ContainerSpec) -> Connection:
        if spec.vmid not in opened:
            opened[spec.vmid] = (connect or (lambda s: ssh_connection(inv, s)))(spec)
        return opened[spec.vmid]

    try:
        yield get
    finally:
        for conn in opened.values():
            conn.close()


def measure(ph: Phase, px: proxmox.ProxmoxClient, conn: Callable[[ContainerSpec], Connection],
            window_minutes: int) -> tuple[Measured, dict[str, str]]:
    """Read every figure of the phase's live platform; a figure that cannot be read is missing, with
    why (PostgreSQL not answering at all is an error: nothing could be judged)."""
    stores = ph.with_component("postgresql")
    if not stores:
        raise InputError(f"phase {ph.name} has no PostgreSQL container to read the app's figures from")
    pg = stores[0]
    result = conn(pg).run(usage.SCRIPT, stdin=usage.SQL, check=False, timeout=SQL_TIMEOUT)
    db = usage.parse_database(result.stdout)
    if db.tenants is None and db.users is None and not db.daily_tickets:
        raise ProvisionError(f"{pg.hostname}: the app's database did not answer: {result.tail(5).strip()}",
                             hint="check PostgreSQL with `psa-provision health`")
    gateway = ph.services.get("api-gateway")
    missing = dict(db.missing)
    sources = {"tenants, users, tickets/day": f"PostgreSQL on {pg.hostname} ({pg.ip}), read-only"}
    rpm: int | None = None
    if gateway is None:
        missing["requests_per_minute"] = f"phase {ph.name} places no api-gateway"
    else:
        spec = ph.container(gateway.container)
        try:
            answer = conn(spec).run(usage.metrics_script(gateway.port), check=False, timeout=30)
            metrics = usage.parse_metrics(answer.stdout)
        except (ProvisionError, OSError) as exc:
            metrics = usage.GatewayUsage(None, why=f"SSH to {spec.hostname} failed: {exc}")
        rpm = metrics.requests_last_minute
        if rpm is None:
            missing["requests_per_minute"] = metrics.why
        else:
            sources["API requests/minute"] = (f"GET /metrics of the gateway on {spec.hostname}: last minute, "
                                              f"{metrics.workers} workers; per minute over 5 min: "
                                              f"{metrics.requests_per_minute_5m:g}")
    containers = tuple(_use(px, spec, window_minutes) for spec in ph.containers)
    sources["CPU, memory"] = f"Proxmox rrddata (timeframe hour, AVERAGE), last {window_minutes} min"
    measured = Measured(db.tenants, db.users, db.tickets_per_day, db.daily_tickets, rpm, containers, missing)
    return measured, sources


def _use(px: proxmox.ProxmoxClient, spec: ContainerSpec, window_minutes: int) -> ContainerUse:
    try:
        rows = px.rrddata(spec.node, spec.vmid, timeframe="hour")
    except ProxmoxAuthError:
        raise  # a privilege the token lacks: the user must know, not read it as missing data
    except ProxmoxError as exc:
        return ContainerUse(spec.vmid, spec.hostname, None, None, f"rrddata: {exc.message}")
    cpu, memory = use_from_rrd(rows, window_minutes)
    return ContainerUse(spec.vmid, spec.hostname, cpu, memory)
