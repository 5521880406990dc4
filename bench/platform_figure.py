"""bench/run --figure platform [--phase PHASE]: how much load the deployed platform sustains.

Drives the phase's gateway with psa_provision.testing.platform_load (the PSA mix, stepped up until p99
reaches 500 ms or errors, bounded in rate, requests and time), then reads what ran out first: the
node's and each container's CPU and memory from Proxmox rrddata during the saturating step, and per
container the processes that used the most CPU in it (`ps` in the guest, before and after each step).
Each run's figure is kept in the workdir (platform-<phase>.json) so the ratio between phases shows.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from psa_provision import proxmox
from psa_provision.engine import ssh_connection
from psa_provision.inventory import load_inventory
from psa_provision.phases import ContainerSpec, load_phase
from psa_provision.testing import platform_load as pl

CLI = str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "psa-provision")
PS = "ps -eo comm=,times="  # command name and CPU seconds used so far, per process
SEED_RPM = 1000  # seed: "- Max API requests/minute: **1,000**" (phase 0)


def cpu_by_command(ps_output: str) -> dict[str, float]:
    """CPU seconds per command name from PS's output (`postgres 12`): processes of one name summed."""
    out: dict[str, float] = {}
    for line in ps_output.splitlines():
        name, _, used = line.strip().rpartition(" ")
        if name and used.isdigit():
            out[name.strip()] = out.get(name.strip(), 0.0) + float(used)
    return out


def delta(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """CPU seconds each command used between two readings (a process gone or new counts from 0)."""
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0) > 0}


def during(rows: Sequence[Mapping[str, Any]], start: float, end: float) -> list[Mapping[str, Any]]:
    """rrddata rows whose minute overlaps [start, end] (a row's `time` is the start of its 60 s step)."""
    return [r for r in rows
            if isinstance(r.get("time"), int | float) and start - 60 < float(r["time"]) <= end]


def mean(values: Iterable[float]) -> float | None:
    listed = list(values)
    return sum(listed) / len(listed) if listed else None


def first_saturated(node_cpu: Mapping[str, float | None],
                    containers: Mapping[str, tuple[float | None, float | None]],
                    processes: Mapping[str, Mapping[str, float]], seconds: float) -> str:
    """What ran out first in the saturating step, in words: the host CPU when a node was >= 90% busy,
    else the busiest container; with the processes that used the most CPU there.

    node_cpu: node -> CPU % (rrddata); containers: hostname -> (cores in use, memory %);
    processes: hostname -> command -> CPU seconds in the step, which lasted `seconds`.
    """
    parts: list[str] = []
    busy_nodes = [f"{n} CPU {c:.0f}%" for n, c in node_cpu.items() if c is not None and c >= 90]
    if busy_nodes:
        parts.append("host CPU (" + ", ".join(busy_nodes) + ")")
    full = [f"{h} memory {m:.0f}%" for h, (_, m) in containers.items() if m is not None and m >= 90]
    parts += full
    busiest = max(processes, key=lambda h: sum(processes[h].values()), default=None)
    if busiest is not None and processes[busiest]:
        top = sorted(processes[busiest].items(), key=lambda kv: -kv[1])[:3]
        cores = sum(processes[busiest].values()) / seconds if seconds else 0.0
        parts.append(f"busiest container {busiest} ({cores:.2f} cores: "
                     + ", ".join(f"{name} {used / seconds:.2f}" for name, used in top) + ")")
    return "; ".join(parts) or "nothing measured"


def platform(bench: Any, phase: str, inventory: Path | None, bounds: pl.Bounds) -> None:
    """Run the stepped load on `phase` and add its rows to the bench table."""
    own = inventory is None
    path = inventory or bench.inventory
    if own and phase == "phase0":
        bench.cli("up", "phase0", "--yes")  # the bench's own container, converged (cold when absent)
    inv = load_inventory(path)
    ph = load_phase(phase, inv.phases_dir)
    gateway = ph.services["api-gateway"]
    url = f"http://{ph.container(gateway.container).ip}:{gateway.port}"
    secrets = [subprocess.run([CLI, "-i", str(path), "secrets", "show", key], capture_output=True, text=True,
                              check=True, timeout=60).stdout.strip()
               for key in ("app.admin_email", "app.admin_password")]
    px = proxmox.connect(inv)
    conns = {c.hostname: ssh_connection(inv, c) for c in ph.containers}
    readings: list[dict[str, dict[str, float]]] = []

    def read_guests(_: pl.Step | None) -> None:
        readings.append({h: cpu_by_command(c.run(PS, check=False, timeout=60).stdout)
                         for h, c in conns.items()})

    command = f"bench/run --figure platform --phase {phase}" + (f" --inventory {path}" if not own else "")
    try:
        client = pl.Client(url, secrets[0], secrets[1], random.Random(15))
        report = pl.run(client, bounds, lambda text: print(text, file=sys.stderr, flush=True), read_guests)
    finally:
        for conn in conns.values():
            conn.close()
    _rows(bench, phase, ph.containers, px, report, bounds, readings, command)


def _rows(bench: Any, phase: str, containers: Sequence[ContainerSpec], px: proxmox.ProxmoxClient,
          report: pl.LoadReport, bounds: pl.Bounds, readings: list[dict[str, dict[str, float]]],
          command: str) -> None:
    name = f"platform {phase}"
    best = report.sustained(bounds)
    sent = sum(s.requests for s in report.steps)
    errors = sum(s.errors for s in report.steps)
    steps = ", ".join(f"{s.rate:g}/s p99 {s.p99 * 1000:.0f} ms" for s in report.steps)
    bench.add(f"{name}: steps (target rate, p99)", steps or "none", command)
    sustained = f"{best.per_minute:.0f}/min (step {best.rate:g}/s, p99 {best.p99 * 1000:.0f} ms)" if best \
        else "none: the first step was already past p99 500 ms"
    bench.add(f"{name}: sustained requests/minute at p99 < 500 ms", sustained, command)
    bench.add(f"{name}: error rate", f"{100 * errors / sent if sent else 0:.2f}% of {sent} requests "
              f"(sustained step: {100 * best.error_rate if best else 0:.2f}%)", command)
    bench.add(f"{name}: stopped", report.stopped, command)
    step = report.saturating or (report.steps[-1] if report.steps else None)
    if step is not None and len(readings) >= 2:
        index = report.steps.index(step) + 1
        processes = {h: delta(readings[index - 1].get(h, {}), readings[index].get(h, {}))
                     for h in readings[index]}
        end = step.started + step.seconds
        time.sleep(max(0.0, 75 - (time.time() - end)))  # rrddata closes a row once its minute is over
        nodes = {c.node for c in containers}
        node_cpu = {n: mean(100 * float(r["cpu"]) for r in during(px.rrddata(n), step.started, end)
                            if isinstance(r.get("cpu"), int | float)) for n in nodes}
        use: dict[str, tuple[float | None, float | None]] = {}
        for c in containers:
            rows = during(px.rrddata(c.node, c.vmid), step.started, end)
            use[c.hostname] = (mean(float(r["cpu"]) * float(r.get("maxcpu") or c.cores) for r in rows
                                    if isinstance(r.get("cpu"), int | float)),
                               mean(100 * float(r["mem"]) / float(r["maxmem"]) for r in rows
                                    if r.get("mem") is not None and float(r.get("maxmem") or 0) > 0))
        which = "saturating" if report.saturating else "last"
        bench.add(f"{name}: first saturated resource ({which} step, {step.rate:g}/s)",
                  first_saturated(node_cpu, use, processes, step.seconds),
                  "rrddata (node, containers) + `ps -eo comm=,times=` in each guest")
    kept = Path(bench.workdir) / f"platform-{phase}.json"
    kept.write_text(json.dumps({"phase": phase, "per_minute": best.per_minute if best else 0.0}))
    if phase == "phase0" and best is not None:
        verdict = "holds" if best.per_minute >= SEED_RPM else "does not hold"
        bench.add(f"{name}: seed's 1,000 API requests/minute for phase 0", f"{verdict} here", command)
    base = Path(bench.workdir) / "platform-phase0.json"
    if phase != "phase0" and best is not None and base.is_file():
        zero = float(json.loads(base.read_text())["per_minute"])
        bench.add(f"{name}: ratio to phase 0", f"{best.per_minute / zero:.2f}x" if zero else "phase 0: none",
                  f"(sustained/min, {kept.name} / {base.name})")
