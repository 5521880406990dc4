"""vzdump's pure parts, as pve-manager's PVE/VZDump.pm and pve-storage have them: parameter checks,
the job's command line, archive names, compressors, notes templates, sizes and times in the log.

Archive names: `vzdump-lxc-<vmid>-YYYY_MM_DD-HH_MM_SS.tar[.zst|.gz|.lzo]` (local time, VZDump.pm
exec_backup_task), beside `<basename>.log`, `<archive>.notes` and `<archive>.protected`
(pve-storage Plugin.pm LOG_EXT, NOTES_EXT, Storage.pm protection_file_path).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

from pvesim import acl, pveconf
from pvesim.pveconf import PveConf, Section

BACKUP_EXT = re.compile(r"\.(tgz|(?:tar|vma)(?:\.(gz|lzo|zst|bz2))?)$")  # Storage.pm $BACKUP_EXT_RE_2
_STD_NAME = re.compile(r"^(vzdump-(lxc|openvz|qemu)-([1-9][0-9]{2,8})-"
                       r"(\d{4})_(\d{2})_(\d{2})-(\d{2})_(\d{2})_(\d{2}))"
                       r"\.(tgz|(?:tar|vma)(?:\.(?:gz|lzo|zst|bz2))?)$")
ROOT_ONLY = ("tmpdir", "dumpdir", "script", "job-id")  # API2/Backup.pm assert_param_permission_common
SYS_MODIFY = ("bwlimit", "ionice", "performance")
NOTES_VARS = ("cluster", "guestname", "node", "vmid")
# parameters that never reach `vzdump`'s command line (Common.pm command_line)
_NOT_ON_CMDLINE = ("id", "vmid", "starttime", "dow", "stdout", "enabled", "job-id")
_SHELL_SAFE = re.compile(r"^[\w!%+,\-./:=@^]+$")  # String::ShellQuote leaves these unquoted
# storage types whose volumes can be snapshotted (pve-storage plugins' volume_has_feature 'snapshot')
SNAPSHOT_TYPES = frozenset({"lvmthin", "zfspool", "rbd", "btrfs", "cephfs"})


class ParamError(Exception):
    """raise_param_exc: a 400 `Parameter verification failed.` with per-parameter errors."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("Parameter verification failed.")
        self.errors = errors


@dataclass(frozen=True)
class ArchiveInfo:
    """What pve-storage's archive_info reads from a backup file name."""

    filename: str
    subtype: str  # lxc | qemu | openvz
    format: str  # tar, tar.zst, ...
    vmid: int | None
    ctime: int | None
    logfilename: str | None
    notesfilename: str


def archive_info(name: str) -> ArchiveInfo | None:
    """Parse a backup file name; None when it is not one (archive_info dies there)."""
    m = _STD_NAME.match(name)
    if m:
        y, mo, d, h, mi, s = (int(x) for x in m.groups()[3:9])
        ctime = int(time.mktime((y, mo, d, h, mi, s, 0, 0, -1)))
        return ArchiveInfo(name, m.group(2), m.group(10), int(m.group(3)), ctime, m.group(1) + ".log",
                           name + ".notes")
    m2 = re.match(r"^vzdump-(lxc|openvz|qemu)-.+" + BACKUP_EXT.pattern, name)
    if m2:
        return ArchiveInfo(name, m2.group(1), m2.group(2), None, None, None, name + ".notes")
    return None


def basename(vmid: int, when: float, kind: str = "lxc") -> str:
    """`vzdump-lxc-200-2026_12_02-13_45_00` for a backup started at `when` (local time)."""
    return f"vzdump-{kind}-{vmid}-" + time.strftime("%Y_%m_%d-%H_%M_%S", time.localtime(when))


def compressor(compress: str | None, zstd_threads: int = 1, cpus: int = 1) -> tuple[list[str] | None, str]:
    """VZDump.pm compressor_info: (command, archive extension) for `compress`."""
    if not compress or compress == "0":
        return None, ".tar"
    if compress in ("1", "lzo"):
        return ["lzop"], ".tar.lzo"
    if compress == "gzip":
        return ["gzip", "--rsyncable"], ".tar.gz"
    if compress == "zstd":
        threads = zstd_threads or (cpus + 1) // 2
        return ["zstd", f"--threads={threads}"], ".tar.zst"
    raise ValueError(f"internal error - unknown compression option '{compress}'")


def decompress_option(name: str) -> str | None:
    """Create.pm tar_compression_option: GNU tar's flag for the archive's compression."""
    m = re.search(r"\.tar(\.[^.]+)?$", name)
    if not m:
        raise ValueError(f"file does not look like a template archive: {name}")
    if m.group(1) is None:
        return None
    flags = {".gz": "-z", ".bz2": "-j", ".xz": "-J", ".lzo": "--lzop", ".zst": "--zstd"}
    if m.group(1) not in flags:
        raise ValueError(f"unrecognized compression format: {m.group(1)}")
    return flags[m.group(1)]


def shellquote(value: str) -> str:
    """PVE::Tools::shellquote (String::ShellQuote): bare when safe, else single-quoted."""
    if value and _SHELL_SAFE.match(value):
        return value
    return "'" + value.replace("'", "'\\''") + "'"


def command_line(params: Mapping[str, str]) -> str:
    """Common.pm command_line: `vzdump 200 --mode snapshot --storage local ...` (parameter order kept)."""
    cmd = "vzdump"
    if params.get("vmid"):
        cmd += " " + " ".join(acl.split_list(params["vmid"]))
    for key, value in params.items():
        if key in _NOT_ON_CMDLINE:
            continue
        if key == "exclude-path":
            cmd += "".join(f" --{key} {shellquote(p)}" for p in value.split("\0") if p)
        elif value != "":
            cmd += f" --{key} {shellquote(value)}"
    return cmd


def verify_notes_template(template: str) -> None:
    """VZDump.pm verify_notes_template: ValueError naming unknown variables and escapes."""
    if "\n" in template:
        raise ValueError("contains a line feed")
    problems = [f"escape sequence '\\{m.group(1)}' at char {m.start()}"
                for m in re.finditer(r"\\(.)", template) if m.group(1) not in ("n", "\\")]
    problems += [f"variable '{m.group(1)}' at char {m.start(1)}"
                 for m in re.finditer(r"\{\{([^\s{}]+)\}\}", template) if m.group(1) not in NOTES_VARS]
    if problems:
        raise ValueError("found unknown: " + ", ".join(problems))


def generate_notes(template: str, values: Mapping[str, str]) -> str:
    """VZDump.pm generate_notes: `\\n` and `\\\\` unescaped, {{cluster}} {{guestname}} {{node}}
    {{vmid}} filled in."""
    verify_notes_template(template)
    text = re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else "\\", template)
    return re.sub(r"\{\{(" + "|".join(NOTES_VARS) + r")\}\}", lambda m: str(values[m.group(1)]), text)


def verify_parameters(params: Mapping[str, str], authid: str) -> None:
    """API2/VZDump.pm vzdump's own checks before the task: ParamError as PVE raises them."""
    if authid != acl.ROOT:
        for key in ROOT_ONLY:
            if key in params:
                raise ParamError({key: "Only root may set this option."})
    if params.get("stdout") == "1":
        raise ParamError({"stdout": "option is only allowed on the command line interface."})
    for other in ("all", "exclude", "pool"):
        if params.get(other) not in (None, "", "0") and params.get("vmid"):
            raise ParamError({other: "option conflicts with option 'vmid'"})
    if params.get("notes-template"):
        try:
            verify_notes_template(params["notes-template"])
        except ValueError as e:
            raise ParamError({"notes-template": str(e)}) from None
    prune = params.get("prune-backups")
    if prune:
        keep = pveconf.parse_property_string(prune)
        unsupported = sorted(set(keep) - {"keep-all", "keep-last"})
        if unsupported:
            raise ParamError({"prune-backups": "pvesim prunes by keep-last only, not "
                                               + ", ".join(unsupported)})
    everything = params.get("all") == "1" or bool(params.get("exclude"))
    if not (everything or params.get("stop") == "1" or params.get("pool")) and not params.get("vmid"):
        raise ParamError({"vmid": "property is missing"})


def format_size(size: int) -> str:
    """VZDump.pm format_size: `812KB`, `45MB`, `1.23GB`."""
    kb = size / 1024
    if kb < 1024:
        return f"{int(kb)}KB"
    mb = size / 1024**2
    if mb < 1024:
        return f"{int(mb)}MB"
    gb = mb / 1024
    return f"{gb:.2f}GB" if gb < 1024 else f"{gb / 1024:.2f}TB"


def format_time(seconds: int) -> str:
    """VZDump.pm format_time: `00:00:12`."""
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def timestamp(when: float) -> str:
    """strftime("%F %H:%M:%S", localtime) as the `Backup started at` lines use."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))


def mount_points(values: Mapping[str, str]) -> list[tuple[str, str, str, str | None]]:
    """(key, volume, mount path, reason it is left out or None) per volume, rootfs first, as
    LXC::Config get_backup_volumes / mountpoint_backup_enabled decide. pvesim's containers have
    their rootfs only on disk, so a mount point with backup=1 is left out too, saying why."""
    keys = sorted((k for k in values if k == "rootfs" or re.fullmatch(r"mp\d+", k)),
                  key=lambda k: -1 if k == "rootfs" else int(k[2:]))
    out: list[tuple[str, str, str, str | None]] = []
    for key in keys:
        props = pveconf.parse_property_string(values[key], "volume")
        volume = props.get("volume", "")
        if key == "rootfs":
            out.append((key, volume, "/", None))
        elif volume.startswith("/"):
            out.append((key, volume, props.get("mp", ""), "not a volume"))
        elif props.get("backup") != "1":
            out.append((key, volume, props.get("mp", ""), "disabled"))
        else:
            out.append((key, volume, props.get("mp", ""), "pvesim keeps no mount point volumes"))
    return out


def snapshot_capable(values: Mapping[str, str], storage_types: Mapping[str, str]) -> bool:
    """LXC::Config has_feature('snapshot') over the backed-up volumes: each on a storage that can
    snapshot (lvmthin, zfspool, rbd...; a dir storage cannot)."""
    for _key, volume, _path, reason in mount_points(values):
        if reason is None and storage_types.get(volume.partition(":")[0]) not in SNAPSHOT_TYPES:
            return False
    return True


def pct_conf(conf: PveConf) -> str:
    """The ./etc/vzdump/pct.conf of a backup: the current config without lock, parent, snapshots and
    pending changes (VZDump/LXC.pm assemble)."""
    values = {k: v for k, v in conf.main.values.items() if k not in ("lock", "parent")}
    return pveconf.dump(PveConf(main=Section(values, conf.main.description)))
