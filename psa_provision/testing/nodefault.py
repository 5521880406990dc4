"""The sandbox's node fault for `drill phase3 node`: `pvesim fault node-down NODE --owner X` / `node-up`,
and `fault clear --owner X` (what a drill cut short leaves down comes back)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys

from psa_provision.errors import ProvisionError


def node_fault(action: str, node: str, owner: str) -> bool:
    """Run pvesim's node fault (action: down, up, or release: the owner's faults cleared, a node it
    took down back online, nothing if there is none); False when pvesim is not on this machine."""
    found = shutil.which("pvesim")
    if found is not None:
        cli = [found]
    elif importlib.util.find_spec("pvesim") is not None:
        cli = [sys.executable, "-m", "pvesim"]
    else:
        return False
    if action == "release":
        args = [*cli, "fault", "clear", "--owner", owner]
    else:
        args = [*cli, "fault", f"node-{action}", node] + (["--owner", owner] if action == "down" else [])
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        said = (proc.stderr or proc.stdout).strip() or f"exit {proc.returncode}"
        raise ProvisionError(f"sandbox: `pvesim {' '.join(args[len(cli):])}` failed: {said}")
    return True
