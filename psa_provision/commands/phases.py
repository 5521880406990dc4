"""`phases`: the phase files' containers and services as rows, or their problems with --check."""

from __future__ import annotations

from pathlib import Path

from psa_provision.inventory import load_inventory
from psa_provision.phases import Problem, check_all, load_all


def rows(inventory: Path) -> list[list[str]]:
    """One row per container of every phase: phase, vmid, hostname, node, ip, services."""
    inv = load_inventory(inventory)
    out = []
    for ph in load_all(inv.phases_dir):
        for c in ph.containers:
            out.append([ph.name, str(c.vmid), c.hostname, c.node, c.ip_cidr,
                        ", ".join(sorted(ph.services_on(c.vmid))) or "-"])
    return out


def problems(inventory: Path) -> list[Problem]:
    """Every phase file validated together (errors and warnings)."""
    return check_all(load_inventory(inventory).phases_dir)
