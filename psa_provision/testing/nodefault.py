"""The sandbox's node fault for `drill phase3 node`: `pvesim fault node-down NODE --owner X` / `node-up`."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys


def node_fault(action: str, node: str, owner: str) -> bool:
    """Run pvesim's node fault (action: down or up); False when pvesim is not on this machine."""
    found = shutil.which("pvesim")
    if found is not None:
        cli = [found]
    elif importlib.util.find_spec("pvesim") is not None:
        cli = [sys.executable, "-m", "pvesim"]
    else:
        return False
    args = [*cli, "fault", f"node-{action}", node]
    if action == "down":
        args += ["--owner", owner]
    subprocess.run(args, check=True, capture_output=True, timeout=120)
    return True
