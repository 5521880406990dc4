"""Flags where users type them: -i after the command, --yes and a question before live changes,
shell completion that really completes (bash, through the script Typer installs)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli import run, site  # noqa: F401 - `site` is a fixture used below
from typer.testing import CliRunner

from psa_provision import cli

CLI = Path(sys.executable).with_name("psa-provision")


@pytest.mark.parametrize(("argv", "want"), [
    (["up", "phase0", "-i", "inv.yml", "--yes"], ["-i", "inv.yml", "up", "phase0", "--yes"]),
    (["-i", "a.yml", "plan", "phase0"], ["-i", "a.yml", "plan", "phase0"]),
    (["secrets", "show", "k", "--inventory", "b.yml"], ["--inventory", "b.yml", "secrets", "show", "k"]),
    (["plan", "phase0", "--inventory=c.yml"], ["--inventory=c.yml", "plan", "phase0"]),
    (["plan", "-id.yml", "phase0"], ["-id.yml", "plan", "phase0"]),
    (["plan", "phase0", "-i"], ["plan", "phase0", "-i"]),  # no value: stays (and is reported)
    (["plan", "--", "-i", "x"], ["plan", "--", "-i", "x"]),
])
def test_hoist_inventory(argv: list[str], want: list[str]) -> None:
    assert cli.hoist_inventory(argv) == want


def test_inventory_after_the_command(site: Path) -> None:  # noqa: F811
    code, out = run("up", "phase0", "-i", str(site), "--yes")
    assert code == 1 and "is unreachable" in out, out  # the inventory was read: its closed port was tried
    code, out = run("secrets", "show", "app.admin_email", "--inventory", str(site))
    assert code == 0 and out.strip() == "admin@psa-platform.local"
    code, out = run("plan", "phase0", "-i")
    assert code == 2 and "inventory file is missing" in out, out


def test_every_command_that_changes_live_systems_takes_yes() -> None:
    import typer.main

    group = typer.main.get_command(cli.app)
    commands = getattr(group, "commands", {})
    for name in ("up", "destroy", "migrate", "rotate-secrets", "cleanup"):
        flags = {opt for p in commands[name].params for opt in getattr(p, "opts", [])}
        assert "--yes" in flags, name


def test_migrate_asks_on_a_terminal(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setattr(cli, "_interactive", lambda: True)
    result = CliRunner().invoke(cli.app, ["-i", str(site), "migrate", "phase1"], input="n\n")
    assert result.exit_code == 1 and "aborted: nothing was changed" in result.output, result.output
    assert "postgresql" in result.output and "unreachable" not in result.output  # plan shown, no call made
    result = CliRunner().invoke(cli.app, ["-i", str(site), "migrate", "phase1"], input="y\n")
    assert result.exit_code == 1 and "is unreachable" in result.output, result.output
    result = CliRunner().invoke(cli.app, ["-i", str(site), "migrate", "phase1", "--yes"])
    assert "is unreachable" in result.output and "aborted" not in result.output, result.output


def test_migrate_without_a_terminal_does_not_ask(site: Path) -> None:  # noqa: F811
    """Scripts and CI (stdin not a terminal) run as before: no question, no hang."""
    code, out = run("-i", str(site), "migrate", "phase1")
    assert code == 1 and "is unreachable" in out and "aborted" not in out, out


@pytest.mark.skipif(shutil.which("bash") is None or not CLI.exists(), reason="needs bash and the CLI")
def test_install_completion_completes_commands_and_options(tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path), "PATH": f"{CLI.parent}:{os.environ.get('PATH', '')}"}
    env.pop("PSA_INVENTORY", None)
    done = subprocess.run([str(CLI), "--install-completion", "bash"], env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "source" in (tmp_path / ".bashrc").read_text()

    def complete(*words: str) -> list[str]:
        script = (f"source {tmp_path / '.bashrc'}\n"
                  f"COMP_WORDS=(psa-provision {' '.join(shlex.quote(w) for w in words)}); "
                  f"COMP_CWORD={len(words)}\n"
                  "_psa_provision_completion psa-provision\n"
                  'printf "%s\\n" "${COMPREPLY[@]}"\n')
        proc = subprocess.run(["bash", "--norc", "-c", script], env=env, capture_output=True, text=True,
                              timeout=60, check=False)
        assert proc.returncode == 0 and not proc.stderr, proc.stderr
        return proc.stdout.split()

    assert complete("u") == ["up"]
    assert complete("rotate") == ["rotate-secrets"]
    assert "--yes" in complete("migrate", "phase1", "--")
    assert complete("up", "phase0", "-i", "") == []  # a file name: bash's own file completion (-o default)
