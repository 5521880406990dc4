"""The performance benchmark of issue 7: cold and converged `up phase0`, `plan phase0`, `verify phase0`.

Runs the real CLI (one process per figure, as a user would) against the sandbox on a private copy of
the phase files (container --vmid at 10.0.20.(vmid-100), hostname psa-bench-<vmid>), reads each run's
cost from its stderr line and the journal's run-end record, and prints one table where every figure
names the command that produced it. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from psa_provision import sandbox  # the venv has the project installed (bench/run uses it)

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = REPO / ".venv" / "bin"
CLI = str(VENV_BIN / "psa-provision")
PVESIM = str(VENV_BIN / "pvesim")
ACNG_LOG = Path("/var/lib/pvesim/apt-cacher-ng/log/apt-cacher.log")
COST = re.compile(r"([\d.]+) s, (\d+) Proxmox API calls, (\d+) SSH connections, (\d+) guest commands")
CATEGORIES = ("proxmox", "packages", "configuration", "app build", "facts", "waiting")
UP_TIMEOUT = 3600
NOT_YET = "not measured yet (phase 1 / migrate in progress)"


@dataclass
class Run:
    """One CLI run: the command line, exit code, output, wall seconds."""

    argv: list[str]
    code: int
    stdout: str
    stderr: str
    wall: float

    @property
    def command(self) -> str:
        return shlex.join(["psa-provision", *self.argv[1:]])

    def cost(self) -> tuple[int, int, int]:
        """(API calls, SSH connections, guest commands) from the run's cost line on stderr."""
        found = COST.search(self.stderr)
        if not found:
            raise SystemExit(f"no cost line in the output of {self.command}:\n{self.stderr[-2000:]}")
        return int(found[2]), int(found[3]), int(found[4])


@dataclass
class Row:
    """One line of the result table."""

    what: str
    figure: str
    command: str


@dataclass
class Bench:
    """The private site (workdir, inventory) the benchmark runs on."""

    vmid: int
    workdir: Path
    rows: list[Row] = field(default_factory=list)

    @property
    def inventory(self) -> Path:
        return self.workdir / "sandbox.yml"

    def cli(self, *args: str, timeout: float = UP_TIMEOUT, check: bool = True) -> Run:
        argv = [CLI, "-i", str(self.inventory), *args]
        started = time.monotonic()
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=REPO,
                              stdin=subprocess.DEVNULL, check=False)
        run = Run(argv, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)
        if check and run.code not in (0, 2):
            raise SystemExit(f"{run.command} exited {run.code}:\n{(run.stdout + run.stderr)[-4000:]}")
        return run

    def add(self, what: str, figure: str, command: str) -> None:
        self.rows.append(Row(what, figure, command))
        print(f"  {what}: {figure}", file=sys.stderr, flush=True)

    def last_run_end(self) -> dict[str, object]:
        """The journal's last run-end record (seconds, api_calls, timings per category)."""
        journal = self.workdir / "sandbox.journal" / "phase0.journal.jsonl"
        ends = [json.loads(line) for line in journal.read_text().splitlines() if '"run-end"' in line]
        if not ends:
            raise SystemExit(f"no run-end record in {journal}")
        return dict(ends[-1])


# -- setup -------------------------------------------------------------------------------------------
def setup(bench: Bench) -> None:
    """Inventory (copy of inventories/sandbox.yml with the private phases and the sandbox token) + init."""
    proc = subprocess.run([PVESIM, "credentials", "--json"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"the sandbox is not running (pvesim credentials: {proc.stderr.strip()}); pvesim up")
    creds = json.loads(proc.stdout)
    phases = sandbox.private_phases(bench.workdir, bench.vmid, f"psa-bench-{bench.vmid}")
    sandbox.write_inventory(bench.workdir, phases, creds)
    bench.cli("init", timeout=120)


# -- measurements ------------------------------------------------------------------------------------
def cold_up(bench: Bench) -> None:
    """destroy, then a cold `up phase0` split by category (journal run-end timings)."""
    bench.cli("destroy", "phase0", "--yes", timeout=600)
    mark = acng_size()
    run = bench.cli("up", "phase0", "--yes")
    end = bench.last_run_end()
    timings = dict(end.get("timings") or {})  # type: ignore[call-overload]
    wall = run.wall
    bench.add("cold up phase0: wall", f"{wall:.0f} s", run.command)
    for name in CATEGORIES:
        bench.add(f"  of which {name}", f"{float(timings.get(name, 0)):.0f} s", "(journal run-end timings)")
    other = wall - sum(float(v) for v in timings.values())
    bench.add("  of which other (tool start, planning)", f"{other:.0f} s", "(wall minus the above)")
    api, ssh, cmds = run.cost()
    bench.add("cold up phase0: API calls / SSH connections / guest commands", f"{api} / {ssh} / {cmds}",
              run.command)
    bench.add("cold up phase0: apt-cacher-ng", acng_summary(mark, bench.vmid), f"(log {ACNG_LOG})")
    bench.add("cold up phase0: npm downloads (guest npm caches)", npm_caches(bench), NPM_CACHES)


def converged(bench: Bench, runs: int) -> None:
    """Median of `runs` converged `up phase0` and `plan phase0`, with their counts."""
    warm = bench.cli("up", "phase0", "--yes")  # converge first: the figures are for `nothing to change`
    if "0 changed" not in warm.stdout:
        print(f"note: the warm-up `up` still changed something:\n{warm.stdout[-1500:]}", file=sys.stderr)
    for command in (("up", "phase0", "--yes"), ("plan", "phase0")):
        results = [bench.cli(*command) for _ in range(runs)]
        walls = sorted(r.wall for r in results)
        name = f"converged {command[0]} phase0"
        spread = f"(min {walls[0]:.2f}, max {walls[-1]:.2f})"
        bench.add(f"{name}: wall, median of {runs}", f"{statistics.median(walls):.2f} s {spread}",
                  results[0].command)
        api, ssh, cmds = results[-1].cost()
        bench.add(f"{name}: API calls / SSH connections / guest commands", f"{api} / {ssh} / {cmds}",
                  results[-1].command)
        if command[0] == "up":
            changed = [r for r in results if not re.search(r"^0 changed", r.stdout, re.M)]
            bench.add(f"{name}: runs that changed something", str(len(changed)), results[0].command)


def verify(bench: Bench) -> None:
    run = bench.cli("verify", "phase0", check=False)
    verdict = "passed" if run.code == 0 else f"exit {run.code}"
    bench.add("verify phase0: wall", f"{run.wall:.1f} s ({verdict})", run.command)


NPM_CACHES = "du -sb /root/.npm/_cacache /home/psa/.npm/_cacache (in the guest)"


def npm_caches(bench: Bench) -> str:
    """What npm fetched from the registry on a fresh guest (its caches start empty; no proxy cache)."""
    key = bench.workdir / "keys" / "sandbox_ed25519"
    known = bench.workdir / "sandbox.journal" / "known_hosts"
    argv = ["ssh", "-i", str(key), "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes", f"root@10.0.20.{bench.vmid - 100}", NPM_CACHES.split(" (")[0]]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    sizes = [int(line.split()[0]) for line in proc.stdout.splitlines() if line.strip()]
    if not sizes:
        return f"could not read ({proc.stderr.strip()[:80]})"
    return f"{sum(sizes) / 2**20:.1f} MiB fetched from registry.npmjs.org (pm2 + the app's dependencies)"


def acng_size() -> int:
    return ACNG_LOG.stat().st_size if ACNG_LOG.exists() else 0


def acng_summary(mark: int, vmid: int) -> str:
    """What apt-cacher-ng served the guest since `mark`: from cache vs fetched upstream (I lines)."""
    if not ACNG_LOG.exists():
        return "log not found"
    ip = f"10.0.20.{vmid - 100}"
    with ACNG_LOG.open("rb") as handle:
        handle.seek(mark)
        lines = handle.read().decode(errors="replace").splitlines()
    served = fetched = debs_fetched = 0
    for line in lines:
        parts = line.split("|")
        if len(parts) < 5 or parts[3] != ip:
            continue
        size = int(parts[2]) if parts[2].isdigit() else 0
        if parts[1] == "O":
            served += size
        elif parts[1] == "I":
            fetched += size
            debs_fetched += parts[4].endswith(".deb")
    return (f"served {served / 2**20:.0f} MiB, fetched upstream {fetched / 2**20:.1f} MiB "
            f"({debs_fetched} .deb files; index files are always revalidated)")


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def print_table(bench: Bench, started_load: str) -> None:
    width = max(len(r.what) for r in bench.rows)
    fig = max(len(r.figure) for r in bench.rows)
    print(f"psa-provision benchmark, container {bench.vmid}, {os.cpu_count()} cores, "
          f"load average {started_load} at start, {load()} at end")
    print(f"{'what':<{width}}  {'figure':<{fig}}  command")
    for r in bench.rows:
        print(f"{r.what:<{width}}  {r.figure:<{fig}}  {r.command}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__.splitlines()[0])
    parser.add_argument("--vmid", type=int, default=int(os.environ.get("PSA_BENCH_VMID", "204")),
                        help="the benchmark's own container (default 204); never someone else's")
    parser.add_argument("--workdir", type=Path, help="default /var/tmp/psa-bench-<vmid>")
    parser.add_argument("--runs", type=int, default=5, help="converged runs per figure (median)")
    parser.add_argument("--no-cold", action="store_true",
                        help="skip the cold run: measure an already provisioned container (same workdir)")
    parser.add_argument("--keep", action="store_true", help="keep the container at the end")
    args = parser.parse_args(argv)
    if not 101 <= args.vmid <= 254:
        parser.error("--vmid must be 101..254 (its IP is 10.0.20.<vmid-100>)")
    bench = Bench(args.vmid, args.workdir or Path(f"/var/tmp/psa-bench-{args.vmid}"))
    started_load = load()
    setup(bench)
    try:
        if args.no_cold:
            bench.add("cold up phase0", "skipped (--no-cold)", "")
        else:
            cold_up(bench)
        converged(bench, args.runs)
        verify(bench)
        bench.add("up phase1: wall, ratio to one-by-one", NOT_YET, "")
        bench.add("migrate phase1: write downtime, total time", NOT_YET, "")
    finally:
        if not args.keep:
            bench.cli("destroy", "phase0", "--yes", timeout=600, check=False)
    print_table(bench, started_load)
    return 0


if __name__ == "__main__":
    sys.exit(main())
