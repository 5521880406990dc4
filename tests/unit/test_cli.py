"""CLI behaviour with bad input: exit codes, one clear line, never a traceback (typer CliRunner)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from psa_provision.cli import app
from psa_provision.packaged import PHASES_DIR

runner = CliRunner()


INVENTORY = """\
proxmox:
  url: https://127.0.0.1:{port}
  node: pve1
  auth:
    token_id: root@pam!psa-provision
    token_secret_file: token
network:
  bridge: vmbr20
  gateway: 10.0.20.1
  nameserver: 10.0.20.1
template: debian-12-standard_12.7-1_amd64.tar.zst
ssh:
  key_file: keys/id_ed25519
secrets_file: site.secrets.yml
phases_dir: {phases}
"""


@pytest.fixture
def site(tmp_path: Path, closed_port: int) -> Path:
    """An inventory whose API port is closed, initialised (secrets + key) by `init`."""
    (tmp_path / "token").write_text("not-a-real-token\n")
    inv = tmp_path / "site.yml"
    inv.write_text(INVENTORY.format(port=closed_port, phases=PHASES_DIR))
    result = runner.invoke(app, ["-i", str(inv), "init"])
    assert result.exit_code == 0, result.output
    return inv


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def test_init_is_idempotent_and_keeps_secrets(site: Path) -> None:
    before = (site.parent / "site.secrets.yml").read_text()
    code, out = run("-i", str(site), "init")
    assert code == 0 and "kept" in out
    assert (site.parent / "site.secrets.yml").read_text() == before
    assert (site.parent / "site.secrets.yml").stat().st_mode & 0o777 == 0o600


def test_invalid_inventory_names_file_and_line(site: Path) -> None:
    site.write_text(site.read_text().replace("  gateway: 10.0.20.1\n", "  gateway: 10.0.20\n"))
    code, out = run("-i", str(site), "plan", "phase0")
    assert code == 1
    assert f"{site}:9" in out and "gateway" in out


def test_unknown_phase(site: Path) -> None:
    code, out = run("-i", str(site), "plan", "phase9")
    assert code == 1 and "phase9" in out


def test_unreachable_api_is_one_error_line(site: Path) -> None:
    code, out = run("-i", str(site), "plan", "phase0")
    assert code == 1
    assert "error: Proxmox API https://127.0.0.1:" in out and "is unreachable" in out


def test_up_with_unreachable_api_fails_cleanly(site: Path) -> None:
    code, out = run("-i", str(site), "up", "phase0", "--yes")
    assert code == 1 and "is unreachable" in out


def test_secrets_show_prints_one_secret(site: Path) -> None:
    code, out = run("-i", str(site), "secrets", "show", "app.admin_email")
    assert code == 0 and out.strip() == "admin@psa-platform.local"
    code, out = run("-i", str(site), "secrets", "show", "nope.key")
    assert code == 1 and "nope.key" in out


def test_world_readable_secrets_are_refused(site: Path) -> None:
    (site.parent / "site.secrets.yml").chmod(0o644)
    code, out = run("-i", str(site), "plan", "phase0")
    assert code == 1 and "chmod 600" in out


def test_missing_inventory(tmp_path: Path) -> None:
    code, out = run("-i", str(tmp_path / "absent.yml"), "plan", "phase0")
    assert code == 1 and "absent.yml" in out


def test_phases_lists_container_200(site: Path) -> None:
    code, out = run("-i", str(site), "phases")
    assert code == 0 and "psa-all-in-one" in out and "200" in out


def test_up_of_a_phase_migrated_away_from_is_refused_before_any_call(site: Path) -> None:
    """Once `migrate phase1` moved a store, `up phase0` would restart the old service on stale data:
    refused with the reason (the closed API port shows no call was tried first)."""
    from psa_provision.migration.steps import journal_for

    journal_for(site, "phase1").record("migrate", step="postgresql", state="moved")
    code, out = run("-i", str(site), "up", "phase0", "--yes")
    assert code == 1 and "refusing `up phase0`" in out and "postgresql" in out, out
    assert "unreachable" not in out
    code, planned = run("-i", str(site), "plan", "phase0")  # plan refuses what up refuses, in the same words
    assert code == 1 and planned.replace("refusing `plan", "refusing `up") == out, planned
    code, out = run("-i", str(site), "up", "phase1", "--yes")
    assert code == 1 and "is unreachable" in out  # the new phase itself is not refused


def test_up_and_migrate_build_phase3_clusters(site: Path) -> None:
    """`up phase3` builds every cluster and `migrate phase3` builds them from phase 2's stores
    (migration/phase3_steps.py): both go on to the API; `plan phase3` warns of nothing."""
    code, out = run("-i", str(site), "up", "phase3", "--yes")
    assert code == 1 and "is unreachable" in out and "refusing" not in out, out
    code, out = run("-i", str(site), "migrate", "phase3", "--yes")
    assert code == 1 and "refusing" not in out and "is unreachable" in out, out
    code, out = run("-i", str(site), "plan", "phase3")
    assert code == 1 and "warning: phase3's clusters" not in out and "is unreachable" in out, out


def test_a_cluster_of_components_up_does_not_cluster_is_refused() -> None:
    """A cluster whose members run nothing `up` clusters (here: app containers) is refused by name."""
    from psa_provision.errors import InputError
    from psa_provision.packaged import PHASES_DIR
    from psa_provision.phases import load_phase
    from psa_provision.refusals import refuse_clusters, unbuilt_clusters

    phase3 = load_phase("phase3", PHASES_DIR)
    assert unbuilt_clusters(phase3, "up") == []
    apps = [c.model_copy(update={"cluster": "apps"}) if "app" in c.components else c
            for c in phase3.containers]
    odd = phase3.model_copy(update={"containers": apps})
    assert unbuilt_clusters(odd, "up") == ["apps"]
    with pytest.raises(InputError, match=r"refusing `up phase3`: its clusters \(apps\)"):
        refuse_clusters(odd, "up")


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An unrelated working directory, and no PSA_INVENTORY in the environment."""
    monkeypatch.delenv("PSA_INVENTORY", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_init_dir_writes_a_project_and_never_overwrites(elsewhere: Path) -> None:
    code, out = run("init", "proj")
    assert code == 0, out
    proj = elsewhere / "proj"
    from psa_provision.inventory import load_inventory

    inv = load_inventory(proj / "inventory.yml")
    assert inv.phases_dir == proj / "phases"
    packaged = sorted(p.name for p in PHASES_DIR.glob("*.yml"))
    assert sorted(p.name for p in inv.phases_dir.iterdir()) == packaged
    assert inv.secrets_file.stat().st_mode & 0o777 == 0o600 and inv.ssh.key_file.is_file()
    edited = "# my edit\n" + (proj / "phases" / "phase0.yml").read_text()
    (proj / "phases" / "phase0.yml").write_text(edited)
    (proj / "phases" / "phase3.yml").unlink()
    (proj / "inventory.yml").unlink()
    code, out = run("init", "proj")
    assert code == 0 and "created phases" in out and "phase3.yml" in out and "phase0.yml" not in out, out
    assert (proj / "phases" / "phase0.yml").read_text() == edited
    assert "kept secrets" in out and "kept ssh key" in out


def test_init_production_starts_from_the_annotated_example(elsewhere: Path) -> None:
    code, out = run("init", "--production", "site")
    assert code == 0 and "production.example.yml" in out, out
    text = (elsewhere / "site" / "inventory.yml").read_text()
    assert "token_secret_env: PSA_PVE_TOKEN_SECRET" in text and "phases_dir: phases\n" in text
    assert (elsewhere / "site" / "production.secrets.yml").is_file()


def test_init_refuses_dir_and_inventory_together(elsewhere: Path) -> None:
    code, out = run("-i", "x.yml", "init", "proj")
    assert code == 1 and "either DIR or -i" in out
    assert not (elsewhere / "proj").exists() and not (elsewhere / "x.yml").exists()


def test_without_inventory_the_one_in_the_current_directory_is_used(elsewhere: Path) -> None:
    code, out = run("phases", "--check")
    assert code == 1 and "no inventory: ./inventory.yml" in out and "psa-provision init" in out
    code, out = run("init")
    assert code == 0 and (elsewhere / "inventory.yml").is_file(), out
    (elsewhere / "phases" / "phase0.yml").write_text(
        (elsewhere / "phases" / "phase0.yml").read_text().replace("psa-all-in-one", "my-own-host"))
    code, out = run("phases")
    assert code == 0 and "my-own-host" in out, out  # the project's copy, not the packaged one
