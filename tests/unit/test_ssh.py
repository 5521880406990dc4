"""ssh.py pure parts: how scripts and data reach the guest (never secrets in argv), tar shipping."""

from __future__ import annotations

import io
import shlex
import subprocess
import tarfile
from pathlib import Path

import pytest

from psa_provision.ssh import (
    RUN_FROM_STDIN,
    Result,
    as_user,
    command_for,
    forget_host,
    put_tree_payload,
    tar_tree,
)


def test_script_rides_stdin_when_there_is_no_data() -> None:
    command, body = command_for("echo hi", has_stdin=False)
    assert shlex.split(command) == ["bash", "-c", RUN_FROM_STDIN] and body == b"echo hi"


def test_a_command_reading_stdin_cannot_eat_the_rest_of_the_script(tmp_path: Path) -> None:
    """Run the wrapper locally: `cat` inside the script must not swallow the lines after it."""
    command, body = command_for("cat\necho after", has_stdin=False)
    proc = subprocess.run(["/bin/sh", "-c", command], input=body, capture_output=True, check=False)
    assert proc.stdout == b"after\n" and proc.returncode == 0


def test_with_data_on_stdin_the_script_is_the_argument_and_data_stays_off_argv() -> None:
    command, body = command_for('read -r pw; psql -c "..."', has_stdin=True, cwd="/opt/psa platform")
    argv = shlex.split(command)
    assert argv[:2] == ["bash", "-c"] and body == b""
    assert argv[2] == "cd '/opt/psa platform' || exit 1\nread -r pw; psql -c \"...\""


@pytest.mark.parametrize(("user", "login", "want"), [
    ("root", "root", "bash -s"),
    ("psa", "root", "runuser -l psa -s /bin/bash -c 'bash -s'"),
    ("psa", "admin", "sudo -n -H -u psa bash -c 'bash -s'"),
    ("root", "admin", "sudo -n -H -u root bash -c 'bash -s'"),
])
def test_as_user(user: str, login: str, want: str) -> None:
    assert as_user("bash -s", user, login) == want


def test_tar_tree_skips_excluded_names_anywhere(tmp_path: Path) -> None:
    (tmp_path / "services" / "auth" / "src").mkdir(parents=True)
    (tmp_path / "services" / "auth" / "src" / "index.ts").write_text("x")
    (tmp_path / "services" / "auth" / "node_modules" / "lib").mkdir(parents=True)
    (tmp_path / "services" / "auth" / "node_modules" / "lib" / "a.js").write_text("x")
    (tmp_path / "services" / "auth" / "dist").mkdir()
    (tmp_path / "services" / "auth" / "dist" / "index.js").write_text("x")
    (tmp_path / "package.json").write_text("{}")
    data, names = tar_tree(tmp_path, ("node_modules", "dist"))
    assert names == ["package.json", "services/auth/src/index.ts"]
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert "services/auth/src/index.ts" in members
    assert not any("node_modules" in n or "dist" in n for n in members)
    assert {m.uname for m in members.values()} == {"root"}


def test_result_tail_keeps_the_last_lines() -> None:
    result = Result("\n".join(f"out {i}" for i in range(30)), "boom", 1)
    tail = result.tail(3).splitlines()
    assert tail == ["out 28", "out 29", "boom"] and not result.ok


def test_put_tree_script_unpacks_prunes_stale_files_and_keeps_what_lives_beside(tmp_path: Path) -> None:
    """Run the shipping script locally (bash + tar, as on the guest) twice, the source changing between."""
    src, dest = tmp_path / "src", tmp_path / "dest"
    (src / "services" / "auth").mkdir(parents=True)
    (src / "services" / "auth" / "index.ts").write_text("v1")
    (src / "services" / "auth" / "old.ts").write_text("gone soon")
    (src / "package.json").write_text("{}")

    def ship() -> None:
        script, payload, _ = put_tree_payload(src, str(dest), ("node_modules", "dist"), owner="root",
                                              group="root")
        proc = subprocess.run(["bash", "-c", script], input=payload, capture_output=True, check=False)
        assert proc.returncode == 0, proc.stderr.decode()

    ship()
    (dest / ".env").write_text("SECRET=1")  # written by another step, beside the tree
    (dest / "services" / "auth" / "node_modules").mkdir()
    (dest / "services" / "auth" / "node_modules" / "dep.js").write_text("installed")
    (src / "services" / "auth" / "old.ts").unlink()
    (src / "services" / "auth" / "index.ts").write_text("v2")
    ship()
    assert (dest / "services" / "auth" / "index.ts").read_text() == "v2"
    assert not (dest / "services" / "auth" / "old.ts").exists()
    assert (dest / ".env").read_text() == "SECRET=1"
    assert (dest / "services" / "auth" / "node_modules" / "dep.js").exists()
    assert (dest / "package.json").exists()


def test_forget_host_drops_only_that_host(tmp_path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True)
    pub = " ".join((tmp_path / "k.pub").read_text().split()[:2])
    known = tmp_path / "known_hosts"
    known.write_text(f"10.0.20.100 {pub}\n10.0.20.101 {pub}\n")
    forget_host(known, "10.0.20.100")
    assert known.read_text().split() == ["10.0.20.101", *pub.split()]
    forget_host(tmp_path / "absent", "10.0.20.100")  # no file: nothing to do
