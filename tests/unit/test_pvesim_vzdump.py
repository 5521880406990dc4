"""vzdump's and restore's pure parts (names, parameters, command line, notes, config merging) and the
tar pipelines run for real on a small directory tree (no user namespace: owner 0)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pvesim import dumptar, pveconf, vzdump, vzrestore

STAMP = time.mktime((2026, 12, 2, 13, 45, 0, 0, 0, -1))


def test_archive_names_follow_pve() -> None:
    base = vzdump.basename(200, STAMP)
    assert base == "vzdump-lxc-200-2026_12_02-13_45_00"
    info = vzdump.archive_info(base + ".tar.zst")
    assert info is not None
    assert (info.vmid, info.subtype, info.format, info.ctime) == (200, "lxc", "tar.zst", int(STAMP))
    assert (info.logfilename, info.notesfilename) == (base + ".log", base + ".tar.zst.notes")
    odd = vzdump.archive_info("vzdump-lxc-my-copy.tar.gz")
    assert odd is not None and odd.vmid is None and odd.format == "tar.gz"
    assert vzdump.archive_info(base + ".log") is None
    assert vzdump.archive_info("debian-12-standard_12.7-1_amd64.tar.zst") is None


@pytest.mark.parametrize(("compress", "command", "ext"), [
    (None, None, ".tar"), ("0", None, ".tar"), ("zstd", ["zstd", "--threads=1"], ".tar.zst"),
    ("gzip", ["gzip", "--rsyncable"], ".tar.gz"), ("lzo", ["lzop"], ".tar.lzo"), ("1", ["lzop"], ".tar.lzo")])
def test_compressors(compress: str | None, command: list[str] | None, ext: str) -> None:
    assert vzdump.compressor(compress) == (command, ext)


def test_zstd_threads_zero_means_half_the_cores() -> None:
    assert vzdump.compressor("zstd", 0, cpus=8)[0] == ["zstd", "--threads=4"]


def test_decompress_option_by_extension() -> None:
    assert vzdump.decompress_option("a.tar.zst") == "--zstd"
    assert vzdump.decompress_option("a.tar") is None
    with pytest.raises(ValueError, match=r"unrecognized compression format: \.rar"):
        vzdump.decompress_option("a.tar.rar")


def test_command_line_keeps_order_and_quotes_like_pve() -> None:
    params = {"vmid": "200", "mode": "snapshot", "storage": "local", "compress": "zstd",
              "notes-template": "{{guestname}} nightly", "node": "pve1"}
    assert vzdump.command_line(params) == ("vzdump 200 --mode snapshot --storage local --compress zstd "
                                           "--notes-template '{{guestname}} nightly' --node pve1")
    assert vzdump.command_line({"vmid": "200,201", "job-id": "x"}) == "vzdump 200 201"


@pytest.mark.parametrize(("params", "user", "errors"), [
    ({"mode": "stop"}, "root@pam", {"vmid": "property is missing"}),
    ({"vmid": "200", "all": "1"}, "root@pam", {"all": "option conflicts with option 'vmid'"}),
    ({"vmid": "200", "dumpdir": "/tmp"}, "ops@pve", {"dumpdir": "Only root may set this option."}),
    ({"vmid": "200", "stdout": "1"}, "root@pam",
     {"stdout": "option is only allowed on the command line interface."}),
    ({"vmid": "200", "notes-template": "{{owner}}"}, "root@pam",
     {"notes-template": "found unknown: variable 'owner' at char 2"}),
    ({"vmid": "200", "prune-backups": "keep-daily=3"}, "root@pam",
     {"prune-backups": "pvesim prunes by keep-last only, not keep-daily"}),
])
def test_parameter_errors(params: dict[str, str], user: str, errors: dict[str, str]) -> None:
    with pytest.raises(vzdump.ParamError) as caught:
        vzdump.verify_parameters(params, user)
    assert caught.value.errors == errors


def test_valid_parameters_pass() -> None:
    vzdump.verify_parameters({"vmid": "200", "dumpdir": "/tmp", "prune-backups": "keep-last=2"}, "root@pam")
    vzdump.verify_parameters({"all": "1", "stdout": "0"}, "ops@pve")


def test_notes_are_generated_from_the_template() -> None:
    values = {"cluster": "pvesim", "guestname": "psa-all", "node": "pve1", "vmid": "200"}
    notes = vzdump.generate_notes(r"{{guestname}} on {{node}}\n{{vmid}} \\", values)
    assert notes == "psa-all on pve1\n200 \\"
    with pytest.raises(ValueError, match=r"escape sequence '\\t' at char 0"):
        vzdump.verify_notes_template(r"\t")


def test_sizes_and_times_as_the_log_writes_them() -> None:
    assert [vzdump.format_size(n) for n in (2048, 5 * 1024**2, 3 * 1024**3 // 2)] == ["2KB", "5MB", "1.50GB"]
    assert vzdump.format_time(3725) == "01:02:05"


def test_snapshot_mode_needs_snapshot_capable_storage() -> None:
    types = {"local": "dir", "local-lvm": "lvmthin"}
    assert vzdump.snapshot_capable({"rootfs": "local-lvm:vm-200-disk-0,size=8G"}, types)
    assert not vzdump.snapshot_capable({"rootfs": "local:200/vm-200-disk-0.raw,size=8G"}, types)
    # a mount point left out of the backup does not count
    assert vzdump.snapshot_capable({"rootfs": "local-lvm:vm-200-disk-0,size=8G",
                                    "mp0": "/srv/data,mp=/data"}, types)


def test_mount_points_and_reasons() -> None:
    values = {"rootfs": "local-lvm:vm-200-disk-0,size=8G", "mp0": "local-lvm:vm-200-disk-1,mp=/data,size=1G",
              "mp1": "/srv,mp=/srv"}
    assert vzdump.mount_points(values) == [("rootfs", "local-lvm:vm-200-disk-0", "/", None),
                                           ("mp0", "local-lvm:vm-200-disk-1", "/data", "disabled"),
                                           ("mp1", "/srv", "/srv", "not a volume")]


def test_pct_conf_drops_lock_parent_snapshots_and_pending() -> None:
    conf = pveconf.parse("#web server\nhostname: web\nlock: backup\nparent: before\nmemory: 512\n\n"
                         "[pve:pending]\nmemory: 1024\n\n[before]\nhostname: web\nsnaptime: 1\n")
    assert vzdump.pct_conf(conf) == "#web server\nhostname: web\nmemory: 512\n"


BACKUP = vzrestore.parse_backup_conf(
    "#the app\narch: amd64\nhostname: psa-all\nmemory: 2048\nunprivileged: 1\nfeatures: nesting=1\n"
    "net0: name=eth0,bridge=vmbr20,hwaddr=BC:24:11:00:00:01,ip=10.0.20.100/24,type=veth\n"
    "rootfs: local-lvm:vm-200-disk-0,size=8G\nmp0: local-lvm:vm-200-disk-1,mp=/data,size=1G\n"
    "lxc.apparmor.profile: unconfined\nparent: before\n\n[before]\nhostname: old\n")


def test_restore_merge_keeps_given_values_and_fills_the_rest() -> None:
    merged = vzrestore.merge({"memory": "1024", "unprivileged": "1"}, None, BACKUP, restricted=False,
                             unique=False, new_mac=lambda: "BC:24:11:AA:BB:CC")
    assert merged.values["memory"] == "1024"
    assert merged.values["hostname"] == "psa-all" and merged.values["features"] == "nesting=1"
    assert "hwaddr=BC:24:11:00:00:01" in merged.values["net0"]
    assert merged.values["lxc.apparmor.profile"] == "unconfined"
    assert not {"rootfs", "mp0", "parent"} & set(merged.values)
    assert merged.description == "the app" and merged.warnings == []


def test_restore_merge_unique_macs_and_restricted_user() -> None:
    merged = vzrestore.merge({}, "given", BACKUP, restricted=True, unique=True,
                             new_mac=lambda: "BC:24:11:AA:BB:CC")
    net0 = merged.values["net0"]
    assert net0.startswith("name=eth0,") and "hwaddr=BC:24:11:AA:BB:CC" in net0
    assert "lxc.apparmor.profile" not in merged.values
    assert "features" not in merged.values  # unprivileged backup restored as privileged
    assert merged.description == "given"
    assert merged.warnings[0] == "changing from unprivileged to privileged, skipping features"
    assert merged.warnings[1].splitlines()[2] == "lxc.apparmor.profile: unconfined"


def test_rootfs_from_backup_takes_its_size_to_the_storage() -> None:
    assert vzrestore.rootfs_from_backup(BACKUP, "local-lvm") == "local-lvm:8"
    bare = vzrestore.parse_backup_conf("rootfs: local-lvm:vm-1-disk-0\n")
    with pytest.raises(ValueError, match="unable to detect disk size"):
        vzrestore.rootfs_from_backup(bare, "local-lvm")


# --- tar, for real ---------------------------------------------------------------------------

def _tree(tmp: Path) -> tuple[Path, Path]:
    rootfs, tmpdir = tmp / "rootfs", tmp / "job"
    (rootfs / "sbin").mkdir(parents=True)
    (rootfs / "sbin/init").write_text("#!/bin/sh\n")
    (rootfs / "root").mkdir()
    (rootfs / "root/marker").write_text("hello\n")
    (rootfs / "tmp").mkdir()
    (rootfs / "tmp/scratch").write_text("left out\n")
    (tmpdir / "etc/vzdump").mkdir(parents=True)
    (tmpdir / "etc/vzdump/pct.conf").write_text("hostname: web\n")
    (tmpdir / "etc/vzdump/pct.fw").write_text("")
    return rootfs, tmpdir


def test_archive_round_trip_with_config_first(tmp_path: Path) -> None:
    rootfs, tmpdir = _tree(tmp_path)
    archive = tmp_path / "vzdump-lxc-200-2026_12_02-13_45_00.tar.zst"
    lines: list[str] = []
    tar = dumptar.create_command(rootfs, tmpdir, 0, ["/tmp/?*"])
    dumptar.write(tar, ["zstd", "--threads=1"], archive, lines.append)
    assert any(line.startswith("Total bytes written: ") for line in lines)
    assert dumptar.read_member(archive, dumptar.CONF_MEMBER) == "hostname: web\n"
    assert dumptar.read_member(archive, "./etc/vzdump/vps.conf") is None
    target = tmp_path / "restored"
    target.mkdir()
    dumptar.extract(archive, target, 0, lines.append)
    assert (target / "root/marker").read_text() == "hello\n"
    assert (target / "tmp").is_dir() and not (target / "tmp/scratch").exists()
    assert f"extracting archive '{archive}'" in lines


def test_truncated_archive_fails_extraction(tmp_path: Path) -> None:
    rootfs, tmpdir = _tree(tmp_path)
    (rootfs / "big").write_bytes(bytes(range(256)) * 8192)
    archive = tmp_path / "vzdump-lxc-200-2026_12_02-13_45_00.tar.gz"
    dumptar.write(dumptar.create_command(rootfs, tmpdir, 0), ["gzip"], archive, lambda _l: None)
    archive.write_bytes(archive.read_bytes()[:2000])
    target = tmp_path / "restored"
    target.mkdir()
    with pytest.raises(dumptar.TarError, match=r"^command 'tar xpf - -z --totals .* failed: exit code 2$"):
        dumptar.extract(archive, target, 0, lambda _l: None)


def test_missing_compressor_is_named(tmp_path: Path) -> None:
    rootfs, tmpdir = _tree(tmp_path)
    with pytest.raises(dumptar.TarError, match="unable to find command 'no-such-compressor'"):
        dumptar.write(dumptar.create_command(rootfs, tmpdir, 0), ["no-such-compressor"], tmp_path / "x.tar",
                      lambda _l: None)


def test_unprivileged_commands_run_in_the_guest_namespace() -> None:
    tar = dumptar.create_command(Path("/src"), Path("/job"), 100000)
    assert tar[:6] == ["lxc-usernsexec", "-m", "u:0:100000:65536", "-m", "g:0:100000:65536", "--"]
    assert "--exclude=lost+found" in tar and tar[-1] == "."
    extract = dumptar.extract_command("a.tar.zst", Path("/r"), 0)
    assert extract[:5] == ["tar", "xpf", "-", "--zstd", "--totals"]


def test_restore_merge_unique_puts_the_backed_up_net_over_the_given_one() -> None:
    # Create.pm sanitize_and_merge_config: with unique, the backup's netN (new MAC) replaces the given
    # netN, so a copy restored with unique=1 comes up on its original's address; without unique the
    # given netN wins (the tool restores that way)
    given = {"net0": "name=eth0,bridge=vmbr20,hwaddr=BC:24:11:00:00:99,ip=10.0.20.200/24,type=veth"}
    merged = vzrestore.merge(given, None, BACKUP, restricted=False, unique=True,
                             new_mac=lambda: "BC:24:11:AA:BB:CC")
    assert "ip=10.0.20.100/24" in merged.values["net0"] and "BC:24:11:AA:BB:CC" in merged.values["net0"]
    merged = vzrestore.merge(given, None, BACKUP, restricted=False, unique=False,
                             new_mac=lambda: "BC:24:11:AA:BB:CC")
    assert merged.values["net0"] == given["net0"]
