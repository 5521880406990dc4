"""Shared by every test directory.

- A test skipped because a tool is missing fails instead: `scripts/setup` installs every tool the tests
  use (node, npm, redis-server, ssh-keygen, ...), so a skip whose reason says something is `not
  installed` means the machine is not what CI promises, and the test command must not pass quietly. A
  developer without those tools may set PSA_TESTS_ALLOW_MISSING_TOOLS=1 to keep such skips as skips.
  Skips for other reasons (a warm session, a state not reached) stay skips.
- `installed_cli`: the CLI as a user installs it: the wheel built from a copy of this clone's sources
  (pip wheel --no-deps), installed into a fresh venv in a temporary directory outside the clone (its
  dependencies from this machine's pip configuration); the copy is deleted before anything runs, so the
  installed tool cannot read it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ALLOW_ENV = "PSA_TESTS_ALLOW_MISSING_TOOLS"
MISSING_TOOL = re.compile(r"\bnot installed\b", re.IGNORECASE)


def missing_tool_reason(report: pytest.TestReport) -> str | None:
    """The skip reason when `report` is a skip for a missing tool (None otherwise, xfails included)."""
    if not report.skipped or hasattr(report, "wasxfail") or not isinstance(report.longrepr, tuple):
        return None
    reason = str(report.longrepr[2]).removeprefix("Skipped: ")
    return reason if MISSING_TOOL.search(reason) else None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    reason = missing_tool_reason(report)
    if reason is not None and os.environ.get(ALLOW_ENV) != "1":
        report.outcome = "failed"
        report.longrepr = (f"skipped for a missing tool, which fails the test run: {reason}\n"
                           f"`bash scripts/setup` installs it; {ALLOW_ENV}=1 keeps such skips as skips")

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "psa_provision", "pvesim")
NOT_SOURCES = shutil.ignore_patterns("__pycache__", "*.pyc", "node_modules", "dist", "*.egg-info", "build")
PIP_TIMEOUT = 900


@dataclass(frozen=True)
class Installed:
    """A fresh venv holding the built wheel: its CLI, its python, the wheel's file names."""

    venv: Path
    wheel_files: tuple[str, ...]

    @property
    def cli(self) -> Path:
        return self.venv / "bin" / "psa-provision"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"


def _run(argv: list[str], cwd: Path) -> None:
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=PIP_TIMEOUT, check=False,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"{' '.join(argv)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


@pytest.fixture(scope="session")
def installed_cli(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """Build the wheel and install it into a fresh venv outside the clone (once per session)."""
    base = tmp_path_factory.mktemp("wheel")
    assert REPO not in base.parents, f"{base} is inside the clone"
    src = base / "src"
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=NOT_SOURCES)
        else:
            src.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(REPO / name, src / name)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(base / "dist"), str(src)], base)
    shutil.rmtree(src)
    wheel = next((base / "dist").glob("psa_provision-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        names = tuple(zf.namelist())
    venv = base / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], base)  # a venv of the base interpreter, nothing shared
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)], base)
    return Installed(venv, names)
