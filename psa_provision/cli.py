"""The `psa-provision` command line (Typer): parse, call a command (psa_provision/commands/), print.

The commands hold the logic and the refusal rules; this module only parses arguments, asks for
confirmation when interactive, and prints what the commands return.

Exit codes: 0 ok, 1 error (one red line + hint, never a traceback), 2 `plan` found changes.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from typer.core import TyperGroup

from psa_provision.errors import GuestError, InputError, ProvisionError, TaskError
from psa_provision.inventory import PROJECT_INVENTORY
from psa_provision.output import Output, plan_json

T = TypeVar("T")
INVENTORY_FLAGS = ("-i", "--inventory")


def hoist_inventory(args: list[str]) -> list[str]:
    """Move `-i FILE` / `--inventory FILE` (also `-iFILE`, `--inventory=FILE`) given after the command
    to the front, where the app's option is: `up phase0 -i inv.yml` as ansible-playbook and pyinfra
    users type it. Nothing after `--` moves; a flag without its value stays where it is."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        if arg in INVENTORY_FLAGS and i + 1 < len(args):
            front.extend(args[i:i + 2])
            i += 2
            continue
        if arg.startswith("--inventory=") or (arg.startswith("-i") and len(arg) > 2 and arg[2] != "-"):
            front.append(arg)
        else:
            rest.append(arg)
        i += 1
    return front + rest


class _Group(TyperGroup):
    """The top-level command group: accepts -i/--inventory before or after the subcommand."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        args = hoist_inventory(args)
        if args and args[-1] in INVENTORY_FLAGS and "--" not in args:
            if ctx.resilient_parsing:  # shell completion of `up -i <TAB>`: the value is being typed
                return super().parse_args(ctx, args[-1:] + args[:-1])
            raise typer.BadParameter("the inventory file is missing after it", ctx=ctx,
                                     param_hint=" / ".join(INVENTORY_FLAGS))
        return super().parse_args(ctx, args)


app = typer.Typer(cls=_Group, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Infrastructure as code for the PSA platform on Proxmox VE.")
secrets_app = typer.Typer(no_args_is_help=True, help="Read one secret (for scripts).")
app.add_typer(secrets_app, name="secrets")
backups_app = typer.Typer(no_args_is_help=True, help="The backups in the phase's repository.")
app.add_typer(backups_app, name="backups")


class Format(StrEnum):
    text = "text"
    json = "json"


@dataclass
class State:
    given: Path | None  # -i / --inventory / $PSA_INVENTORY
    verbose: bool = False

    @property
    def inventory(self) -> Path:
        """The inventory given, else ./inventory.yml (what `init` writes); InputError if there is none."""
        if self.given is not None:
            return self.given
        if not PROJECT_INVENTORY.is_file():
            raise InputError(f"no inventory: ./{PROJECT_INVENTORY} does not exist here",
                             hint="run `psa-provision init` to write a project here, or give -i FILE "
                                  "(or set PSA_INVENTORY)")
        return PROJECT_INVENTORY


def _interactive() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def _guard(out: Output, fn: Callable[[], T]) -> T:
    """Run fn; a ProvisionError becomes one red line + hint and exit 1."""
    try:
        return fn()
    except ProvisionError as exc:
        out.error(exc)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        out.warn("interrupted")
        raise typer.Exit(130) from None
    except Exception as exc:  # a bug of ours: still one line, the traceback only on request
        if os.environ.get("PSA_DEBUG"):
            raise
        out.error(ProvisionError(f"internal error: {type(exc).__name__}: {exc}",
                                 hint="this is a bug in psa-provision; PSA_DEBUG=1 shows the traceback"))
        raise typer.Exit(1) from None


def _state(ctx: typer.Context) -> State:
    state = ctx.obj
    assert isinstance(state, State)
    return state


@app.callback()
def main_options(
    ctx: typer.Context,
    inventory: Annotated[Path | None, typer.Option(
        "-i", "--inventory", envvar="PSA_INVENTORY",
        help=f"inventory file, before or after the command (default ./{PROJECT_INVENTORY}, "
             "written by `init`)")] = None,
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="also list unchanged checks")] = False,
) -> None:
    ctx.obj = State(inventory, verbose)


def _init_target(ctx: typer.Context, directory: Path | None) -> Path:
    """DIR/inventory.yml, else the inventory given (-i, PSA_INVENTORY), else ./inventory.yml."""
    state = _state(ctx)
    if directory is None:
        return state.given or PROJECT_INVENTORY
    source = ctx.parent.get_parameter_source("inventory") if ctx.parent is not None else None
    if source is not None and source.name == "COMMANDLINE":  # not from PSA_INVENTORY
        raise InputError("init: give either DIR or -i FILE, not both",
                         hint=f"DIR gets DIR/{PROJECT_INVENTORY}; -i names the inventory file itself")
    return directory / PROJECT_INVENTORY


@app.command()
def init(ctx: typer.Context,
         directory: Annotated[Path | None, typer.Argument(
             metavar="[DIR]", help=f"project directory (default: here): DIR/{PROJECT_INVENTORY}, "
                                   "DIR/phases/, secrets, SSH key")] = None,
         production: Annotated[bool, typer.Option(
             "--production", help="start from the annotated production example instead of the sandbox "
                                  "inventory")] = False,
         force: Annotated[bool, typer.Option(
             help="regenerate secrets and key (destroys the old ones)")] = False,
         ) -> None:
    """Write a project: inventory and phase files (if absent), secrets (0600), SSH key pair. No network.

    Existing files are kept; with -i FILE (or PSA_INVENTORY) the inventory is FILE and its phases sit next
    to it.
    """
    from psa_provision.commands import init as init_mod
    from psa_provision.packaged import PRODUCTION_INVENTORY, SANDBOX_INVENTORY

    out = Output()
    template = PRODUCTION_INVENTORY if production else SANDBOX_INVENTORY
    result = _guard(out, lambda: init_mod.init(_init_target(ctx, directory), template=template, force=force))
    for item in result.created:
        out.line(f"created {item}")
    for item in result.kept:
        out.line(f"kept {item}")


@app.command()
def plan(ctx: typer.Context, phase: str,
         output: Annotated[Format, typer.Option("--output", "-o", help="text or json")] = Format.text,
         force: Annotated[bool, typer.Option(help="plan a recreate where a setting needs one")] = False,
         ) -> None:
    """Show what `up` would change (exit 0: nothing, 2: changes, 1: error). Changes nothing."""
    state = _state(ctx)
    out = Output(json_mode=output is Format.json, verbose=state.verbose)

    def run() -> int:
        from psa_provision.commands import plan as plan_cmd

        site = plan_cmd.load(state.inventory, phase)
        cost = plan_cmd.Cost()
        result = plan_cmd.plan(site, out, force=force, cost=cost)
        out.note(cost.line)
        if out.json_mode:
            out.json(plan_json(result, phase=phase, inventory=str(state.inventory)))
        else:
            out.plan(result, f"phase {phase} ({state.inventory})")
        return 0 if result.empty else 2

    raise typer.Exit(_guard(out, run))


@app.command()
def up(ctx: typer.Context, phase: str,
       yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
       force: Annotated[bool, typer.Option(help="allow recreating a container (its data is lost)")] = False,
       ) -> None:
    """Converge a phase: create/adopt containers, configure them, ship the app, wait until healthy."""
    state = _state(ctx)
    out = Output(verbose=state.verbose)

    def run() -> int:
        from psa_provision.commands import plan as plan_cmd
        from psa_provision.commands import up as up_cmd

        site = up_cmd.load(state.inventory, phase)
        if not yes and _interactive():
            preview = plan_cmd.plan(site, out, force=force)
            out.plan(preview, f"phase {phase} ({state.inventory})")
            if preview.empty:
                out.line("nothing to change")
            elif not out.confirm(f"apply {len(preview.actions)} changes?"):
                raise InputError("aborted: nothing was changed")
        try:
            result = up_cmd.up(site, out, force=force)
        except (GuestError, TaskError):
            out.note("the next `up` continues from where this one stopped")
            raise
        out.summary(result.summary.changed, result.summary.unchanged, result.summary.failed)
        out.note(result.cost.line)
        out.table("where things are", ["what", "where"], up_cmd.endpoints(site))
        out.line("psa-provision status   shows containers and service health")
        return 0

    raise typer.Exit(_guard(out, run))


@app.command()
def status(ctx: typer.Context,
           phase: Annotated[str | None, typer.Argument(help="services of this phase (default: the "
                                                        "newest phase whose containers all run)")] = None,
           ) -> None:
    """One table of containers (node, vmid, state, cpu/mem) and one of services (health)."""
    from psa_provision.commands import status as status_cmd

    out = Output()
    containers, services = _guard(out, lambda: status_cmd.status(_state(ctx).inventory, phase))
    out.table("containers", ["node", "vmid", "hostname", "state", "cpu", "memory"], containers)
    if services:
        out.table("services", ["phase", "container", "service", "port", "pm2", "health"], services)
    else:
        out.line("no phase has all its containers running: no services to show")


@app.command()
def destroy(ctx: typer.Context, phase: str,
            yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
            ) -> None:
    """Stop and delete the phase's containers that psa-provision created (asks first)."""
    state = _state(ctx)
    out = Output()

    def run() -> int:
        from psa_provision.commands import destroy as destroy_cmd

        site = destroy_cmd.load(state.inventory, phase)
        px, targets, notes = destroy_cmd.destroy_targets(site)
        for note in notes:
            out.line(note)
        if not targets:
            out.line("nothing to destroy")
            return 0
        for t in targets:
            out.line(f"will stop and delete container {t.spec.vmid} ({t.spec.hostname}) on {t.spec.node}",
                     style="red")
        if not yes and _interactive() and not out.confirm("destroy these containers and their data?"):
            raise InputError("aborted: nothing was destroyed")
        summary = destroy_cmd.destroy(site, px, targets, out)
        out.line(f"{summary.changed} destroyed")
        return 0

    raise typer.Exit(_guard(out, run))


@app.command("rotate-secrets")
def rotate_secrets(ctx: typer.Context,
                   component: Annotated[str, typer.Argument(
                       help="postgresql, redis, rabbitmq, app (JWT secret + admin password) or all")] = "all",
                   phase: Annotated[str, typer.Option(help="the phase whose containers use them")] = "phase0",
                   yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask to confirm")] = False,
                   ) -> None:
    """New passwords for a component: secrets file, the service itself, .env; restarts what uses them."""
    from psa_provision.commands import rotate

    state = _state(ctx)
    out = Output(verbose=state.verbose)

    def run() -> int:
        keys = rotate.keys_for(component)
        site = rotate.load(state.inventory, phase)
        if not yes and _interactive() and not out.confirm(
                f"replace {', '.join(keys)} in {site.inventory.secrets_file} and on the containers?"):
            raise InputError("aborted: nothing was changed")
        result = rotate.rotate(site, component, out)
        out.summary(result.up.summary.changed, result.up.summary.unchanged, result.up.summary.failed)
        out.line(f"rotated {', '.join(result.keys)}")
        return 0

    raise typer.Exit(_guard(out, run))


@secrets_app.command("show")
def secrets_show(ctx: typer.Context, key: str) -> None:
    """Print one secret (e.g. app.admin_password): the only command that prints a secret."""
    from psa_provision.commands import secrets as secrets_cmd

    out = Output()

    def run() -> str:
        return secrets_cmd.show(_state(ctx).inventory, key)

    value = _guard(out, run)
    sys.stdout.write(value + "\n")


@app.command()
def verify(ctx: typer.Context, phase: str,
           junit_xml: Annotated[Path | None, typer.Option("--junit-xml", help="write JUnit XML here")] = None,
           ) -> None:
    """Run the phase's verification suite against the live containers (exit 1 if a check fails)."""
    state = _state(ctx)
    out = Output()

    def run() -> int:
        from psa_provision.commands import verify as verify_cmd

        report = verify_cmd.run_phase(state.inventory, phase, junit_xml=junit_xml)
        rows = [[r.host, r.check, "skipped" if r.skipped else "ok" if r.passed else "FAILED", r.detail]
                for r in report.results if state.verbose or not r.passed]
        if rows:
            out.table(f"verify {phase}", ["host", "check", "result", "detail"], rows)
        out.line(f"{len(report.passed)} passed, {len(report.failed)} failed")
        return int(report.exit_code)

    raise typer.Exit(_guard(out, run))


@app.command()
def health(ctx: typer.Context,
           phase: Annotated[str, typer.Argument(help="phase whose services to check")] = "phase0") -> None:
    """Check every service's /health (and the stores behind it) right now."""
    state = _state(ctx)
    out = Output()

    def run() -> int:
        from psa_provision.commands import health as health_cmd

        report = health_cmd.run_phase(state.inventory, phase)
        out.table("health", list(report.columns), report.rows())
        return report.exit_code

    raise typer.Exit(_guard(out, run))


@app.command()
def capacity(ctx: typer.Context,
             phase: Annotated[str | None, typer.Argument(help="the phase deployed (default: the newest "
                                                         "phase whose containers all run)")] = None,
             output: Annotated[Format, typer.Option("--output", "-o", help="text or json")] = Format.text,
             ) -> None:
    """The live platform's load against the seed's limits: tenants, users, tickets/day, API requests/min,
    CPU and memory per container; what the Decision Matrix says. Exit 0 within limits, 3 crossed."""
    from psa_provision.commands import capacity as capacity_cmd

    state = _state(ctx)
    out = Output(json_mode=output is Format.json)

    def run() -> int:
        report = capacity_cmd.run(state.inventory, phase)
        if out.json_mode:
            out.json({"inventory": str(state.inventory), **report.as_dict()})
        else:
            out.table(f"capacity {report.verdict.phase}", capacity_cmd.COLUMNS, report.rows())
            for line in report.lines():
                out.line(line)
        return report.exit_code

    raise typer.Exit(_guard(out, run))


@app.command()
def doctor(ctx: typer.Context,
           phase: Annotated[str, typer.Argument(help="the phase to check for")] = "phase0",
           output: Annotated[Format, typer.Option("--output", "-o", help="text or json")] = Format.text,
           ) -> None:
    """Is this Proxmox ready for `up PHASE`? API and TLS, privileges, nodes, storage, template, bridges,
    vmids, SSH path, phase files: one table, nothing written (exit 0 ready, 1 a blocker)."""
    from psa_provision.commands import doctor as doctor_mod

    state = _state(ctx)
    out = Output(json_mode=output is Format.json)

    def run() -> int:
        checks = doctor_mod.run(state.inventory, phase)
        failed = doctor_mod.blocked(checks)
        if out.json_mode:
            out.json({"phase": phase, "inventory": str(state.inventory), "ready": not failed,
                      "checks": [c.as_dict() for c in checks]})
        else:
            out.table(f"doctor {phase}", ["status", "check", "detail"], doctor_mod.rows(checks))
            out.line("blocked: fix the failed checks before `up`" if failed else f"ready for `up {phase}`")
        return 1 if failed else 0

    raise typer.Exit(_guard(out, run))


@app.command()
def phases(ctx: typer.Context,
           check: Annotated[bool, typer.Option("--check", help="validate all phase files together")] = False,
           ) -> None:
    """List the phases (containers, services); with --check validate them (exit 1 on errors)."""
    from psa_provision.commands import phases as phases_cmd

    out = Output()

    def run() -> int:
        if check:
            problems = phases_cmd.problems(_state(ctx).inventory)
            for p in problems:
                (out.warn if p.severity == "warning" else out.line)(str(p))
            errors = [p for p in problems if p.severity == "error"]
            out.line(f"{len(errors)} errors, {len(problems) - len(errors)} warnings")
            return 1 if errors else 0
        out.table("phases", ["phase", "vmid", "hostname", "node", "ip", "services"],
                  phases_cmd.rows(_state(ctx).inventory))
        return 0

    raise typer.Exit(_guard(out, run))


@app.command()
def migrate(ctx: typer.Context, phase: str,
            plan_only: Annotated[bool, typer.Option("--plan", help="show the steps and their state; "
                                                    "change nothing")] = False,
            yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
            ) -> None:
    """Move the data of the phase before PHASE into PHASE's containers, one store at a time (resumable)."""
    from psa_provision.commands import migrate as migrate_mod

    state = _state(ctx)
    out = Output(verbose=state.verbose)

    def show(report: migrate_mod.Report, title: str) -> None:
        out.table(title, ["step", "from -> to", "state", "writes quiesced"], report.rows)
        for line in report.legend:
            out.line(line)
        out.line(f"writes quiesced {report.total_quiesce_s:.1f} s in total"
                 + (f"; migration took {report.seconds:.1f} s" if report.seconds else ""))

    def run() -> int:
        site = migrate_mod.load(state.inventory, phase, changing=not plan_only)
        if plan_only:
            report = migrate_mod.plan_report(site)
            show(report, f"migrate {phase} (plan: nothing is changed)")
            return 0
        if not yes and _interactive():
            show(migrate_mod.plan_report(site), f"migrate {phase} (plan)")
            if not out.confirm(f"move the data into {phase}'s containers and stop the old services?"):
                raise InputError("aborted: nothing was changed")
        report = migrate_mod.migrate(site, out)
        show(report, f"migrate {phase}")
        out.line(f"migration to {phase} " + ("complete" if report.complete else "not complete"))
        return 0 if report.complete else 1

    raise typer.Exit(_guard(out, run))


@app.command()
def drill(ctx: typer.Context,
          phase: Annotated[str, typer.Argument(help="the phase (phase3)")],
          kind: Annotated[str, typer.Argument(help="postgresql-primary | redis-primary | rabbitmq-node | "
                                                   "lb-active | app-container | node")],
          output: Annotated[Format, typer.Option("--output", "-o", help="text or json")] = Format.text,
          json_file: Annotated[Path | None, typer.Option("--json-file", help="where the figures go "
                                                         "(default: next to the journals)")] = None,
          yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
          ) -> None:
    """Lose one member under bounded writes through the VIP; time to the first write after the fault,
    longest error window, acknowledged writes lost, duplicates, RabbitMQ confirmed publishes lost and
    when publishing resumed; then restore it and wait until healthy. Exit 0 when nothing acknowledged
    or confirmed was lost and the platform healed, 1 otherwise."""
    from psa_provision.commands import drill as drill_cmd

    state = _state(ctx)
    out = Output(json_mode=output is Format.json)

    def run() -> int:
        site, parsed = drill_cmd.load(state.inventory, phase, kind)
        if not yes and _interactive() and not out.confirm(
                f"stop {parsed.loses} of {phase} (it is started again after the drill)?"):
            raise InputError("aborted: nothing was changed")
        result = drill_cmd.run(site, parsed, out)
        path = drill_cmd.write_json(site, result, json_file)
        if out.json_mode:
            out.json({"phase": phase, **result.as_dict()})
        else:
            out.table(f"drill {phase} {parsed.name}", ["figure", "value"], result.rows())
            for note in result.notes:
                out.line(f"note: {note}")
            out.line(f"figures written to {path}")
        return 0 if result.passed else 1

    raise typer.Exit(_guard(out, run))


@app.command()
def cleanup(ctx: typer.Context,
            what: Annotated[str, typer.Argument(help="phase0-leftovers: the old services a complete "
                                                "`migrate phase1` stopped")],
            yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
            ) -> None:
    """Remove what a complete migration left behind (packages, data, migrate's snapshots). Destructive."""
    from psa_provision.commands import cleanup as cleanup_mod

    state = _state(ctx)
    out = Output()

    def run() -> int:
        old = cleanup_mod.phase_of(what)
        site = cleanup_mod.site_for(state.inventory, what)
        found = cleanup_mod.find(site)
        if found.empty:
            out.line(f"nothing left over from {old}")
            return 0
        for line in found.lines():
            out.line(f"will {line}", style="red")
        if not yes and not _interactive():
            raise InputError("cleanup removes data: confirm with --yes", hint="nothing was removed")
        if not yes and not out.confirm("remove these packages, their data and the snapshots?"):
            raise InputError("aborted: nothing was removed")
        out.line(f"{cleanup_mod.remove(site, found)} removed")
        return 0

    raise typer.Exit(_guard(out, run))


@app.command("backup")
def backup_cmd(ctx: typer.Context,
               phase: Annotated[str, typer.Argument(help="the phase to back up")] = "phase0",
               only: Annotated[str | None, typer.Option(
                   help="stores, e.g. postgresql,redis (default: all: postgresql, redis, rabbitmq, "
                        "elasticsearch, app)")] = None,
               full: Annotated[bool, typer.Option("--full", help="a full PostgreSQL backup (default: "
                                                  "differential; the first one is full anyway)")] = False,
               containers: Annotated[bool, typer.Option(
                   "--containers", help="also a vzdump of each container `restore` starts new containers "
                                        "from (all; in phase 3 one per store and the gateway's)")] = False,
               ) -> None:
    """Back up the phase's stores into its backup container: pgBackRest for PostgreSQL, a set with a
    manifest (sizes, sha256) for the others. Refuses while a migration of the phase is under way."""
    from psa_provision.commands import backup as backup_mod

    state = _state(ctx)
    out = Output()

    def run() -> int:
        result = backup_mod.run(state.inventory, phase, only, full=full, containers=containers, note=out.note)
        out.table(result.title, backup_mod.COLUMNS, result.rows())
        out.line(result.summary())
        return 0

    raise typer.Exit(_guard(out, run))


@backups_app.command("list")
def backups_list(ctx: typer.Context,
                 phase: Annotated[str, typer.Argument(help="the phase whose repository to read")] = "phase0",
                 ) -> None:
    """Sets (with their manifest) and pgBackRest backups in the phase's backup container."""
    from psa_provision.commands import backup as backup_mod

    out = Output()

    def run() -> int:
        out.table("backups", backup_mod.LIST_COLUMNS, backup_mod.list_all(_state(ctx).inventory, phase),
                  whole=backup_mod.LIST_WHOLE)
        return 0

    raise typer.Exit(_guard(out, run))


@app.command("restore")
def restore_cmd(ctx: typer.Context,
                phase: Annotated[str, typer.Argument(help="the phase to restore")] = "phase0",
                at: Annotated[str | None, typer.Option("--at", help="point in time, ISO 8601 (no offset: "
                                                       "UTC), e.g. 2026-12-03T10:15:00Z")] = None,
                backup: Annotated[str | None, typer.Option("--backup", help="a set id (20261203T101500Z) or "
                                                           "a vzdump volume id")] = None,
                into: Annotated[int | None, typer.Option("--into", help="vmid of the first new container "
                                                         "(default: the original's + 500)")] = None,
                force: Annotated[bool, typer.Option("--force", help="replace containers that hold those "
                                                    "vmids (asks first)")] = False,
                yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
                drill: Annotated[bool, typer.Option("--drill", help="restore the latest backup beside "
                                                    "production, compare, report RPO/RTO, remove")] = False,
                keep: Annotated[bool, typer.Option("--keep", help="--drill: leave its containers")] = False,
                output: Annotated[Format, typer.Option("--output", "-o", help="text or json")] = Format.text,
                ) -> None:
    """Restore into NEW containers beside production (vmid + 500, new hostnames and addresses): each
    from its vzdump, PostgreSQL to the second by pgBackRest, Redis and RabbitMQ from the newest set."""
    from datetime import UTC, datetime

    from psa_provision.commands import restore as restore_mod
    from psa_provision.commands import restore_drill as drill_mod
    from psa_provision.services.backup.manifest import parse_at

    state = _state(ctx)
    out = Output(json_mode=output is Format.json)

    def run() -> int:
        if drill:
            if at or backup or into or force:
                raise InputError("--drill takes the latest backup into its own containers: no --at, "
                                 "--backup, --into or --force")
            report = drill_mod.run(state.inventory, phase, out.note, keep=keep)
            if out.json_mode:
                out.json(json.loads(report.to_json()))
            else:
                out.table(f"restore drill {phase} (restore point {report.restore_point})", drill_mod.COLUMNS,
                          report.rows())
            return 0 if report.passed else 1
        if (at is None) == (backup is None):
            raise InputError("give one of --at TIME or --backup ID", hint="`psa-provision backups list`")
        when = parse_at(at, datetime.now(UTC)) if at else None
        if force:
            out.line(f"--force: containers holding the new vmids of {phase}'s restore are replaced",
                     style="red")
            if not yes and not _interactive():
                raise InputError("--force replaces containers: confirm with --yes",
                                 hint="nothing was restored")
            if not yes and not out.confirm("replace them?"):
                raise InputError("aborted: nothing was restored")
        done = restore_mod.run(state.inventory, phase, at=when, backup=backup, into=into, force=force,
                               note=out.note)
        if out.json_mode:
            out.json({"target": done.target, "set": done.set_id, "seconds": done.seconds_to_health,
                      "containers": [dict(zip(restore_mod.COLUMNS, r, strict=True)) for r in done.rows()]})
        else:
            out.table(f"restore {phase} to {done.target}", restore_mod.COLUMNS, done.rows())
            out.line(f"restored; the app answers /health after {done.seconds_to_health:.1f} s")
        return 0

    raise typer.Exit(_guard(out, run))


def main() -> None:
    """Console-script entry point."""
    if not sys.stdout.isatty():
        os.environ.setdefault("COLUMNS", "120")  # wide tables and diffs in CI logs
    app()
