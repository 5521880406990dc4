"""rotate-secrets: which keys a component owns, that only those get new values, and how a replicated Redis
set (phase 3) moves to a new password: every step on every member before the next, checked against real
Redis 7 servers and Sentinels."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from psa_provision.commands.rotate import COMPONENTS, NOT_ROTATED, keys_for, new_values
from psa_provision.errors import InputError
from psa_provision.packaged import PHASES_DIR
from psa_provision.secrets import KEYS, NOT_SECRET, Secrets, generate
from psa_provision.sensitive import Sensitive
from psa_provision.services.redis import CONF, SENTINEL_CONF, SENTINEL_PORT
from psa_provision.services.redis import PORT as REDIS_PORT


def test_each_component_owns_its_keys_and_all_covers_every_secret() -> None:
    assert keys_for("redis") == ("redis.password",)
    assert keys_for("app") == ("app.jwt_secret", "app.admin_password")
    assert set(keys_for("all")) == set(KEYS) - NOT_SECRET - NOT_ROTATED
    assert set(COMPONENTS) == {"postgresql", "redis", "rabbitmq", "app"}


def test_unknown_component_is_refused_with_the_choices() -> None:
    with pytest.raises(InputError, match="unknown component 'redsi'") as info:
        keys_for("redsi")
    assert "postgresql, redis, rabbitmq, app, all" in (info.value.hint or "")


@pytest.mark.parametrize("component", [*COMPONENTS, "all"])
def test_only_the_components_values_change(component: str) -> None:
    current = Secrets(generate("ops@example.org"))
    rotated = new_values(current, keys_for(component))
    changed = {k for k in KEYS if rotated[k] != current.as_dict()[k]}
    assert changed == set(keys_for(component))
    assert rotated["app.admin_email"] == "ops@example.org"


# -- which PM2 apps a rotation reloads (services/app: APP_STORES, component.py) ----------------------

def test_store_variables_are_read_only_by_the_apps_using_that_store() -> None:
    from psa_provision.services.app import APP_STORES, env_readers

    apps = set(APP_STORES)
    assert env_readers("REDIS_PASSWORD", apps) == {"auth", "tickets"}
    assert env_readers("RABBITMQ_PASSWORD", apps) == {"tickets", "billing"}
    assert env_readers("ELASTICSEARCH_HOST", apps) == {"tickets", "reports"}
    assert env_readers("POSTGRES_PASSWORD", apps) == apps - {"api-gateway"}
    assert env_readers("APP_ADMIN_PASSWORD", apps) == {"auth"}
    assert env_readers("CRM_SERVICE_URL", apps) == {"api-gateway"}
    assert env_readers("JWT_SECRET", apps) == apps == env_readers("SOMETHING_NEW", apps)
    assert env_readers("REDIS_HOST", {"crm", "my-own-app"}) == {"my-own-app"}  # unknown app: reads all


def test_readers_per_app_container_phase0_and_phase1() -> None:

    from psa_provision.commands.rotate import readers
    from psa_provision.phases import load_phase

    phases = PHASES_DIR
    p0 = load_phase("phase0", phases)
    assert list(readers(p0, keys_for("redis")).values()) == [["auth", "tickets"]]
    assert list(readers(p0, keys_for("rabbitmq")).values()) == [["billing", "tickets"]]
    everything = sorted(p0.services)
    assert list(readers(p0, keys_for("app")).values()) == [everything]
    p1 = load_phase("phase1", phases)
    services = [a for a in everything if a != "api-gateway"]
    assert list(readers(p1, keys_for("postgresql")).values()) == [services]


# -- a replicated Redis set (phase 3): the steps of services/redis/passwords.py, in order ---------------

NEW = "N3wRedisPassw0rdN3wRedisPassw0rd"


class Recorder:
    """A connection that records what it is asked to run (script, stdin) and runs nothing."""

    def __init__(self, host: str, runs: list[tuple[str, str, str]]) -> None:
        self.host, self.runs = host, runs

    def run(self, script: str, *, stdin: Sensitive | None = None, **_: object) -> None:
        self.runs.append((self.host, script, stdin.reveal() if stdin is not None else ""))

    def close(self) -> None:
        pass


class Notes:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def note(self, text: str) -> None:
        self.lines.append(text)


def site_of(phase: str) -> SimpleNamespace:
    from psa_provision.inventory import load_inventory
    from psa_provision.packaged import SANDBOX_INVENTORY
    from psa_provision.phases import load_phase

    return SimpleNamespace(inventory=load_inventory(SANDBOX_INVENTORY), phase=load_phase(phase, PHASES_DIR),
                           secrets=Secrets({**generate(), "redis.password": NEW}))


def test_each_step_reaches_every_member_before_the_next_step_and_the_password_only_on_stdin(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from psa_provision.commands import rotate
    from psa_provision.services.redis import passwords

    runs: list[tuple[str, str, str]] = []
    monkeypatch.setattr(rotate, "ssh_connection", lambda inv, spec: Recorder(spec.hostname, runs))
    notes = Notes()
    rotate._redis_sets(site_of("phase3"), notes)  # type: ignore[arg-type]
    members = ["psa-redis-1", "psa-redis-2", "psa-redis-3"]
    steps = [script for _, script in passwords.ROTATION]
    assert [(h, next(i for i, s in enumerate(steps) if script.endswith(s))) for h, script, _ in runs] == [
        (h, i) for i in range(len(steps)) for h in members]
    assert all(stdin == NEW + "\n" and NEW not in script for _, script, stdin in runs)
    assert all(script.startswith("set -euo pipefail\n") for _, script, _ in runs)
    assert len(notes.lines) == len(runs)


def test_a_phase_without_a_replicated_set_runs_nothing_on_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    from psa_provision.commands import rotate

    runs: list[tuple[str, str, str]] = []
    monkeypatch.setattr(rotate, "ssh_connection", lambda inv, spec: Recorder(spec.hostname, runs))
    rotate._redis_sets(site_of("phase2"), Notes())  # type: ignore[arg-type]
    assert runs == []


# -- the same steps against real Redis 7 servers and Sentinels on loopback ----------------------------
# Three members (a primary, two replicas, a Sentinel each, quorum 2) as phase 3 has them; each member's
# scripts run locally with its own ports and files, systemctl played by a shell function.

OLD = "0ld\\pass$w0rd"  # a backslash: CONFIG REWRITE writes it escaped, the scripts read it back


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(port: int, password: str, *args: str) -> str:
    done = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), "--no-auth-warning", *args],
                          capture_output=True, text=True, check=False, timeout=10,
                          env={**os.environ, "REDISCLI_AUTH": password})
    return done.stdout.strip()


def _until(what: str, ok: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline, f"not within {timeout:.0f} s: {what}"
        time.sleep(0.1)


SYSTEMCTL = r'''systemctl() {  # is-active [-q] / stop / start / reset-failed UNIT: this member's processes
  local verb=$1; shift; [ "${1:-}" = -q ] && shift
  local pidf conf mode=""
  case $1 in
    redis-server) pidf=$D/redis.pid conf=$D/redis.conf ;;
    redis-sentinel) pidf=$D/sentinel.pid conf=$D/sentinel.conf mode=--sentinel ;;
    *) return 1 ;;
  esac
  case $verb in
    is-active) [ -s "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null ;;
    stop) local pid; pid=$(cat "$pidf"); kill "$pid"; while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done ;;
    start) redis-server "$conf" $mode ;;
    reset-failed) return 0 ;;
  esac
}
chown() { :; }
'''


@dataclass
class Member:
    d: Path
    port: int
    sentinel: int

    def local(self, script: str) -> str:
        """The script as this member runs it: its files, its ports, systemctl for its processes."""
        script = script.replace(SENTINEL_CONF, str(self.d / "sentinel.conf"))
        script = script.replace(CONF, str(self.d / "redis.conf"))
        script = re.sub(rf"\b{SENTINEL_PORT}\b", str(self.sentinel), script)
        script = re.sub(rf"\b{REDIS_PORT}\b", str(self.port), script)
        return f"D={self.d}\n{SYSTEMCTL}{script}"


class Local:
    """A connection to a member that runs the script here."""

    def __init__(self, member: Member) -> None:
        self.member = member

    def run(self, script: str, *, stdin: Sensitive | None = None, **_: object) -> None:
        done = subprocess.run(["bash", "-c", self.member.local(script)], capture_output=True, text=True,
                              input=stdin.reveal() if stdin else "", check=False, timeout=120)
        assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"

    def close(self) -> None:
        pass


@pytest.fixture
def redis_set(tmp_path: Path) -> Iterator[list[Member]]:
    members = [Member(tmp_path / f"m{i}", _free_port(), _free_port()) for i in range(3)]
    primary = members[0].port
    try:
        for m in members:
            m.d.mkdir()
            (m.d / "redis.conf").write_text(
                f"port {m.port}\nbind 127.0.0.1\ndir {m.d}\ndaemonize yes\npidfile {m.d}/redis.pid\n"
                f"logfile {m.d}/redis.log\nsave \"\"\nappendonly no\nrequirepass {OLD}\nmasterauth {OLD}\n"
                "min-replicas-to-write 1\nmin-replicas-max-lag 10\nreplica-announce-ip 127.0.0.1\n"
                + (f"replicaof 127.0.0.1 {primary}\n" if m.port != primary else ""))
            (m.d / "sentinel.conf").write_text(
                f"port {m.sentinel}\nbind 127.0.0.1\ndir {m.d}\ndaemonize yes\npidfile {m.d}/sentinel.pid\n"
                f"logfile {m.d}/sentinel.log\nrequirepass {OLD}\nsentinel announce-ip 127.0.0.1\n"
                f"sentinel monitor psa-redis 127.0.0.1 {primary} 2\nsentinel auth-pass psa-redis {OLD}\n"
                "sentinel down-after-milliseconds psa-redis 5000\n"
                "sentinel failover-timeout psa-redis 60000\n")
            subprocess.run(["redis-server", str(m.d / "redis.conf")], check=True, timeout=10)
        for m in members:
            subprocess.run(["redis-server", str(m.d / "sentinel.conf"), "--sentinel"], check=True, timeout=10)
        for m in members:
            _until("every Sentinel at quorum", lambda m=m: _cli(m.sentinel, OLD, "SENTINEL", "ckquorum",
                                                                "psa-redis").startswith("OK 3 usable"))
        yield members
    finally:
        for pidfile in tmp_path.glob("m*/*.pid"):
            with contextlib.suppress(ValueError, ProcessLookupError):
                os.kill(int(pidfile.read_text().strip()), signal.SIGKILL)


def _role(port: int, password: str) -> dict[str, str]:
    text = _cli(port, password, "INFO", "replication")
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_a_real_set_rotates_live_keeps_sentinels_state_and_fails_over_with_the_new_password(
        redis_set: list[Member], monkeypatch: pytest.MonkeyPatch) -> None:
    from psa_provision.commands import rotate
    from psa_provision.services.redis import passwords

    members = redis_set
    myids = [re.findall(r"(?m)^sentinel myid \S+$", (m.d / "sentinel.conf").read_text()) for m in members]
    by_host = dict(zip(["psa-redis-1", "psa-redis-2", "psa-redis-3"], members, strict=True))
    monkeypatch.setattr(rotate, "ssh_connection", lambda inv, spec: Local(by_host[spec.hostname]))
    rotate._redis_sets(site_of("phase3"), Notes())  # type: ignore[arg-type]

    for m, myid in zip(members, myids, strict=True):
        for port in (m.port, m.sentinel):
            assert _cli(port, OLD, "PING").startswith("NOAUTH"), f"{port} still takes the old password"
            assert _cli(port, NEW, "PING") == "PONG"
        conf = (m.d / "sentinel.conf").read_text()
        assert myid and re.findall(r"(?m)^sentinel myid \S+$", conf) == myid, "the Sentinel's own id kept"
        assert "known-sentinel psa-redis" in conf, "what it learned of the other Sentinels kept"
        probe = passwords.CONF_VALUE + passwords.probe()
        for path in (CONF, SENTINEL_CONF):
            probe = probe.replace(path, str(m.d / path.rsplit("/", 1)[1]))
        digests = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True).stdout
        assert passwords.parse(digests) == dict.fromkeys(passwords.HELD, passwords.digest(NEW))
    assert [_role(m.port, NEW).get("master_link_status") for m in members[1:]] == ["up", "up"]
    for m in members:
        _until("every Sentinel at quorum again", lambda m=m: _cli(m.sentinel, NEW, "SENTINEL", "ckquorum",
                                                                  "psa-redis").startswith("OK 3 usable"))

    # a failover needs the Sentinels' auth-pass (REPLICAOF on each server) and the replicas' masterauth
    assert _cli(members[1].sentinel, NEW, "SENTINEL", "failover", "psa-redis") == "OK"
    _until("a replica promoted", lambda: _cli(members[0].sentinel, NEW, "SENTINEL", "get-master-addr-by-name",
                                              "psa-redis").split()[-1:] != [str(members[0].port)])
    new_primary = int(_cli(members[0].sentinel, NEW, "SENTINEL", "get-master-addr-by-name",
                           "psa-redis").split()[-1])
    # the replica left follows it: a new connection, authenticated with the masterauth set live (the old
    # primary is converted the same way, once a Sentinel's next INFO finds it: up to 10 s more)
    (other,) = [m for m in members[1:] if m.port != new_primary]
    _until(f"{other.port} follows {new_primary}", lambda: (
        _role(other.port, NEW).get("master_port"), _role(other.port, NEW).get("master_link_status"))
        == (str(new_primary), "up"))
