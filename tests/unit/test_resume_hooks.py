"""Resume support: open tasks in the journal, the PSA_KILL_AT test hook, no secret in the journal,
the PSA_RECORD_COMMANDS hook, and a lock held by a live process vs one left by a killed process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from psa_provision.apply import apply, step_name
from psa_provision.changes import ApiCall, Command, Plan, PutFile, Secret, Sensitive
from psa_provision.errors import LockHeld
from psa_provision.journal import Journal, PhaseLock
from psa_provision.seams import ENABLE_ENV, GATE, record_command
from psa_provision.testing.record import RECORD_ENV

SECRET = "s3cr3t-'\"$;\\-value-0123456789abcdef"


def test_open_tasks_are_those_no_run_saw_end(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "phase0.journal.jsonl")
    journal.task_started("UPID:pve1:1:a", "container: create container 200", vmid=200)
    journal.task_started("UPID:pve1:2:b", "container: start container 200", vmid=200)
    journal.task_ended("UPID:pve1:1:a", "done", exitstatus="OK")
    later = Journal(journal.path)  # the next run reads what the killed one wrote
    assert [t["upid"] for t in later.open_tasks()] == ["UPID:pve1:2:b"]
    later.task_ended("UPID:pve1:2:b", "failed")
    assert later.open_tasks() == []


def test_a_record_cut_short_by_a_kill_is_skipped(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "phase0.journal.jsonl")
    journal.task_started("UPID:pve1:1:a", "x")
    with journal.path.open("a") as handle:
        handle.write('{"ts": "2026-01-01", "event": "st')  # SIGKILL in the middle of a write
    assert [t["upid"] for t in journal.open_tasks()] == ["UPID:pve1:1:a"]


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`code` in a fresh interpreter with test hooks open (PSA_TEST_HOOKS=1; code loads the sandbox)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, ENABLE_ENV: "1", **env}, check=False)


SANDBOX = ("from psa_provision.inventory import load_inventory\nfrom psa_provision.packaged import "
           "SANDBOX_INVENTORY\nload_inventory(SANDBOX_INVENTORY)\n"
           "from psa_provision.seams import kill_point\n")
KILLED = SANDBOX + "kill_point('redis: install redis-server')\nprint('alive')"


def test_kill_point_sigkills_the_process_at_a_matching_step() -> None:
    proc = _python(KILLED, PSA_KILL_AT="redis: install *")
    assert proc.returncode == -signal.SIGKILL and "alive" not in proc.stdout


def test_kill_point_ignores_other_steps_and_an_unset_hook() -> None:
    assert _python(KILLED, PSA_KILL_AT="postgresql: *").stdout.strip() == "alive"
    assert _python(KILLED, PSA_KILL_AT="").stdout.strip() == "alive"


def test_kill_point_with_a_delay_kills_during_the_step() -> None:
    code = (SANDBOX + "import time\nkill_point('app: build')\n"
            "print('step running', flush=True)\ntime.sleep(30)\nprint('finished')")
    proc = _python(code, PSA_KILL_AT="app: build", PSA_KILL_DELAY="0.5")
    assert proc.returncode == -signal.SIGKILL
    assert "step running" in proc.stdout and "finished" not in proc.stdout


def test_failed_steps_journal_no_secret(tmp_path: Path) -> None:
    """Every step below fails (no SSH connection, no Proxmox): the journal still names them, without
    the password that rides in their params, stdin or file content."""
    journal = Journal(tmp_path / "phase0.journal.jsonl")
    host = "psa-all-in-one"
    changes = [
        ApiCall(host, "container", "create container 200", action="create", node="pve1",
                params={"vmid": 200, "password": Secret(SECRET)}, effect="create"),
        Command(host, "postgresql", "set password of psa_app", script="read -r PW",
                stdin=Sensitive(SECRET + "\n")),
        PutFile(host, "app", "create /opt/psa-platform/.env", path="/opt/psa-platform/.env",
                content=Sensitive(f"REDIS_PASSWORD={SECRET}\n"), mode=0o600),
    ]
    for change in changes:
        summary = apply(Plan([change]), {}, None, journal)
        assert summary.failed == 1
    text = journal.path.read_text()
    assert [e["summary"] for e in journal.entries()] == [c.summary for c in changes]
    assert SECRET not in text and SECRET[:12] not in text
    assert step_name(changes[1]) == "postgresql: set password of psa_app"


def test_record_command_appends_command_and_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    record_command("10.0.20.100", "bash -c x", "echo hi")  # hook off: nothing written anywhere
    log = tmp_path / "commands.jsonl"
    monkeypatch.setattr(GATE, "sandbox", True)  # as after loading the sandbox inventory
    monkeypatch.setenv(ENABLE_ENV, "1")
    monkeypatch.setenv(RECORD_ENV, str(log))
    record_command("10.0.20.100", "bash -c x", "echo hi")
    assert json.loads(log.read_text()) == {"host": "10.0.20.100", "command": "bash -c x", "script": "echo hi"}


def test_second_run_is_refused_while_a_live_process_holds_the_lock(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom pathlib import Path\n"
         "from psa_provision.journal import PhaseLock\n"
         f"PhaseLock(Path({str(tmp_path / 'phase0.lock')!r})).acquire()\nprint('held', flush=True)\n"
         "sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(LockHeld, match=rf"held by pid {holder.pid} on \S+ since \d{{4}}-"):
            PhaseLock(tmp_path / "phase0.lock").acquire()
        holder.kill()  # SIGKILL: the lock file stays behind, naming a dead pid
        holder.wait(timeout=30)
        lock = PhaseLock(tmp_path / "phase0.lock")
        lock.acquire()
        assert lock.holder() is not None and lock.holder()["pid"] == os.getpid()  # type: ignore[index]
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=30)
