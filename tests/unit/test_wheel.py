"""The wheel is the whole tool: templates, phase files, inventories and the bundled app are inside it, and
an installed copy works from an unrelated directory without reading this clone (issue 11)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from psa_provision.packaged import APP_BUNDLE, DATA_DIR, PHASES_DIR, TEMPLATES_DIR

REPO = Path(__file__).resolve().parents[2]
Installed = Any  # tests/conftest.py's Installed (a conftest is not imported by name: there are several)


def _clean_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PSA_", "PYTHON", "VIRTUAL_ENV"))}
    return {**env, "HOME": str(tmp)}


def test_the_wheel_holds_the_package_data(installed_cli: Installed) -> None:
    names = set(installed_cli.wheel_files)
    expected = [p for p in (*TEMPLATES_DIR.glob("*.j2"), *PHASES_DIR.glob("*.yml"),
                            DATA_DIR / "inventories" / "sandbox.yml",
                            DATA_DIR / "inventories" / "production.example.yml",
                            APP_BUNDLE / "package.json", APP_BUNDLE / "package-lock.json",
                            *APP_BUNDLE.glob("services/*/src/*.ts"), *APP_BUNDLE.glob("shared/*/src/*.ts"))]
    missing = [str(p.relative_to(REPO)) for p in expected if str(p.relative_to(REPO)) not in names]
    assert len(expected) > 40 and not missing, missing
    assert not [n for n in names if "/node_modules/" in n or "/dist/" in n or n.endswith(".secrets.yml")]
    assert not [n for n in names if n.split("/")[0] in ("templates", "phases", "inventories", "examples")]


def test_installed_cli_makes_a_project_anywhere(installed_cli: Installed, tmp_path: Path) -> None:
    env = _clean_env(tmp_path)
    where = subprocess.run([str(installed_cli.python), "-c", "from psa_provision import packaged, render; "
                            "print(packaged.DATA_DIR); print(render.render('erl_inetrc.j2', hostname='h'))"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=True)
    data_dir = Path(where.stdout.splitlines()[0])
    assert installed_cli.venv in data_dir.parents and REPO not in data_dir.parents
    assert '["h"]' in where.stdout  # a template rendered from the installed package

    def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(installed_cli.cli), *args], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=120, check=False, stdin=subprocess.DEVNULL)

    made = cli("init", "site", cwd=tmp_path)
    assert made.returncode == 0, made.stdout + made.stderr
    site = tmp_path / "site"
    assert {p.name for p in (site / "phases").iterdir()} == {p.name for p in PHASES_DIR.glob("*.yml")}
    assert (site / "sandbox.secrets.yml").stat().st_mode & 0o777 == 0o600
    assert (site / "keys" / "sandbox_ed25519.pub").is_file()
    assert str(REPO) not in (site / "inventory.yml").read_text()
    checked = cli("phases", "--check", cwd=site)  # ./inventory.yml, no -i
    assert checked.returncode == 0 and "0 errors" in checked.stdout, checked.stdout + checked.stderr
    listed = cli("phases", "-i", str(site / "inventory.yml"), cwd=tmp_path)  # -i after the command
    assert listed.returncode == 0 and "psa-all-in-one" in listed.stdout, listed.stdout + listed.stderr
