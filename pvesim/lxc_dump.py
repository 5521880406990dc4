"""LxcBackend's vzdump and restore, as pve-container's VZDump/LXC.pm and LXC/Create.pm do them.

Backup sources by mode: `snapshot` the rootfs copy that LxcBackend.snapshot made under the name
`vzdump`; `suspend` the rsync of the running guest's rootfs that suspend_copy made into the
job's tmpdir, a first pass live and a final one with the guest frozen (copy_data_phase1/2);
`stop` the volume of the stopped guest. tar itself runs in dumptar, in the guest's id namespace
when it is unprivileged.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from pathlib import Path

from pvesim import dumptar
from pvesim.backend import BackendError, Log
from pvesim.lxc import LxcBackend, _run, _safe_target, _write_guest_files, traversable

SNAPSHOT = "vzdump"  # the storage snapshot vzdump takes in snapshot mode (VZDump/LXC.pm)


def _readable(tmpdir: Path) -> None:
    """./etc/vzdump/ in tmpdir readable by the guest's root in its namespace (as `others` on the host)."""
    traversable(tmpdir)
    etc = tmpdir / "etc" / "vzdump"
    for path in (tmpdir, tmpdir / "etc", etc, *etc.iterdir()):
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)


def _rsync(source: Path, target: Path, excludes: list[str], text: str, log: Log) -> None:
    """VZDump/LXC.pm rsync_vm: one pass, logged as `starting first sync ...` / `first sync finished ...`."""
    log(f"starting {text} sync {source}/ to {target}")
    started = time.monotonic()
    out = _run(["rsync", "--stats", "-h", "-X", "-A", "--numeric-ids", "-aH", "--delete", "--no-whole-file",
                "--sparse", "--one-file-system", *[f"--exclude={p}" for p in excludes], f"{source}/",
                f"{target}/"], f"{text} sync", timeout=3600)
    found = re.search(r"^Total transferred file size: (.+)$", out, re.MULTILINE)
    log(f"{text} sync finished - transferred {found.group(1) if found else ''} in "
        f"{int(time.monotonic() - started)}s")


def suspend_copy(backend: LxcBackend, vmid: int, conf: Mapping[str, str], target: Path, excludes: list[str],
                 log: Log) -> None:
    """Backend.suspend_copy: copy_data_phase1, suspend_vm, copy_data_phase2, resume_vm, logged."""
    backend._require(vmid)
    source = backend._volume(vmid, conf)
    target.mkdir(parents=True, exist_ok=True)
    _rsync(source, target, excludes, "first", log)
    log("suspending guest")
    stopped = time.monotonic()
    with backend._frozen(vmid, lambda _line: None):
        _rsync(source, target, excludes, "final", log)
        log("resuming guest")
    delay = int(time.monotonic() - stopped)
    log(f"guest is online again after {delay if delay >= 1 else '<1'} seconds")


def archive(backend: LxcBackend, vmid: int, conf: Mapping[str, str], mode: str, tmpdir: Path, target: Path,
            compress: list[str] | None, excludes: list[str], log: Log) -> None:
    """Backend.archive on real LXC."""
    backend._require(vmid)
    volume = backend._volume(vmid, conf)
    _readable(tmpdir)
    if mode == "snapshot":
        source = backend.state.snapshot_dir(vmid, SNAPSHOT)
    elif mode == "suspend":
        source = tmpdir / "rootfs"
    elif mode == "stop":
        source = volume
    else:
        raise BackendError(f"internal error - unknown mode '{mode}'")
    if not source.is_dir():
        raise BackendError(f"CT {vmid}: backup source {source} does not exist")
    traversable(source)
    tar = dumptar.create_command(source, tmpdir, backend._owner(conf), excludes)
    try:
        dumptar.write(tar, compress, target, log)
    except (dumptar.TarError, OSError) as exc:
        raise BackendError(str(exc)) from exc


def restore(backend: LxcBackend, vmid: int, conf: Mapping[str, str], archive_path: Path, log: Log) -> None:
    """Backend.restore on real LXC: on any failure the new volume and LXC dir are removed again."""
    if backend.exists(vmid):
        raise BackendError(f"CT {vmid} already exists")
    rootfs, owner = backend._volume(vmid, conf), backend._owner(conf)
    if rootfs.exists():
        raise BackendError(f"volume {rootfs} already exists")
    try:
        rootfs.mkdir(parents=True)
        os.chown(rootfs, owner, owner)
        if owner:
            traversable(rootfs)
        dumptar.extract(archive_path, rootfs, owner, log)
        for member in ("pct.conf", "pct.fw"):  # Create.pm restore_configuration unlinks them
            path = _safe_target(rootfs, f"etc/vzdump/{member}")
            if path.is_file() or path.is_symlink():
                path.unlink()
        backend._write_config(vmid, conf, rootfs)
        _write_guest_files(rootfs, conf, owner, fresh=False)
    except (BackendError, dumptar.TarError, OSError) as exc:
        backend._remove(vmid, rootfs)
        raise BackendError(str(exc)) from exc
