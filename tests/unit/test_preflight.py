"""pvesim.preflight on sample roots: a complete host passes, each missing piece is one line naming
its package."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pvesim import cli, preflight

SOURCES = ("Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
           "Components: main\n\n"
           "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n"
           "Components: main\n")
MOUNTS = "sysfs /sys sysfs rw 0 0\ncgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n"


def complete_root(root: Path) -> Path:
    """A root holding every command, file, kernel interface and setting the sandbox needs."""
    for name in preflight.COMMANDS:
        path = root / "usr/bin" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    for rel in preflight.FILES:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("")
    files = {
        "etc/apt/sources.list.d/debian.sources": SOURCES,
        "proc/self/mounts": MOUNTS,
        "proc/sys/user/max_user_namespaces": "15000\n",
        "proc/sys/net/ipv4/ip_forward": "0\n",
        "proc/sys/vm/max_map_count": "65530\n",
        "proc/sys/fs/inotify/max_user_instances": "128\n",
        "dev/fuse": "",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def host(root: Path) -> preflight.Host:
    return preflight.Host(root, env={"HOME": "/root"}, npm_get=lambda: "https://npm.example/\n")


def test_a_complete_host_passes(tmp_path: Path) -> None:
    lines: list[str] = []
    assert preflight.report(host(complete_root(tmp_path)), lines.append) is True
    assert lines == []


def test_missing_lxc_templates_is_named_by_package(tmp_path: Path) -> None:
    root = complete_root(tmp_path)
    (root / "usr/share/lxc/config/debian.common.conf").unlink()
    lines: list[str] = []
    assert preflight.report(host(root), lines.append) is False
    assert lines[0] == ("preflight: /usr/share/lxc/config/debian.common.conf is missing (used by every "
                        "container config (guestconf.py)): apt-get install lxc-templates")
    assert lines[-1].startswith("preflight: 1 problem(s);")


@pytest.mark.parametrize(("command", "package"), [("lxc-start", "lxc"), ("newuidmap", "uidmap"),
                                                  ("apt-cacher-ng", "apt-cacher-ng"), ("nft", "nftables"),
                                                  ("dpkg-scanpackages", "dpkg-dev"), ("zstd", "zstd")])
def test_each_missing_command_names_its_package(tmp_path: Path, command: str, package: str) -> None:
    root = complete_root(tmp_path)
    (root / "usr/bin" / command).unlink()
    (problem,) = preflight.problems(host(root))
    assert problem.what.startswith(f"command {command} is missing")
    assert problem.hint == f"apt-get install {package}"


def test_a_file_that_is_not_executable_is_not_a_command(tmp_path: Path) -> None:
    root = complete_root(tmp_path)
    (root / "usr/bin/debootstrap").chmod(0o644)
    assert [p.hint for p in preflight.problems(host(root))] == ["apt-get install debootstrap"]


def test_kernel_features(tmp_path: Path) -> None:
    root = complete_root(tmp_path)
    (root / "proc/sys/user/max_user_namespaces").write_text("0\n")
    (root / "proc/self/mounts").write_text("sysfs /sys sysfs rw 0 0\n")
    (root / "dev/fuse").unlink()
    found = [p.line() for p in preflight.problems(host(root))]
    assert len(found) == 3
    assert "user namespaces are disabled" in found[0]
    assert "no cgroup hierarchy is mounted" in found[1]
    assert found[2] == "/dev/fuse is missing (lxcfs needs it): modprobe fuse"


def test_cgroup_v1_hierarchies_count_as_mounted(tmp_path: Path) -> None:
    root = complete_root(tmp_path)
    (root / "proc/self/mounts").write_text("tmpfs /sys/fs/cgroup tmpfs rw 0 0\n"
                                           "cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n")
    assert preflight.problems(host(root)) == []


def test_configuration_without_a_debian_mirror_or_npm_registry(tmp_path: Path) -> None:
    root = complete_root(tmp_path)
    (root / "etc/apt/sources.list.d/debian.sources").write_text("")
    bare = preflight.Host(root, env={"HOME": "/root"}, npm_get=lambda: None)
    found = [p.line() for p in preflight.problems(bare)]
    assert len(found) == 3
    assert re.match(r"no apt source serves Debian bookworm: add it to ", found[0])
    assert found[1].startswith("no apt source serves bookworm-security")
    assert found[2].startswith("no npm registry is configured: install npm")


def test_pvesim_up_stops_before_changing_anything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    root = complete_root(tmp_path / "root")
    (root / "usr/bin/lxcfs").unlink()
    sample = host(root)
    monkeypatch.setattr(preflight, "Host", lambda: sample)
    state = tmp_path / "state"
    assert cli.main(["up", "--state-dir", str(state)]) == 1
    assert not state.exists()
    out = capsys.readouterr().out
    assert "preflight: command lxcfs is missing" in out and "apt-get install lxcfs" in out
    assert cli.main(["preflight", "--state-dir", str(state)]) == 1
