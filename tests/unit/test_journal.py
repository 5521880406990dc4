"""Run journal and phase lock: records, exclusive lock, stale-lock takeover."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from psa_provision.errors import LockHeld
from psa_provision.journal import Journal, PhaseLock, state_dir


def test_state_dir_sits_next_to_the_inventory(tmp_path: Path) -> None:
    assert state_dir(tmp_path / "inv" / "site.yml") == tmp_path / "inv" / "site.journal"


def test_journal_appends_records(tmp_path: Path) -> None:
    journal = Journal.for_phase(tmp_path / "site.yml", "phase0")
    assert journal.entries() == []
    journal.record("step", host="h", summary="write /etc/x", state="done", task="UPID:pve1:1")
    journal.record("run-end", changed=1)
    entries = journal.entries()
    assert [e["event"] for e in entries] == ["step", "run-end"]
    assert entries[0]["task"] == "UPID:pve1:1" and entries[0]["run"] == journal.run_id


def test_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    lock = PhaseLock.for_phase(tmp_path / "site.yml", "phase0")
    with lock.held():
        assert lock.holder() is not None and lock.holder()["pid"] == os.getpid()  # type: ignore[index]
        with pytest.raises(LockHeld, match=f"held by pid {os.getpid()}"):
            PhaseLock(lock.path).acquire()
    assert not lock.path.exists()


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    return int(proc.stdout)


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    lock = PhaseLock(tmp_path / "phase0.lock")
    lock.path.write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname(), "since": "x"}))
    lock.acquire()
    assert lock.holder()["pid"] == os.getpid()  # type: ignore[index]


def test_lock_from_another_machine_is_respected(tmp_path: Path) -> None:
    lock = PhaseLock(tmp_path / "phase0.lock")
    lock.path.write_text(json.dumps({"pid": _dead_pid(), "host": "elsewhere", "since": "x"}))
    with pytest.raises(LockHeld, match="on elsewhere"):
        lock.acquire()
