"""PM2's facts read from its own files (pm2.live_facts): only when exactly the wanted processes run, as
the daemon would list them; anything else is left to the daemon (the function prints nothing).

Real processes stand in for PM2's: a bash "daemon" whose `sleep` children are the apps, and a PM2 home
laid out as PM2 lays it out (pid files without a newline, dump.pm2 as `pm2 save` writes it)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from psa_provision.services.app import PM2_HOME, pm2
from psa_provision.services.app import facts as app_facts
from psa_provision.services.app.facts import Pm2App

APPS = {"api-gateway": 2, "auth-service": 1}


@dataclass
class Pm2Home:
    root: Path
    daemon: subprocess.Popen[bytes]
    children: list[int]

    def pid_file(self, name: str, pm_id: int, pid: int) -> Path:
        path = self.root / "pids" / f"{name}-{pm_id}.pid"
        path.write_text(str(pid))  # as PM2 writes it: no newline
        return path

    def dump(self, names: list[str], *, indent: int | None = 2) -> None:
        procs = [{"name": n, "pm_id": i, "env": {"name": "not-an-app", "PORT": "3000"}}
                 for i, n in enumerate(names)]
        (self.root / "dump.pm2").write_text(json.dumps(procs, indent=indent))

    def live(self, apps: dict[str, int]) -> str:
        script = pm2.live_facts(apps).replace(PM2_HOME, str(self.root)) + "pm2_live\n"
        return subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Pm2Home]:
    (tmp_path / "pids").mkdir()
    spawn = f"for i in 1 2 3; do sleep 60 & echo $! >> {tmp_path}/children; done; wait"
    daemon = subprocess.Popen(["bash", "-c", spawn])
    deadline = time.monotonic() + 10
    while len((tmp_path / "children").read_text().split() if (tmp_path / "children").exists() else []) < 3:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    children = [int(p) for p in (tmp_path / "children").read_text().split()]
    (tmp_path / "pm2.pid").write_text(str(daemon.pid))
    yield Pm2Home(tmp_path, daemon, children)
    for pid in children:
        os.kill(pid, 15)
    daemon.wait(timeout=10)


def _converged(home: Pm2Home) -> list[Path]:
    names = ["api-gateway", "api-gateway", "auth-service"]
    files = [home.pid_file(name, pm_id, home.children[pm_id]) for pm_id, name in enumerate(names)]
    home.dump(["api-gateway", "api-gateway", "auth-service"])
    return files


def test_the_wanted_processes_are_read_from_pm2s_files(home: Pm2Home) -> None:
    """Each process online, started when its pid file was written (to the microsecond), the apps that
    dump.pm2 restores at boot."""
    files = _converged(home)
    os.utime(files[1], (1_796_394_558.031471, 1_796_394_558.031471))
    apps, saved = app_facts.parse(home.live(APPS))
    want = [Pm2App("api-gateway", "online", 2, min(files[0].stat().st_mtime, 1_796_394_558.031471)),
            Pm2App("auth-service", "online", 1, files[2].stat().st_mtime)]
    got = sorted(apps, key=lambda a: a.name)
    assert [(a.name, a.status, a.instances) for a in got] == [(a.name, a.status, a.instances) for a in want]
    assert [a.started for a in got] == pytest.approx([a.started for a in want], abs=1e-6)
    assert saved == {"api-gateway": 2, "auth-service": 1}  # the env's own `name` is not an app


def test_no_dump_is_nothing_saved(home: Pm2Home) -> None:
    _converged(home)
    (home.root / "dump.pm2").unlink()
    assert app_facts.parse(home.live(APPS))[1] == {}


@pytest.mark.parametrize("case", ["fewer", "more", "stopped", "stale", "not the daemon's", "other app",
                                  "compact dump", "no daemon pid"])
def test_anything_else_is_left_to_the_daemon(home: Pm2Home, case: str) -> None:
    """A stopped, errored or restarting process has no pid file: its app runs fewer than wanted."""
    files = _converged(home)
    apps = dict(APPS)
    if case == "fewer":
        apps["api-gateway"] = 3
    elif case == "more":
        apps["api-gateway"] = 1
    elif case == "stopped":
        files[2].unlink()
    elif case == "stale":  # its process is gone, the file was left
        home.pid_file("auth-service", 3, 2 ** 22 + 7)
    elif case == "not the daemon's":
        home.pid_file("auth-service", 3, os.getpid())
    elif case == "other app":
        apps = {"api-gateway": 2}
    elif case == "compact dump":  # not what `pm2 save` writes: the daemon's reader reads it
        home.dump(["api-gateway", "api-gateway", "auth-service"], indent=None)
    elif case == "no daemon pid":
        (home.root / "pm2.pid").write_text("")
    assert home.live(apps) == ""


def test_the_facts_script_asks_the_daemon_only_without_the_wanted_processes() -> None:
    """Told the processes, the script reads them first and starts the Node.js only when that printed
    nothing; not told (no phase at hand), it asks the daemon as before."""
    told = app_facts.start(APPS)
    assert "pm2_live() {" in told and told.index("pm2_live=$(pm2_live)") < told.index("node -e")
    assert 'if [ -z "$pm2_live" ]' in told
    assert "pm2_live()" not in app_facts.start({}) and "node -e" in app_facts.start({})
