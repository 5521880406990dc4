"""Backup sets: manifest round trip, corruption and truncation found, --at, the recovery base, refusals."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from psa_provision.commands import backup as backup_cmd
from psa_provision.errors import InputError
from psa_provision.services.backup import manifest as mf

NOW = datetime(2026, 12, 3, 10, 15, 0, tzinfo=UTC)
ART = mf.Artifact("redis", "redis/dump.rdb", 1000, "a" * 64, {"keys": 3})
M = mf.Manifest("20261203T101500Z", "phase0", "2026-12-03T10:15:00+00:00", "2026-12-03T10:16:00+00:00",
                "0.1.0", (ART,), {"label": "20261203-101500F"})


def test_manifest_round_trips_and_says_what_when_sizes_sums_and_version() -> None:
    data = json.loads(M.to_json())
    assert data["format"] == 1 and data["tool_version"] == "0.1.0"
    assert data["artifacts"][0] == {"store": "redis", "path": "redis/dump.rdb", "bytes": 1000,
                                    "sha256": "a" * 64, "detail": {"keys": 3}}
    assert mf.Manifest.from_json(M.to_json(), "x") == M


def test_a_damaged_manifest_is_a_clear_error() -> None:
    with pytest.raises(InputError, match="psa-backup:/var/lib/psa-backup/sets/x: not a backup manifest"):
        mf.Manifest.from_json('{"id": "x"', "psa-backup:/var/lib/psa-backup/sets/x")


@pytest.mark.parametrize(("found", "problem"), [
    ({"redis/dump.rdb": (1000, "a" * 64)}, None),
    ({}, "redis/dump.rdb is missing"),
    ({"redis/dump.rdb": (600, "b" * 64)}, "redis/dump.rdb is truncated: 600 bytes, the manifest says 1000"),
    ({"redis/dump.rdb": (1000, "b" * 64)},
     "redis/dump.rdb is corrupt: sha256 bbbbbbbbbbbb..., the manifest says"),
])
def test_corrupt_or_truncated_artifacts_are_found_before_a_restore(
        found: dict[str, tuple[int, str]], problem: str | None) -> None:
    got = mf.problems(M, found)
    assert got == [] if problem is None else (len(got) == 1 and got[0].startswith(problem))


def test_the_repository_listing_is_parsed() -> None:
    text = f"1000 {'a' * 64} redis/dump.rdb\n12 {'c' * 64} app/app config.tar.gz\nnoise\n"
    assert mf.parse_sums(text) == {"redis/dump.rdb": (1000, "a" * 64),
                                   "app/app config.tar.gz": (12, "c" * 64)}


def test_the_manifest_is_written_atomically_and_a_failed_write_leaves_none(tmp_path: Path) -> None:
    script = mf.write_script(M.id).replace(mf.set_dir(M.id), str(tmp_path))
    ok = subprocess.run(["bash", "-c", script], input=M.to_json(), text=True, capture_output=True,
                        check=False)
    assert ok.returncode == 0
    assert mf.Manifest.from_json((tmp_path / "manifest.json").read_text(), "t") == M
    (tmp_path / "manifest.json").unlink()
    # a write failing half way (a full disk: 10 bytes written, then ENOSPC) leaves no manifest, no temp file
    broken = script.replace("cat > ", "{ head -c 10; echo 'No space left on device' >&2; false; } > ")
    bad = subprocess.run(["bash", "-c", broken], input=M.to_json(), text=True, capture_output=True,
                         check=False)
    assert bad.returncode != 0 and sorted(p.name for p in tmp_path.iterdir()) == []


def test_set_ids_are_utc_times_and_others_are_refused() -> None:
    assert mf.new_id(NOW) == "20261203T101500Z"
    with pytest.raises(InputError, match="is not of the form"):
        mf.set_dir("../../etc")


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-12-03T10:00:00Z", datetime(2026, 12, 3, 10, 0, tzinfo=UTC)),
    ("2026-12-03 11:00:00+01:00", datetime(2026, 12, 3, 10, 0, tzinfo=UTC)),
    ("2026-12-03T10:00:00", datetime(2026, 12, 3, 10, 0, tzinfo=UTC)),  # no offset: UTC
])
def test_at_takes_iso_times(text: str, expected: datetime) -> None:
    assert mf.parse_at(text, NOW) == expected


@pytest.mark.parametrize(("text", "error"), [("yesterday", "is not a time"),
                                             ("2026-12-03T11:00:00Z", "future")])
def test_at_refuses_nonsense_and_the_future(text: str, error: str) -> None:
    with pytest.raises(InputError, match=error):
        mf.parse_at(text, NOW)


INFO = json.dumps([{"name": "psa", "backup": [
    {"label": "F1", "type": "full", "timestamp": {"start": 1000, "stop": 1100}},
    {"label": "D1", "type": "diff", "timestamp": {"start": 5000, "stop": 5050}},
]}])


def test_recovery_replays_from_the_newest_backup_finished_before_the_target() -> None:
    backups = mf.pg_backups(INFO)
    assert [b.label for b in backups] == ["F1", "D1"]
    assert mf.recovery_base(datetime.fromtimestamp(4000, UTC), backups).label == "F1"
    assert mf.recovery_base(datetime.fromtimestamp(6000, UTC), backups).label == "D1"
    with pytest.raises(InputError, match=r"no PostgreSQL backup finished before .* the oldest finished at"):
        mf.recovery_base(datetime.fromtimestamp(1050, UTC), backups)


def test_the_other_stores_come_from_the_newest_set_finished_by_then() -> None:
    later = mf.Manifest("20261203T120000Z", "phase0", "", "2026-12-03T12:01:00+00:00", "0.1.0")
    assert mf.newest_set_before([M, later], NOW + timedelta(hours=1)) == M
    assert mf.newest_set_before([M, later], NOW - timedelta(hours=1)) is None


def test_only_names_known_stores() -> None:
    assert backup_cmd.parse_only(None) == backup_cmd.STORES
    assert backup_cmd.parse_only("postgresql, redis") == ("postgresql", "redis")
    with pytest.raises(InputError, match="unknown store"):
        backup_cmd.parse_only("postgres")


def test_a_backup_during_a_migration_is_refused_with_the_reason(tmp_path: Path) -> None:
    from psa_provision import inventory, sandbox
    from psa_provision import site as site_mod
    from psa_provision.migration.record import journal_for
    from psa_provision.packaged import PHASES_DIR, SANDBOX_INVENTORY
    from psa_provision.phases import load_phase
    from psa_provision.secrets import Secrets

    phases_dir = tmp_path / "phases"  # the packaged phases with the opt-in backup container
    phases_dir.mkdir()
    for src in PHASES_DIR.glob("phase*.yml"):
        text = src.read_text()
        opted_in = sandbox.with_backup_container(text) if src.stem in ("phase0", "phase1") else text
        (phases_dir / src.name).write_text(opted_in)
    inv_path = tmp_path / "site.yml"
    text = SANDBOX_INVENTORY.read_text().replace("phases_dir: ../phases", f"phases_dir: {phases_dir}")
    inv_path.write_text(text)
    phase = load_phase("phase0", phases_dir)
    site = site_mod.Site(inventory.load_inventory(inv_path), inv_path, phase, Secrets({}))
    assert backup_cmd.migration_in_progress(site) is None
    journal_for(inv_path, "phase1").record("migrate", step="postgresql", state="snapshot")
    why = backup_cmd.migration_in_progress(site)
    assert why is not None and "migration into phase1 is under way (postgresql started)" in why
    with pytest.raises(InputError, match="refusing `backup phase0`: the migration into phase1"):
        backup_cmd.backup(site, backup_cmd.STORES, lambda _: None)
    journal_for(inv_path, "phase1").record("migrate", step="finish", state="done")
    assert backup_cmd.migration_in_progress(site) is None


def test_a_finish_time_shows_as_utc_to_the_second() -> None:
    from psa_provision.commands.backup import when
    assert when(0) == "1970-01-01 00:00:00Z"
    assert when("2026-12-02T18:34:05.123456+01:00") == "2026-12-02 17:34:05Z"
