"""The tar side of vzdump and restore, with the commands pve-container runs.

Writing (VZDump/LXC.pm archive): `tar cpf - --totals <COMMON_TAR_FLAGS> --directory=<tmp>
./etc/vzdump/pct.conf ./etc/vzdump/pct.fw --directory=<rootfs> ... .` piped into the compressor.
For an unprivileged container tar runs in the container's user namespace (lxc-usernsexec), so the
archive holds the ids as the guest sees them (root = 0, not 100000) and restores anywhere.
Reading (LXC/Create.pm restore_tar_archive): `tar xpf - --zstd --totals ... -C <rootfs>
--skip-old-files --anchored --exclude ./dev/*` fed the archive on stdin, again in the namespace.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from pvesim import guestconf, vzdump

Log = Callable[[str], None]
# pve-storage Plugin.pm @COMMON_TAR_FLAGS
COMMON_TAR_FLAGS = ["--one-file-system", "-p", "--sparse", "--numeric-owner", "--acls", "--xattrs",
                    "--xattrs-include=user.*", "--xattrs-include=security.capability",
                    "--warning=no-file-ignored", "--warning=no-xattr-write"]
CONF_MEMBER = "./etc/vzdump/pct.conf"
FW_MEMBER = "./etc/vzdump/pct.fw"


class TarError(Exception):
    """A tar pipeline failed; the text is PVE's `command '...' failed: exit code N`."""


def userns(owner: int) -> list[str]:
    """PVE::LXC::userns_command: run as the guest's root (host uid `owner`), or plainly when 0."""
    if not owner:
        return []
    ids = f"{owner}:{guestconf.SUBID_COUNT}"
    return ["lxc-usernsexec", "-m", f"u:0:{ids}", "-m", f"g:0:{ids}", "--"]


def _shown(commands: Sequence[Sequence[str]], target: Path | None = None) -> str:
    text = " | ".join(" ".join(vzdump.shellquote(a) for a in cmd) for cmd in commands)
    return f"{text} >{vzdump.shellquote(str(target))}" if target else text


def _log_lines(text: str, log: Log) -> None:
    for line in text.splitlines():
        if line.strip():
            log(line)


def create_command(source: Path, vzdump_dir: Path, owner: int, excludes: Sequence[str] = (),
                   with_fw: bool = True) -> list[str]:
    """The tar command of VZDump/LXC.pm archive (excludes: vzdump's exclude-path patterns)."""
    tar = [*userns(owner), "tar", "cpf", "-", "--totals", *COMMON_TAR_FLAGS, "--one-file-system",
           "--warning=no-file-ignored", f"--directory={vzdump_dir}", CONF_MEMBER]
    if with_fw:
        tar.append(FW_MEMBER)
    tar += [f"--directory={source}", "--no-anchored"]
    if owner:
        tar.append("--exclude=lost+found")
    tar += [f"--exclude={p}" for p in excludes if not p.startswith("/")]
    tar.append("--anchored")
    tar += [f"--exclude=.{p}" for p in excludes if p.startswith("/")]
    return [*tar, "."]


def write(tar: list[str], compress: list[str] | None, target: Path, log: Log, timeout: float = 3600) -> None:
    """Run tar (| compressor) > target; tar's messages (`Total bytes written: ...`) go to the log."""
    commands = [tar, compress] if compress else [tar]
    with target.open("wb") as out:
        tar_proc = subprocess.Popen(tar, stdout=subprocess.PIPE if compress else out, stderr=subprocess.PIPE)
        comp_proc = None
        if compress:
            try:
                comp_proc = subprocess.Popen(compress, stdin=tar_proc.stdout, stdout=out,
                                             stderr=subprocess.PIPE)
            except FileNotFoundError as e:
                tar_proc.kill()
                tar_proc.wait()
                raise TarError(f"unable to find command '{compress[0]}'") from e
            assert tar_proc.stdout is not None
            tar_proc.stdout.close()
        _, tar_err = tar_proc.communicate(timeout=timeout)
        comp_err = comp_proc.communicate(timeout=timeout)[1] if comp_proc else b""
    _log_lines(tar_err.decode(errors="replace"), log)
    _log_lines(comp_err.decode(errors="replace"), log)
    for proc in (tar_proc, comp_proc):
        if proc is not None and proc.returncode != 0:
            raise TarError(f"command '{_shown(commands, target)}' failed: exit code {proc.returncode}")


def read_member(archive: Path, member: str) -> str | None:
    """Storage.pm extract_vzdump_config_tar: one member's text (`tar -xpOf ... --occurrence`, which
    stops at the first copy: the config leads the archive), or None when the archive lacks it."""
    cmd = ["tar", "-xpOf", str(archive), member, "--occurrence"]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=600)
    if result.returncode != 0:
        if "Not found in archive" in result.stderr:
            return None
        raise TarError(f"command '{_shown([cmd])}' failed: exit code {result.returncode}")
    return result.stdout


def extract_command(archive_name: str, rootfs: Path, owner: int) -> list[str]:
    """The tar command of Create.pm restore_tar_archive_command."""
    tar = [*userns(owner), "tar", "xpf", "-"]
    option = vzdump.decompress_option(archive_name)
    if option:
        tar.append(option)
    return [*tar, "--totals", *COMMON_TAR_FLAGS, "-C", str(rootfs), "--skip-old-files", "--anchored",
            "--exclude", "./dev/*"]


def extract(archive: Path, rootfs: Path, owner: int, log: Log, timeout: float = 3600) -> None:
    """Unpack a backup archive into rootfs (existing, owned by the guest's root), its messages logged."""
    tar = extract_command(archive.name, rootfs, owner)
    log(f"extracting archive '{archive}'")
    with archive.open("rb") as stdin:
        result = subprocess.run(tar, stdin=stdin, capture_output=True, check=False, timeout=timeout)
    _log_lines(result.stderr.decode(errors="replace"), log)
    if result.returncode != 0:
        raise TarError(f"command '{_shown([tar])}' failed: exit code {result.returncode}")
