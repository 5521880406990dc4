"""apply.py: order, counting, stop at the first failure with host/step/output, retries.

The guest side is a recording stand-in for ssh.Connection (real SSH runs in tests/e2e); these
tests are about what apply asks for and how it reacts to answers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from psa_provision.apply import apply
from psa_provision.changes import Command, Noop, Package, Plan, PutFile, Sensitive, Service
from psa_provision.errors import GuestError
from psa_provision.journal import Journal
from psa_provision.ssh import Connection, Result, wire_bytes


@dataclass
class Guest:
    """Answers run() from a list of (substring, Result) rules; records every call."""

    rules: list[tuple[str, Result]] = field(default_factory=list)
    calls: list[tuple[str, Any]] = field(default_factory=list)

    def run(self, script: str, *, stdin: Sensitive | str | None = None, user: str = "root",
            check: bool = True, cwd: str | None = None, **_: Any) -> Result:
        sent = stdin.reveal() if isinstance(stdin, Sensitive) else stdin  # what goes onto the channel
        self.calls.append(("run", {"script": script, "stdin": sent, "user": user, "cwd": cwd}))
        for i, (needle, result) in enumerate(self.rules):
            if needle in script:
                if result.exit_code != 0:
                    self.rules.pop(i)  # a failure answers once
                if check and not result.ok:
                    raise GuestError(f"`{script.splitlines()[0]}` exited {result.exit_code}\n{result.tail()}")
                return result
        return Result("", "", 0)

    def put(self, path: str, content: Sensitive | bytes, **kw: Any) -> None:
        self.calls.append(("put", {"path": path, "content": wire_bytes(content), **kw}))

    def scripts(self) -> list[str]:
        return [c[1]["script"] for c in self.calls if c[0] == "run"]


def conns(guest: Guest) -> dict[str, Connection]:
    return {"ct": cast(Connection, guest)}


def test_runs_in_order_and_counts(tmp_path: Any) -> None:
    guest = Guest()
    plan = Plan([
        Noop("ct", "redis", "redis.conf up to date"),
        PutFile("ct", "app", "write .env", path="/opt/psa-platform/.env", content=Sensitive("A=1\n"),
                mode=0o600, owner="psa", group="psa"),
        Command("ct", "postgresql", "create role", script="read -r pw; echo ok", stdin=Sensitive("s3cret")),
        Service("ct", "redis", "restart redis", name="redis-server", action="restart"),
    ])
    journal = Journal(tmp_path / "j.jsonl")
    summary = apply(plan, conns(guest), None, journal)
    assert (summary.changed, summary.unchanged, summary.failed) == (3, 1, 0)
    assert summary.line == "3 changed, 1 unchanged, 0 failed"
    assert guest.calls[0] == ("put", {"path": "/opt/psa-platform/.env", "content": b"A=1\n", "mode": 0o600,
                                      "owner": "psa", "group": "psa",
                                      "backup": "/var/lib/psa-provision/previous/opt%psa-platform%.env"})
    assert guest.calls[1][1]["stdin"] == "s3cret"
    assert guest.scripts()[1] == "systemctl restart redis-server"
    assert "s3cret" not in journal.path.read_text()
    assert [e["state"] for e in journal.entries()] == ["done", "done", "done"]


def test_stops_at_first_failure_naming_host_and_step() -> None:
    guest = Guest([("exit 3", Result("", "disk full", 3))])
    plan = Plan([Command("ct", "base", "first", script="exit 3"),
                 Command("ct", "base", "never runs", script="echo later")])
    summary = apply(plan, conns(guest), None)
    assert summary.failed == 1 and summary.changed == 0
    assert summary.error is not None
    assert summary.error.message.startswith("ct [base] first: ")
    assert "disk full" in summary.error.message
    assert guest.scripts() == ["exit 3"]


def test_failing_service_shows_its_journal() -> None:
    guest = Guest([("systemctl restart", Result("", "Job failed", 1)),
                   ("journalctl", Result("redis: bad directive line 7\n", "", 0))])
    summary = apply(Plan([Service("ct", "redis", "restart redis", name="redis-server", action="restart")]),
                    conns(guest), None)
    assert summary.error is not None
    assert "journalctl -u redis-server -n 20" in summary.error.message
    assert "bad directive line 7" in summary.error.message


def test_a_refused_config_is_put_back_and_the_service_restarted() -> None:
    guest = Guest([("systemctl restart redis-server", Result("", "Job failed", 1)),
                   ("journalctl", Result("Bad directive or wrong number of arguments\n", "", 0)),
                   ("restored", Result("restored /etc/redis/redis.conf\nstate active\n", "", 0))])
    plan = Plan([PutFile("ct", "redis", "redis.conf", path="/etc/redis/redis.conf",
                         content=Sensitive("maxmemory x\n")),
                 PutFile("ct", "postgresql", "pg conf", path="/etc/postgresql/15/main/postgresql.conf"),
                 Service("ct", "redis", "restart redis", name="redis-server", action="restart")])
    summary = apply(plan, conns(guest), None)
    assert summary.error is not None
    text = summary.error.message
    assert "Bad directive" in text
    assert text.endswith("restored the previous /etc/redis/redis.conf; redis-server is active again")
    restore = guest.scripts()[-1]
    assert "/var/lib/psa-provision/previous/etc%redis%redis.conf|/etc/redis/redis.conf" in restore
    assert "postgresql.conf" not in restore  # only the failing service's component is put back


def test_service_that_dies_after_start_is_a_failure() -> None:
    guest = Guest([("systemctl is-active", Result("failed\n", "", 0))])
    summary = apply(Plan([Service("ct", "redis", "start", name="redis-server", action="enable-now")]),
                    conns(guest), None)
    assert summary.error is not None and "redis-server is failed" in summary.error.message


def test_apt_retries_once_on_a_dpkg_lock() -> None:
    guest = Guest([("apt-get install", Result("", "E: Could not get lock /var/lib/dpkg/lock-frontend", 100))])
    plan = Plan([Package("ct", "redis", "install redis", names=("redis-server",))])
    summary = apply(plan, conns(guest), None)
    assert summary.error is None and summary.changed == 1
    scripts = guest.scripts()
    assert len(scripts) == 2 and "apt-get update" in scripts[1]
    assert all("DEBIAN_FRONTEND=noninteractive" in s for s in scripts)


def test_pm2_service_runs_as_the_app_user() -> None:
    guest = Guest()
    apply(Plan([Service("ct", "app", "reload tickets", name="pm2:tickets", action="reload")]), conns(guest),
          None, pm2_user="psa", pm2_home="/home/psa")
    call = guest.calls[0][1]
    assert call["user"] == "psa" and call["script"].endswith("pm2 reload tickets")

