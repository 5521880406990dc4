"""PVE tasks: UPIDs in Proxmox's exact format, background workers, persisted status and logs.

UPID:{node}:{pid:08X}:{pstart:08X}:{starttime:08X}:{type}:{id}:{user}:
Each task is a thread; status and log live in state.tasks (one .json + one .log per task) so
they survive a daemon restart. A task that was running when the daemon died reads as stopped
with exitstatus `unexpected status`, as PVE shows it. Tasks on one vmid serialize on a per-vmid
lock, waiting up to 10 s like PVE's config lock and then failing with PVE's timeout message.
The lock is taken inside the task, after `start` has returned the UPID, as pve-container's workers
call PVE::LXC::Config->lock_config inside the code that RESTEnvironment::fork_worker runs (the parent
returns once the child exists, before it runs): of two tasks started back to back on one vmid either
may get the lock first. Create reserves its vmid before the task instead (create_vm's
create_and_lock_config, modelled by the handler writing the config with `lock: create`).
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

Log = Callable[[str], None]
Worker = Callable[[Log], None]
Finalizer = Callable[[Log, bool], None]  # called after the worker (also after an injected failure)
LOCK_TIMEOUT = 10.0


@dataclass(frozen=True)
class Upid:
    """The parts of a UPID."""

    node: str
    pid: int
    pstart: int
    starttime: int
    type: str
    id: str
    user: str

    def __str__(self) -> str:
        return (f"UPID:{self.node}:{self.pid:08X}:{self.pstart:08X}:{self.starttime:08X}:"
                f"{self.type}:{self.id}:{self.user}:")


def parse_upid(text: str) -> Upid:
    """Parse a UPID string; ValueError when it is not one (PVE: `unable to parse worker upid`)."""
    parts = text.split(":")
    if len(parts) < 9 or parts[0] != "UPID" or parts[-1] != "":
        raise ValueError(f"unable to parse worker upid '{text}'")
    try:
        pid, pstart, start = (int(p, 16) for p in parts[2:5])
    except ValueError as e:
        raise ValueError(f"unable to parse worker upid '{text}'") from e
    user = ":".join(parts[7:-1])
    return Upid(parts[1], pid, pstart, start, parts[5], parts[6], user)


def _process_start() -> int:
    """This process's start time in clock ticks (/proc/self/stat field 22), PVE's pstart."""
    try:
        stat = Path("/proc/self/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return 0


def _save(path: Path, rec: dict[str, Any]) -> None:
    """Write a task record atomically: readers in other threads never see a half-written file."""
    tmp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(rec))
    os.replace(tmp, path)


class TaskError(Exception):
    """A task failed before its work (lock timeout, injected failure)."""


def _work(worker: Worker, log: Log, failure: str | None, finalize: Finalizer | None) -> None:
    """Run the worker (or the injected failure), then the finalizer with the outcome."""
    ok = False
    try:
        if failure is not None:
            raise TaskError(failure)
        worker(log)
        ok = True
    finally:
        if finalize is not None:
            finalize(log, ok)


class Tasks:
    """Runs and records tasks for one daemon."""

    def __init__(self, root: Path, task_failure: Callable[[str, str, str], str | None] | None = None) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._pids = itertools.count(os.getpid() * 16 % 0x400000 + 1)
        self._pstart = _process_start()
        self._guard = threading.Lock()
        self._vm_locks: dict[str, threading.Lock] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._task_failure = task_failure
        self.recover()

    def _files(self, upid: str) -> tuple[Path, Path]:
        name = upid.replace("/", "_")
        return self.root / f"{name}.json", self.root / f"{name}.log"

    def recover(self) -> None:
        """Mark tasks left running by a previous daemon as failed (`unexpected status`)."""
        for f in self.root.glob("*.json"):
            rec = json.loads(f.read_text())
            if rec.get("status") == "running":
                rec.update(status="stopped", exitstatus="unexpected status", endtime=int(time.time()))
                _save(f, rec)

    def start(self, node: str, type_: str, id_: str, user: str, worker: Worker,
              vmid: int | None = None, finalize: Finalizer | None = None) -> str:
        """Start a worker thread; returns its UPID at once. `finalize(log, ok)` runs last, under the lock."""
        with self._guard:
            upid = Upid(node, next(self._pids), self._pstart, int(time.time()), type_, id_, user)
        text = str(upid)
        rec = {**asdict(upid), "upid": text, "status": "running"}
        meta, log = self._files(text)
        _save(meta, rec)
        log.write_text("")
        failure = self._task_failure(type_, id_, user) if self._task_failure else None
        thread = threading.Thread(target=self._run, args=(text, worker, vmid, failure, finalize), daemon=True,
                                  name=f"task-{type_}-{id_}")
        self._threads[text] = thread
        thread.start()
        return text

    def _vm_lock(self, vmid: int) -> threading.Lock:
        with self._guard:
            return self._vm_locks.setdefault(str(vmid), threading.Lock())

    def _run(self, upid: str, worker: Worker, vmid: int | None, failure: str | None,
             finalize: Finalizer | None) -> None:
        meta, logfile = self._files(upid)

        def log(line: str) -> None:
            with logfile.open("a") as f:
                for part in str(line).splitlines() or [""]:
                    f.write(part + "\n")

        lock = self._vm_lock(vmid) if vmid is not None else None
        exitstatus = "OK"
        try:
            if lock is not None and not lock.acquire(blocking=False):
                log("trying to acquire lock...")
                if not lock.acquire(timeout=LOCK_TIMEOUT):
                    lock = None
                    raise TaskError(f"can't lock file '/run/lock/lxc/pve-config-{vmid}.lock' - got timeout")
                log(" OK")
            try:
                _work(worker, log, failure, finalize)
            finally:
                if lock is not None:
                    lock.release()
        except Exception as e:  # any failure ends the task in error, as PVE does
            text = str(e).strip() or type(e).__name__
            exitstatus, ending = text.splitlines()[0], f"TASK ERROR: {text}"
        else:
            ending = "TASK OK"
        rec = json.loads(meta.read_text())
        if rec.get("status") == "running":  # not when stopped through the API meanwhile
            log(ending)
            rec.update(status="stopped", exitstatus=exitstatus, endtime=int(time.time()))
            _save(meta, rec)

    def status(self, upid: str) -> dict[str, Any] | None:
        """The task record (status/exitstatus/...), or None if there is no such task."""
        meta, _ = self._files(upid)
        if not meta.exists():
            return None
        rec: dict[str, Any] = json.loads(meta.read_text())
        return rec

    def log(self, upid: str) -> list[str]:
        """All log lines of a task."""
        _, logfile = self._files(upid)
        return logfile.read_text().splitlines() if logfile.exists() else []

    def stop(self, upid: str) -> bool:
        """Stop a running task: it is recorded as interrupted (the worker thread runs out)."""
        meta, logfile = self._files(upid)
        rec = self.status(upid)
        if rec is None:
            return False
        if rec["status"] == "running":
            with logfile.open("a") as f:
                f.write("received interrupt\nTASK ERROR: interrupted by signal\n")
            rec.update(status="stopped", exitstatus="interrupted by signal", endtime=int(time.time()))
            _save(meta, rec)
        return True

    def all(self) -> list[dict[str, Any]]:
        """Every task record, newest first."""
        recs = [json.loads(f.read_text()) for f in self.root.glob("*.json")]
        return sorted(recs, key=lambda r: (r["starttime"], r["pid"]), reverse=True)

    def wait(self, upid: str, timeout: float) -> dict[str, Any] | None:
        """Block until a task's thread ends (for the CLI and tests in-process)."""
        thread = self._threads.get(upid)
        if thread is not None:
            thread.join(timeout)
        return self.status(upid)
