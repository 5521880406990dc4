"""`bench/run --figure drill --inventory PROJECT/inventory.yml`: every `drill phase3 KIND` on a live phase 3,
its times against the issue's targets (writes resume: PostgreSQL <= 30 s, Redis <= 15 s, RabbitMQ <= 10 s,
the VIP <= 5 s, a node <= 60 s) and its losses (target 0). Times are reported here, never asserted."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from psa_provision.drill.kinds import KINDS

CLI = str(Path(__file__).resolve().parent.parent / ".venv" / "bin" / "psa-provision")


def drills(bench: Any, inventory: Path | None, kinds: list[str] | None = None) -> None:
    """One drill per kind (the sandbox's node fault with test hooks on); a row each for the bench table."""
    path = inventory or bench.inventory
    for name in kinds or list(KINDS):
        kind = KINDS[name]
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "drill.json"
            argv = [CLI, "-i", str(path), "drill", "phase3", name, "--yes", "--json-file", str(out)]
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=1800, check=False,
                                  env={**os.environ, "PSA_TEST_HOOKS": "1"})
            if not out.is_file():
                bench.add(f"drill {name}", f"failed (exit {proc.returncode})", f"drill phase3 {name}")
                continue
            f = json.loads(out.read_text())
        resumed = f["first_ok_after_fault_s"]
        figure = (f"writes resumed {'-' if resumed is None else f'{resumed:.1f} s'} (target <= "
                  f"{kind.resume_target_s:.0f} s), longest error window {f['longest_error_window_s']:.1f} s, "
                  f"{f['acknowledged_lost']} of {f['acknowledged']} acknowledged lost, {f['duplicates']} "
                  f"duplicates, healed {'in ' + str(f['heal_s']) + ' s' if f['healed'] else 'NO'}")
        bench.add(f"drill {name} ({f['target']})", figure, f"psa-provision drill phase3 {name}")
