"""`status`: every container any phase names that exists, and the services of the newest live phase."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from psa_provision.errors import ConnectionFailed
from psa_provision.inventory import Inventory, load_inventory
from psa_provision.phases import ContainerSpec, Phase, load_all
from psa_provision.proxmox import connect
from psa_provision.reads import guests_now, newest_running
from psa_provision.services.app.health import PM2_STATES, health_script
from psa_provision.site import ssh_connection


def status(inventory_path: Path, phase: str | None = None) -> tuple[list[list[str]], list[list[str]]]:
    """(container rows, service rows) for every container any phase file names that exists.

    Services are those of `phase`, or of the newest phase whose containers all run."""
    inv = load_inventory(inventory_path)
    phases = load_all(inv.phases_dir)
    px = connect(inv)
    guests = guests_now(px)
    seen: dict[int, ContainerSpec] = {}
    for ph in phases:
        for spec in ph.containers:
            seen.setdefault(spec.vmid, spec)
    crow: list[list[str]] = []
    for vmid, spec in sorted(seen.items()):
        g = guests.get(vmid)
        if g is None:
            continue
        mem = f"{int(g.get('mem', 0)) // 2**20}/{int(g.get('maxmem', 0)) // 2**20} MiB"
        crow.append([str(g.get("node")), str(vmid), spec.hostname, str(g.get("status")),
                     f"{float(g.get('cpu', 0)) * 100:.0f}%", mem])
    srow = _service_rows(inv, [p for p in phases if phase in (None, p.name)], guests)
    return crow, srow


def _service_rows(inv: Inventory, phases: list[Phase], guests: dict[int, dict[str, Any]]) -> list[list[str]]:
    """Services of the newest phase whose containers all run: PM2 instances online + /health."""
    phase = newest_running(phases, guests)
    if phase is None:
        return []
    rows = []
    for spec in phase.containers:
        services = phase.services_on(spec.vmid)
        if not services:
            continue
        script = (health_script(phase, spec)
                  + PM2_STATES)
        conn = ssh_connection(inv, spec)
        try:
            out = conn.run(script, check=False).stdout
        except ConnectionFailed as exc:
            out = ""
            rows.append([phase.name, spec.hostname, "(ssh)", "-", "-", exc.message])
        finally:
            conn.close()
        codes = dict(line.split() for line in out.splitlines() if len(line.split()) == 2)
        online: dict[str, int] = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == "pm2":
                online[parts[1]] = online.get(parts[1], 0) + (parts[2] == "online")
        for name, svc in sorted(services.items(), key=lambda kv: kv[1].port):
            code = codes.get(str(svc.port), "-")
            health = "healthy" if code == "200" else f"unhealthy ({code})"
            running = f"{online.get(name, 0)}/{svc.instances} online"
            rows.append([phase.name, spec.hostname, name, str(svc.port), running, health])
    return rows
