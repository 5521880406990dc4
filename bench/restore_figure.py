"""bench/run --figure restore --inventory PROJECT.yml: RTO of a phase-0 restore drill with 100k tickets.

Needs a project whose phase 0 is up with the opt-in backup container 250 (README "Backup and restore":
the packaged and the bench's private phases leave it out). Tops the tickets table up to 100,000 rows
(one INSERT ... generate_series on the database), takes `backup phase0 --containers`, then runs
`restore phase0 --drill -o json` and reports its RTO (start until the restored app answers /health),
RPO and verdict.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

from psa_provision.inventory import load_inventory
from psa_provision.phases import load_phase
from psa_provision.site import ssh_connection

CLI = str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "psa-provision")
TOP_UP = ("INSERT INTO tickets (title, body, created_by) SELECT 'bench ' || g, repeat('x', 200), 'bench' "
          "FROM generate_series(1, greatest(0, 100000 - (SELECT count(*) FROM tickets))) g")


def _cli(inventory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([CLI, "-i", str(inventory), *args], capture_output=True, text=True,
                          timeout=6 * 3600, stdin=subprocess.DEVNULL, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"psa-provision {' '.join(args)} exited {proc.returncode}:\n"
                         f"{(proc.stdout + proc.stderr)[-4000:]}")
    return proc


def restore(bench: object, inventory: Path | None) -> None:
    """Adds the figure rows to `bench` (bench.Bench)."""
    if inventory is None:
        raise SystemExit("--figure restore needs --inventory: a project with phase 0 up, the opt-in "
                         "backup container included (README \"Backup and restore\")")
    inv = load_inventory(inventory)
    db = load_phase("phase0", inv.phases_dir).containers[0]
    conn = ssh_connection(inv, db)
    try:
        psql = "cd / && runuser -u postgres -- psql -XAtq -d psa_platform -c "
        conn.run(psql + shlex.quote(TOP_UP), timeout=1800)
        count = conn.run(psql + shlex.quote("SELECT count(*) FROM tickets")).stdout.strip()
    finally:
        conn.close()
    _cli(inventory, "backup", "phase0", "--containers")
    report = json.loads(_cli(inventory, "restore", "phase0", "--drill", "-o", "json").stdout)
    cmd = f"psa-provision -i {inventory} restore phase0 --drill -o json"
    rto = f"{report['rto_s']:.1f} s"
    bench.add(f"restore drill RTO (phase 0, {count} tickets)", rto, cmd)  # type: ignore[attr-defined]
    rpo = "all lost" if report["rpo_s"] is None else f"{report['rpo_s']:.1f} s"
    bench.add("restore drill RPO (acknowledged writes lost)", rpo, cmd)  # type: ignore[attr-defined]
    verdict = f"{'pass' if report['passed'] else 'FAIL'}, {report['differences']} table differences"
    bench.add("restore drill verdict", verdict, cmd)  # type: ignore[attr-defined]
