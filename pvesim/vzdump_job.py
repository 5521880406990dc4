"""The worker of a `vzdump` task, step by step as pve-manager's PVE/VZDump.pm exec_backup and
exec_backup_task run it for containers (VZDump/LXC.pm), with the same log lines.

The task log gets `INFO: ...` / `ERROR: ...` lines; each guest's lines also go, time-stamped, into
`<basename>.log` beside its archive. One job runs per node at a time (PVE's /var/run/vzdump.lock,
waited for up to `lockwait` minutes); a backup simulated by `pvesim fault backup-lock` holds it too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pvesim import acl, backups, pveconf, vzdump
from pvesim import handlers_lxcstore as store
from pvesim.backend import Log
from pvesim.handlers_snapshot import drop, take
from pvesim.handlers_storage import STORAGES
from pvesim.server import ApiError, App

LOCKFILE = "/var/run/vzdump.lock"
_NODE_LOCKS: dict[str, threading.Lock] = {}
_GUARD = threading.Lock()
STD_EXCLUDES = ["/tmp/?*", "/var/tmp/?*", "/var/run/?*.pid"]  # VZDump.pm new, stdexcludes=1


class JobError(Exception):
    """One guest's backup failed; the job goes on with the next guest."""


def storage_dir(app: App, storage: str) -> Path:
    """VZDump.pm storage_info: the dump dir of a storage that takes backups, else PVE's error."""
    if storage not in STORAGES:
        raise ApiError(500, f"could not get storage information for '{storage}': storage '{storage}' "
                       "does not exist")
    if "backup" not in STORAGES[storage]["content"].split(","):
        raise ApiError(500, f"could not get storage information for '{storage}': can't use storage "
                       f"'{storage}' for backups - wrong content type")
    return app.state.backup_dir


def _backup_running_elsewhere(app: App, node: str) -> bool:
    return any(b.get("node") == node for b in app.faults.read().get("backup_locks", []))


@contextlib.contextmanager
def global_lock(app: App, node: str, minutes: int, log: Log) -> Iterator[None]:
    """VZDump.pm getlock: one job per node; waits (saying so) up to `minutes`."""
    with _GUARD:
        lock = _NODE_LOCKS.setdefault(node, threading.Lock())
    deadline, waited = time.monotonic() + minutes * 60, False
    while True:
        if lock.acquire(timeout=1 if waited else 0.01):
            if not _backup_running_elsewhere(app, node):
                break
            lock.release()
        if not waited:
            log("INFO: trying to get global lock - waiting...")
            waited = True
        if time.monotonic() > deadline:
            log(f"ERROR: can't acquire lock '{LOCKFILE}' - got timeout")
            raise JobError(f"can't acquire lock '{LOCKFILE}' - got timeout")
        time.sleep(1)
    if waited:
        log("INFO: got global lock")
    try:
        yield
    finally:
        lock.release()


@dataclass
class Job:
    """One `vzdump` run over the guests of this node."""

    app: App
    node: str
    user: str
    params: dict[str, str]
    vmids: list[int]
    dumpdir: Path
    storage: str | None
    excludes: list[str] = field(default_factory=list)

    def run(self, log: Log) -> None:
        """exec_backup: every guest in vmid order; `job errors` if any failed."""
        cfg = self.app.acl.load()
        todo = []
        for vmid in sorted(self.vmids):
            if store.locate(self.app, vmid) is not None and not acl.check(
                    cfg, self.user, f"/vms/{vmid}", ["VM.Backup"], noerr=self.params.get("all") == "1"):
                continue  # with --all, guests the user may not back up are left out silently
            todo.append(vmid)
        errors = sum(0 if self.guest(vmid, log) else 1 for vmid in todo)
        if errors:
            log("INFO: Backup job finished with errors")
            raise JobError("job errors")
        log("INFO: Backup job finished successfully")

    def guest(self, vmid: int, task_log: Log) -> bool:
        """exec_backup_task for one container; True when its backup is done."""
        started = time.time()
        lines: list[str] = []

        def say(level: str, msg: str, to_file: bool = True) -> None:
            for line in msg.splitlines():
                task_log(f"{level}: {line}")
                if to_file:
                    lines.append(f"{vzdump.timestamp(time.time())} {level}: {line}")

        def info(msg: str) -> None:
            say("INFO", msg)

        base = vzdump.basename(vmid, started)
        cmd, ext = vzdump.compressor(self.params.get("compress"), int(self.params.get("zstd", "1")),
                                     os.cpu_count() or 1)
        target = self.dumpdir / f"{base}{ext}"
        tmptar = target.with_name(target.name.rsplit(".", 1)[0] + ".dat")
        tmpdir = self.dumpdir / f"{base}.tmp"
        step: dict[str, Any] = {}
        error = None
        try:
            if store.locate(self.app, vmid) != self.node:
                raise JobError(f"unable to find VM '{vmid}'")
            shutil.rmtree(tmpdir, ignore_errors=True)
            tmpdir.mkdir(parents=True)
            say("INFO", f"Starting Backup of VM {vmid} (lxc)")
            say("INFO", f"Backup started at {vzdump.timestamp(time.time())}", to_file=False)
            running = store.is_running(self.app, vmid)
            info(f"status = {'running' if running else 'stopped'}")
            self._lock(vmid, "backup")
            step["unlock"] = True
            self._backup(vmid, running, target, tmptar, tmpdir, cmd, info, step)
        except Exception as e:  # the job reports each guest's failure and goes on
            error = str(e).strip() or type(e).__name__
        self._cleanup(vmid, step, info)
        tmptar.unlink(missing_ok=True)
        shutil.rmtree(tmpdir, ignore_errors=True)
        if error:
            say("ERROR", f"Backup of VM {vmid} failed - {error}")
            say("INFO", f"Failed at {vzdump.timestamp(time.time())}", to_file=False)
        else:
            info(f"Finished Backup of VM {vmid} ({vzdump.format_time(int(time.time() - started))})")
            say("INFO", f"Backup finished at {vzdump.timestamp(time.time())}", to_file=False)
        if lines and "Starting Backup" in lines[0]:
            (self.dumpdir / f"{base}.log").write_text("".join(f"{line}\n" for line in lines))
        return error is None

    def _backup(self, vmid: int, running: bool, target: Path, tmptar: Path, tmpdir: Path,
                cmd: list[str] | None, info: Callable[[str], None], step: dict[str, Any]) -> None:
        """The prepare, mode, assemble and archive steps, then notes, protection and pruning."""
        app, backend = self.app, self.app.backend
        mode = self.params.get("mode", "snapshot") if running else "stop"
        values = self._values(vmid)
        if mode == "snapshot":
            self._prepare(vmid, values, info)
            types = {name: spec["type"] for name, spec in STORAGES.items()}
            if not vzdump.snapshot_capable(values, types):
                info("mode failure - some volumes do not support snapshots")
                info("trying 'suspend' mode instead")
                mode = "suspend"
        info(f"backup mode: {mode}")
        if self.params.get("bwlimit"):
            info(f"bandwidth limit: {self.params['bwlimit']} KiB/s")
        info(f"ionice priority: {self.params.get('ionice', '7')}")
        if mode == "stop":
            self._prepare(vmid, values, info)
            if running:
                info("stopping virtual guest")
                step["stopped_at"] = time.time()
                backend.shutdown(vmid, int(self.params.get("stopwait", "10")) * 60, lambda _line: None)
                step["restart"] = True
        elif mode == "suspend":
            self._prepare(vmid, values, info)
            backend.suspend_copy(vmid, values, tmpdir / "rootfs", self.excludes, info)
        else:
            info("create storage snapshot 'vzdump'")
            self._lock(vmid, None)
            take(app, self.node, vmid, "vzdump", "vzdump backup snapshot", lambda _line: None)
            step["remove_snapshot"] = True
            self._lock(vmid, "backup")
        self._assemble(vmid, tmpdir)
        info(f"creating vzdump archive '{target}'")
        backend.archive(vmid, values, mode, tmpdir, tmptar, cmd, self.excludes, info)
        tmptar.rename(target)
        info(f"archive file size: {vzdump.format_size(target.stat().st_size)}")
        if self.storage:
            self._attributes(vmid, target, values, info)
        if self.storage and self.params.get("remove", "1") == "1" and "prune-backups" in self.params:
            self._prune(vmid, info)

    def _values(self, vmid: int) -> dict[str, str]:
        with self.app.conf_lock:
            conf, _ = store.load(self.app, self.node, vmid)
        return store.backend_values(conf)

    def _prepare(self, vmid: int, values: dict[str, str], info: Callable[[str], None]) -> None:
        """VZDump/LXC.pm prepare: the CT's name and which mount points go into the archive."""
        if values.get("hostname"):
            info(f"CT Name: {values['hostname']}")
        for key, _volume, path, reason in vzdump.mount_points(values):
            if reason is None:
                info(f"including mount point {key} ('{path}') in backup")
            else:
                info(f"excluding volume mount point {key} ('{path}') from backup ({reason})")
        with self.app.conf_lock:
            conf, _ = store.load(self.app, self.node, vmid)
        if "vzdump" in conf.snapshots:
            info("found old vzdump snapshot (force removal)")
            drop(self.app, self.node, vmid, "vzdump", lambda _line: None)

    def _lock(self, vmid: int, lock: str | None) -> None:
        """LXC::Config set_lock / remove_lock('backup'): setting fails on another lock (check_lock)."""
        with self.app.conf_lock:
            conf, _ = store.load(self.app, self.node, vmid)
            if lock is None:
                if conf.main.values.get("lock") == "backup":
                    del conf.main.values["lock"]
            else:
                store.check_lock(conf)
                conf.main.values["lock"] = lock
            store.save(self.app, self.node, vmid, conf)

    def _assemble(self, vmid: int, tmpdir: Path) -> None:
        """VZDump/LXC.pm assemble: ./etc/vzdump/pct.conf and pct.fw (empty without a firewall config)."""
        with self.app.conf_lock:
            conf, _ = store.load(self.app, self.node, vmid)
        etc = tmpdir / "etc" / "vzdump"
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "pct.conf").write_text(vzdump.pct_conf(conf))
        fw = self.app.state.vm_firewall(vmid)
        (etc / "pct.fw").write_text(fw.read_text() if fw.is_file() else "")

    def _attributes(self, vmid: int, target: Path, values: dict[str, str],
                    info: Callable[[str], None]) -> None:
        """Notes from notes-template and the protected flag, as files beside the archive."""
        template = self.params.get("notes-template", "")
        if template:
            info("adding notes to backup")
            notes = vzdump.generate_notes(template, {
                "cluster": "pvesim", "guestname": values.get("hostname", f"CT{vmid}"),
                "node": self.node, "vmid": str(vmid)})
            target.with_name(target.name + ".notes").write_text(notes)
        if self.params.get("protected") == "1":
            info("marking backup as protected")
            target.with_name(target.name + ".protected").touch()

    def _prune(self, vmid: int, info: Callable[[str], None]) -> None:
        """prune_backups with keep-last (the one retention option pvesim implements)."""
        keep = dict(sorted(pveconf.parse_property_string(self.params["prune-backups"]).items()))
        if keep.get("keep-all") == "1":
            return  # VZDump.pm new: keep-all turns `remove` off
        info("prune older backups with retention: " + ", ".join(f"{k}={v}" for k, v in keep.items()))
        pruned = backups.prune(self.dumpdir, self.storage or "", vmid, int(keep.get("keep-last", "0")), info)
        extra = " not covered by keep-retention policy" if pruned else ""
        info(f"pruned {pruned} backup(s){extra}")

    def _cleanup(self, vmid: int, step: dict[str, Any], info: Callable[[str], None]) -> None:
        """Unlock, drop the vzdump snapshot, restart a guest stopped for the backup."""
        with contextlib.suppress(Exception):
            if step.get("unlock"):
                self._lock(vmid, None)
        if step.get("remove_snapshot"):
            info("cleanup temporary 'vzdump' snapshot")
            try:
                drop(self.app, self.node, vmid, "vzdump", lambda _line: None)
            except Exception as e:  # removed by the next backup anyway, as PVE says
                info(f"snapshot 'vzdump' was not (fully) removed - {e}")
        if step.get("restart") and not store.is_running(self.app, vmid):
            info("restarting vm")
            self.app.backend.start(vmid, lambda _line: None)
            delay = int(time.time() - step["stopped_at"])
            info(f"guest is online again after {delay if delay >= 1 else '<1'} seconds")
