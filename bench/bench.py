"""The performance benchmark of issue 7: cold and converged `up phase0`, `plan phase0`, `verify phase0`,
`up phase1` (parallel wall vs one after another) and `migrate phase1` (write downtime, total time).

Runs the real CLI (one process per figure, as a user would) against the sandbox on a private copy of
the phase files (container --vmid at 10.0.20.(vmid-100), hostname psa-bench-<vmid>), reads each run's
cost from its stderr line and the journal's run-end record, and prints one table where every figure
names the command that produced it. `--figure NAME` (repeatable) runs only those. See bench/README.md.
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
from pvesim import npmproxy
from pvesim.paths import StateDir

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = REPO / ".venv" / "bin"
CLI = str(VENV_BIN / "psa-provision")
PVESIM = str(VENV_BIN / "pvesim")
ACNG_LOG = Path("/var/lib/pvesim/apt-cacher-ng/log/apt-cacher.log")
COST = re.compile(r"([\d.]+) s, (\d+) Proxmox API calls, (\d+) SSH connections, (\d+) guest commands")
CATEGORIES = ("proxmox", "packages", "configuration", "app build", "facts", "waiting")
UP_TIMEOUT = 3600
STATE = StateDir(Path(os.environ.get("PVESIM_STATE_DIR", "/var/lib/pvesim")))
PHASE1 = "phase1"
QUIESCED = re.compile(r"writes quiesced ([\d.]+) s in total(?:; migration took ([\d.]+) s)?")


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

    @property
    def ip(self) -> str:
        return f"10.0.20.{self.vmid - 100}"

    def ssh(self, script: str, timeout: float = 120) -> str:
        """Run a script as root on the bench's container (its own key and known_hosts)."""
        key = self.workdir / "keys" / "sandbox_ed25519"
        known = self.workdir / "sandbox.journal" / "known_hosts"
        argv = ["ssh", "-i", str(key), "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes",
                "-o", "BatchMode=yes", f"root@{self.ip}", script]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        return proc.stdout if proc.returncode == 0 else f"could not read ({proc.stderr.strip()[:80]})"

    def sql(self, query: str) -> str:
        psql = f"cd / && runuser -u postgres -- psql -XAtq -d psa_platform -c {shlex.quote(query)}"
        return self.ssh(psql).strip()

    def cli(self, *args: str, timeout: float = UP_TIMEOUT, check: bool = True,
            inventory: Path | None = None) -> Run:
        argv = [CLI, "-i", str(inventory or self.inventory), *args]
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

    def journal(self, phase: str = "phase0") -> list[dict[str, object]]:
        path = self.workdir / "sandbox.journal" / f"{phase}.journal.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def last_run_end(self, phase: str = "phase0") -> dict[str, object]:
        """The journal's last run-end record (seconds, api_calls, timings per category)."""
        ends = [e for e in self.journal(phase) if e.get("event") == "run-end"]
        if not ends:
            raise SystemExit(f"no run-end record in the {phase} journal of {self.workdir}")
        return dict(ends[-1])


# -- setup -------------------------------------------------------------------------------------------
def setup(bench: Bench) -> None:
    """Inventory (the packaged sandbox inventory with the private phases and the sandbox token) + init."""
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
    npm_before = npm_counters(bench.ip)
    run = bench.cli("up", "phase0", "--yes")
    npm_after = npm_counters(bench.ip)
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
    bench.add("cold up phase0: npm registry proxy", npm_summary(npm_before, npm_after),
              f"(pvesim status: npm_proxy; {npmproxy.stats_file(STATE)})")
    bench.add("cold up phase0: npm downloads (guest npm caches)", npm_caches(bench), NPM_CACHES)
    updates = len(re.findall(r"apt-get update \(", run.stdout + run.stderr))
    bench.add("cold up phase0: apt-get update runs", str(updates), run.command)


def converged(bench: Bench, runs: int) -> None:
    """Median of `runs` converged `up phase0` and `plan phase0`, with their counts."""
    warm = bench.cli("up", "phase0", "--yes")  # converge first: the figures are for `nothing to change`
    if "0 changed" not in warm.stdout:
        print(f"note: the warm-up `up` still changed something:\n{warm.stdout[-1500:]}", file=sys.stderr)
    converged_runs(bench, "phase0", runs)


def converged_phase(bench: Bench, phase: str, runs: int, inventory: Path | None) -> None:
    """Converged `up` and `plan` of a phase already up (issue 13: phase 2's 12 containers, phase 3's 33),
    on this bench's inventory or `inventory`. It creates nothing: a phase whose `plan` shows changes
    is reported as not converged and left alone; an `up` that fails leaves the `plan` figure only."""
    from psa_provision.inventory import load_inventory
    from psa_provision.phases import load_phase

    count = len(load_phase(phase, load_inventory(inventory or bench.inventory).phases_dir).containers)
    first = bench.cli("plan", phase, check=False, inventory=inventory)
    if first.code != 0:
        bench.add(f"converged {phase}", f"not converged (plan exit {first.code}): run `up {phase}` first",
                  first.command)
        return
    commands: list[tuple[str, ...]] = [("plan", phase)]
    warm = bench.cli("up", phase, "--yes", check=False, inventory=inventory)
    if warm.code == 0:
        commands.insert(0, ("up", phase, "--yes"))
    else:
        why = (warm.stdout + warm.stderr).strip().splitlines()[-1:] or ["no output"]
        bench.add(f"converged up {phase}", f"exit {warm.code}: {why[0][:100]}", warm.command)
    converged_runs(bench, phase, runs, inventory, f" ({count} containers)", commands)


def converged_runs(bench: Bench, phase: str, runs: int, inventory: Path | None = None, note: str = "",
                   commands: list[tuple[str, ...]] | None = None) -> None:
    """`runs` runs each of `up PHASE` and `plan PHASE` with nothing to change: median wall, counts."""
    for command in commands or [("up", phase, "--yes"), ("plan", phase)]:
        results = [bench.cli(*command, inventory=inventory) for _ in range(runs)]
        walls = sorted(r.wall for r in results)
        name = f"converged {command[0]} {phase}{note}"
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


def phase1(bench: Bench) -> None:
    """`up phase1` from scratch: parallel wall, each container's own span, their sum (= one after another)."""
    bench.cli("destroy", PHASE1, "--yes", timeout=1200)
    run = bench.cli("up", PHASE1, "--yes")
    spans = container_spans(bench.journal(PHASE1))
    bench.add("up phase1: wall (containers in parallel)", f"{run.wall:.0f} s", run.command)
    if spans:
        slowest = max(spans.values())
        serial = sum(spans.values())
        each = ", ".join(f"{h} {s:.0f} s" for h, s in spans.items())
        bench.add("up phase1: each container's own time", each,
                  "(journal `container` records: its own part, then starting its PM2 apps)")
        bench.add("up phase1: ratio to one after another", f"{run.wall / serial:.2f} (sum {serial:.0f} s)",
                  "(wall / sum of the containers' own times)")
        bench.add("up phase1: ratio to the slowest container", f"{run.wall / slowest:.2f} (target <= 1.5)",
                  "(wall / slowest container's own time)")


def container_spans(entries: list[dict[str, object]]) -> dict[str, float]:
    """Per host, its own seconds in the last run: both waves (`container` records of the journal)."""
    runs = [e for e in entries if e.get("event") == "run-start"]
    if not runs:
        return {}
    run_id = runs[-1]["run"]
    spans: dict[str, float] = {}
    for e in entries:
        if e.get("run") == run_id and e.get("event") == "container":
            spans[str(e["host"])] = spans.get(str(e["host"]), 0.0) + float(str(e["seconds"]))
    return spans


def migration(bench: Bench, rate: float) -> None:
    """`migrate phase1` under a ticket-writing load: write downtime, total time, the data moved.

    Needs phase 0 (this bench's container) holding the data and phase 1 up; the load writes through
    phase 0's gateway, then phase 1's (psa_provision.testing.loadgen); the tickets table is measured first."""
    from psa_provision.inventory import load_inventory
    from psa_provision.phases import load_phase
    from psa_provision.testing.loadgen import TicketLoad

    inv = load_inventory(bench.inventory)
    phases = [load_phase(p, inv.phases_dir) for p in ("phase0", PHASE1)]
    gateways = [f"http://{ph.container(ph.services['api-gateway'].container).ip}:"
                f"{ph.services['api-gateway'].port}" for ph in phases]
    size = bench.sql("SELECT count(*) || ' rows, ' || round(pg_total_relation_size('tickets') / 1048576.0, 1)"
                     " || ' MB' FROM tickets")
    secret = bench.cli("secrets", "show", "app.admin_email", timeout=60).stdout.strip()
    password = bench.cli("secrets", "show", "app.admin_password", timeout=60).stdout.strip()
    load = TicketLoad(gateways, secret, password, rate=rate).start()
    try:
        run = bench.cli("migrate", PHASE1, check=False)
    finally:
        result = load.stop()
    found = QUIESCED.search(run.stdout + run.stderr)
    verdict = "complete" if run.code == 0 else f"exit {run.code}"
    bench.add("migrate phase1: data moved (tickets)", size,
              "SELECT count(*), pg_total_relation_size('tickets') (phase 0's PostgreSQL)")
    bench.add("migrate phase1: write downtime (longest gap between acked writes)",
              f"{result.longest_gap_s:.1f} s ({len(result.acked)} tickets acked, {result.failures} refused)",
              f"{run.command} (psa_provision.testing.loadgen at {rate}/s)")
    bench.add("migrate phase1: total time, writes quiesced (migrate's report)",
              f"{run.wall:.0f} s, quiesced {found[1] if found else '?'} s ({verdict})", run.command)


NPM_CACHES = "du -sb /root/.npm/_cacache /home/psa/.npm/_cacache (in the guest)"


def npm_caches(bench: Bench) -> str:
    """What npm fetched from the registry on a fresh guest (its caches start empty; no proxy cache)."""
    out = bench.ssh(NPM_CACHES.split(" (")[0], timeout=60)
    sizes = [int(line.split()[0]) for line in out.splitlines() if line.strip() and line.split()[0].isdigit()]
    if not sizes:
        return out.strip() or "could not read"
    return f"{sum(sizes) / 2**20:.1f} MiB (pm2 + the app's dependencies, from the npm registry set)"


def npm_counters(ip: str) -> dict[str, int]:
    """The npm proxy's counters for one guest address (zeros when it asked nothing yet)."""
    clients: dict[str, dict[str, int]] = npmproxy.read_stats(STATE)["clients"]
    return dict(clients.get(ip, dict.fromkeys(npmproxy.COUNTERS, 0)))


def npm_summary(before: dict[str, int], after: dict[str, int]) -> str:
    """What the npm proxy served this guest during a run: from its cache vs fetched upstream."""
    d = {k: after.get(k, 0) - before.get(k, 0) for k in npmproxy.COUNTERS}
    if not d["requests"]:
        return "no requests (packages.npm_registry not set, or the proxy is not running)"
    return (f"{d['requests']} requests, served {d['served_bytes'] / 2**20:.1f} MiB, fetched upstream "
            f"{d['upstream_bytes'] / 2**20:.1f} MiB ({d['upstream_fetches']} objects)")


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


FIGURES = ("cold", "converged", "converged-phase", "verify", "phase1", "migrate", "platform", "drill",
           "restore")
DEFAULT_FIGURES = ("cold", "converged", "verify")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run", description="The performance benchmark of issue 7.",
                                     epilog="one figure only: bench/run --figure converged --keep "
                                     "(see bench/README.md)")
    parser.add_argument("--vmid", type=int, default=int(os.environ.get("PSA_BENCH_VMID", "204")),
                        help="the benchmark's own container (default 204); never someone else's")
    parser.add_argument("--workdir", type=Path, help="default /var/tmp/psa-bench-<vmid>")
    parser.add_argument("--figure", action="append", choices=FIGURES, dest="figures",
                        help="run only this figure (repeatable); default: " + ", ".join(DEFAULT_FIGURES)
                        + ". phase1 destroys and recreates phase 1's containers (100,110,210,220,230); "
                        "migrate needs phase 0 (this --vmid) with data and phase 1 up")
    parser.add_argument("--runs", type=int, default=5, help="converged runs per figure (median)")
    parser.add_argument("--no-cold", action="store_true", help="same as leaving out --figure cold")
    parser.add_argument("--rate", type=float, default=5.0, help="tickets/s written during migrate")
    parser.add_argument("--keep", action="store_true", help="keep the phase-0 container at the end")
    parser.add_argument("--phase", default="phase0", help="platform: the deployed phase to load (phase0: "
                        "this --vmid, brought up first; phase1/phase2: up and migrated with this bench's "
                        "inventory); converged-phase: the phase, already up, whose converged up/plan "
                        "are timed")
    parser.add_argument("--inventory", type=Path, help="platform, converged-phase: another project's "
                        "inventory (its phase containers and secrets) instead of this bench's")
    parser.add_argument("--max-rate", type=float, default=150.0, help="platform: highest rate, requests/s")
    parser.add_argument("--max-minutes", type=float, default=15.0, help="platform: longest run of the load")
    args = parser.parse_args(argv)
    if not 101 <= args.vmid <= 254:
        parser.error("--vmid must be 101..254 (its IP is 10.0.20.<vmid-100>)")
    figures = [f for f in (args.figures or DEFAULT_FIGURES) if not (args.no_cold and f == "cold")]
    bench = Bench(args.vmid, args.workdir or Path(f"/var/tmp/psa-bench-{args.vmid}"))
    started_load = load()
    setup(bench)
    try:
        for figure in figures:
            if figure == "cold":
                cold_up(bench)
            elif figure == "converged":
                converged(bench, args.runs)
            elif figure == "converged-phase":
                converged_phase(bench, args.phase, args.runs, args.inventory)
            elif figure == "verify":
                verify(bench)
            elif figure == "phase1":
                phase1(bench)
            elif figure == "platform":
                from platform_figure import platform  # bench/ is the script's directory on sys.path

                from psa_provision.testing.platform_load import Bounds

                platform(bench, args.phase, args.inventory,
                         Bounds(max_rate=args.max_rate, max_seconds=60 * args.max_minutes))
            elif figure == "drill":
                from drill_figure import drills  # bench/ is the script's directory on sys.path

                drills(bench, args.inventory)
            elif figure == "restore":
                from restore_figure import restore  # bench/ is the script's directory on sys.path

                restore(bench, args.inventory)
            else:
                migration(bench, args.rate)
    finally:
        own_phase0 = "platform" in figures and args.phase == "phase0" and args.inventory is None
        if not args.keep and ("cold" in figures or "converged" in figures or own_phase0):
            bench.cli("destroy", "phase0", "--yes", timeout=600, check=False)
    print_table(bench, started_load)
    return 0


if __name__ == "__main__":
    sys.exit(main())
