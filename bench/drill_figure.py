"""`bench/run --figure drill --inventory PROJECT/inventory.yml`: every `drill phase3 KIND` on a live phase 3,
its times against the issue's targets (writes resume: PostgreSQL <= 30 s, Redis <= 15 s, the VIP <= 5 s, a
node <= 60 s; publishing resumes: RabbitMQ <= 10 s) and its losses (target 0: acknowledged tickets,
confirmed RabbitMQ publishes). Times are reported here, never asserted."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from psa_provision.drill.kinds import KINDS, Kind

CLI = str(Path(__file__).resolve().parent.parent / ".venv" / "bin" / "psa-provision")


def _secs(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f} s"


def figure(kind: Kind, f: dict[str, Any]) -> str:
    """One drill's JSON (drill --json-file) as the bench table's figure, each target beside its time."""
    def target(of: str) -> str:
        return f" (target <= {kind.resume_target_s:.0f} s)" if kind.resume_target_of == of else ""
    rabbit = f.get("rabbitmq")
    published = ("RabbitMQ not counted" if not rabbit else
                 f"publishing resumed {_secs(rabbit['resumed_s'])}{target('publishing')}, "
                 f"{rabbit['confirmed_lost']} of {rabbit['confirmed']} confirmed publishes lost")
    vip = (f", the VIP moved in {_secs(f.get('vip_moved_s'))}{target('vip')}"
           if kind.resume_target_of == "vip" else "")
    return (f"writes resumed {_secs(f['first_ok_after_fault_s'])}{target('writes')}{vip}, "
            "longest error window "
            f"{f['longest_error_window_s']:.1f} s, {f['acknowledged_lost']} of {f['acknowledged']} "
            f"acknowledged lost, {f['duplicates']} duplicates, {published}, "
            f"healed {'in ' + str(f['heal_s']) + ' s' if f['healed'] else 'NO'}")


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
        bench.add(f"drill {name} ({f['target']})", figure(kind, f), f"psa-provision drill phase3 {name}")
