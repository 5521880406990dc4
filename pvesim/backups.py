"""Backup content of a dir storage, as pve-storage's Plugin.pm and Storage.pm keep it: archives in the
dump dir, each with optional `<archive>.notes` (first line listed), `<archive>.protected` and the
job's `<basename>.log`. Volume ids are `<storage>:backup/<archive name>`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pvesim import vzdump
from pvesim.backend import Log


class VolumeError(Exception):
    """A backup volume that cannot be used or removed (PVE's die text)."""


def entry(storage: str, path: Path) -> dict[str, Any]:
    """One `content` row (Plugin.pm get_subdir_files, type backup)."""
    info = vzdump.archive_info(path.name)
    st = path.stat()
    out: dict[str, Any] = {"volid": f"{storage}:backup/{path.name}", "content": "backup",
                           "format": info.format if info else "unknown",
                           "subtype": info.subtype if info else "unknown", "size": st.st_size,
                           "ctime": info.ctime if info and info.ctime is not None else int(st.st_ctime)}
    if info and info.vmid is not None:
        out["vmid"] = info.vmid
    notes = path.with_name(path.name + ".notes")
    if notes.is_file():
        lines = notes.read_text(errors="replace").splitlines()
        out["notes"] = lines[0] if lines else ""
    if path.with_name(path.name + ".protected").exists():
        out["protected"] = 1
    return out


def archives(dumpdir: Path, vmid: int | None = None) -> list[Path]:
    """Backup archives in the dump dir (names matching $BACKUP_EXT_RE_2), by name; `vmid` filters."""
    if not dumpdir.is_dir():
        return []
    found = []
    for path in dumpdir.iterdir():
        name = path.name
        if not path.is_file() or not vzdump.BACKUP_EXT.search(name) or not name.startswith("vzdump-"):
            continue
        info = vzdump.archive_info(path.name)
        if vmid is not None and (info is None or info.vmid != vmid):
            continue
        found.append(path)
    return sorted(found, key=lambda p: p.name.lower())


def path_of(dumpdir: Path, storage: str, volid: str) -> Path:
    """The file of `<storage>:backup/<name>`; VolumeError when the id is not one or nothing is there."""
    sid, _, volname = volid.partition(":")
    name = volname.removeprefix("backup/")
    if sid != storage or not volname.startswith("backup/") or "/" in name \
            or not vzdump.BACKUP_EXT.search(name):
        raise VolumeError(f"unable to parse volume ID '{volid}'")
    path = dumpdir / name
    if not path.is_file():
        raise VolumeError(f"volume '{volid}' does not exist")
    return path


def remove(path: Path) -> None:
    """Storage.pm archive_remove: refused when protected; the .log and .notes go with it."""
    if path.with_name(path.name + ".protected").exists():
        raise VolumeError(f"cannot remove protected archive '{path}'")
    path.unlink(missing_ok=True)
    info = vzdump.archive_info(path.name)
    for name in (info.logfilename if info else None, info.notesfilename if info else None):
        if name:
            (path.parent / name).unlink(missing_ok=True)


def prune(dumpdir: Path, storage: str, vmid: int, keep_last: int, log: Log) -> int:
    """prune_backups with keep-last only: the newest `keep_last` unprotected archives stay."""
    dated = [(vzdump.archive_info(p.name), p) for p in archives(dumpdir, vmid)]
    ordered = sorted(((i.ctime or 0, p) for i, p in dated if i is not None and i.subtype == "lxc"),
                     reverse=True)
    kept = removed = 0
    for _ctime, path in ordered:
        if path.with_name(path.name + ".protected").exists():
            continue
        if kept < keep_last:
            kept += 1
            continue
        log(f"removing backup '{storage}:backup/{path.name}'")
        remove(path)
        removed += 1
    return removed
