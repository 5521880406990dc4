"""Facts: the gather script is valid, read-only and secret-free; the parser reads recorded outputs."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest

from psa_provision import facts, phases
from psa_provision.errors import GuestError
from psa_provision.packaged import PHASES_DIR
from psa_provision.services.app import facts as app_facts
from psa_provision.services.parse import seconds
from psa_provision.services.postgresql import component as postgresql
from psa_provision.services.postgresql import facts as postgresql_facts

CASES = Path(__file__).parent / "cases" / "facts"
PG_TEST_PASSWORD = "Abc123xyzPASSWORDforTEST0123456789"


@pytest.fixture(scope="module")
def spec() -> phases.ContainerSpec:
    return phases.load_phase("phase0", PHASES_DIR).containers[0]


def test_gather_script_is_valid_bash_and_read_only(spec: phases.ContainerSpec, tmp_path: Path) -> None:
    script = facts.gather_script(spec)
    (tmp_path / "g.sh").write_text(script)
    subprocess.run(["bash", "-n", str(tmp_path / "g.sh")], check=True)
    for word in ("apt-get", "systemctl start", "systemctl restart", " rm ", "pm2 start", "> /etc"):
        assert word not in script
    assert "/opt/psa-platform/.env" in script and "is_secret" in script


def test_fresh_template_recording(spec: phases.ContainerSpec) -> None:
    f = facts.parse_guest_facts((CASES / "fresh_debian12_template.json").read_text())
    assert (f.os_id, f.os_version) == ("debian", "12")
    assert {"openssh-server", "curl", "ca-certificates"} <= set(f.packages)
    assert "postgresql-15" not in f.packages
    assert f.files == {} and f.postgres is None and f.rabbitmq is None and f.pm2 is None
    assert not any(s.active for s in f.services.values())
    assert "psa" not in f.users and f.bundle_checksum is None


def test_installed_recording() -> None:
    f = facts.parse_guest_facts((CASES / "installed_phase0.json").read_text())
    assert f.hostname == "psa-all-in-one"
    assert "postgresql-15" in f.packages and "rabbitmq-server" not in f.packages  # `rc` = removed
    conf = f.files["/etc/postgresql/15/main/conf.d/psa.conf"]
    assert (conf.mode, conf.owner, conf.group) == (0o644, "postgres", "postgres")
    assert conf.content is not None and "listen_addresses" in conf.content
    assert f.files["/opt/psa-platform/.env"].content is None  # secret-bearing: checksum only
    assert f.files["/opt/psa-platform/.env"].mode == 0o600
    assert f.service_ok("postgresql")
    assert not f.service_ok("redis-server") and not f.service_ok("elasticsearch")
    assert f.dirs["/opt/psa-platform/backups/elasticsearch"].owner == "elasticsearch"
    assert "pm2" in f.npm_globals and "psa" in f.users
    assert f.postgres is not None
    assert f.postgres.databases["psa_platform"] == "psa_app"
    assert {"uuid-ossp", "pg_trgm", "btree_gin", "pgcrypto"} <= f.postgres.extensions["psa_platform"]
    assert f.postgres.default_acls["psa_platform"] == frozenset({"r", "S"})
    assert f.rabbitmq is not None
    assert f.rabbitmq.users == {"admin": frozenset({"administrator"}), "guest": frozenset({"administrator"}),
                                "psa_app": frozenset()}
    assert f.rabbitmq.permissions[("/", "psa_app")] == (".*", ".*", "^$")
    assert {a.name: (a.status, a.instances) for a in f.pm2 or []} == {
        "tickets": ("online", 4), "crm": ("errored", 2)}
    assert f.bundle_checksum == "ab" * 32


def test_real_scram_verifier_checks_the_password() -> None:
    pg = facts.parse_guest_facts((CASES / "installed_phase0.json").read_text()).postgres
    assert pg is not None
    verifier = pg.roles["psa_app"].password_verifier
    assert verifier.startswith("SCRAM-SHA-256$4096:")
    assert postgresql.scram_matches(PG_TEST_PASSWORD, verifier)
    assert not postgresql.scram_matches(PG_TEST_PASSWORD + "x", verifier)
    assert not postgresql.scram_matches(PG_TEST_PASSWORD, "md5abcdef")
    assert not postgresql.scram_matches(PG_TEST_PASSWORD, "")


@pytest.mark.parametrize("stdout", ["", "bash: line 1: syntax error", '{"version": 99}', "[1, 2]"])
def test_unexpected_output_is_guest_error(stdout: str) -> None:
    with pytest.raises(GuestError):
        facts.parse_guest_facts(stdout)


def test_last_line_is_the_document() -> None:
    doc = json.loads((CASES / "fresh_debian12_template.json").read_text())
    f = facts.parse_guest_facts("motd noise\n" + json.dumps(doc) + "\n")
    assert f.os_id == "debian"


def test_converged_sandbox_recording_matches_what_the_plan_writes(spec: phases.ContainerSpec) -> None:
    """Real facts of container 200 after `up phase0`: every planned file has the planned mode and owner,
    every service runs, every app is online with its instance count."""
    from test_planner import make_ctx

    from psa_provision import planner
    from psa_provision.changes import PutFile

    f = facts.parse_guest_facts((CASES / "converged_phase0_sandbox.json").read_text())
    fresh = planner.plan_guest(make_ctx(), facts.GuestFacts()).changes
    for c in fresh:
        if isinstance(c, PutFile):
            have = f.files[c.path]
            assert (have.mode, have.owner, have.group) == (c.mode, c.owner, c.group), c.path
    env = f.files["/opt/psa-platform/.env"].content or ""
    secret_lines = [line for line in env.splitlines() if "PASSWORD=" in line or "SECRET=" in line]
    assert len(secret_lines) >= 4 and all(line.endswith("=***") for line in secret_lines), secret_lines
    assert "requirepass ***" in (f.files["/etc/redis/redis.conf"].content or "")
    assert all(s.active and s.enabled and s.since > 1.7e9 for s in f.services.values()), f.services
    assert f.pm2_saved == {a.name: a.instances for a in f.pm2 or []}
    want = {n: s.instances for n, s in phases.load_phase("phase0", PHASES_DIR).services.items()}
    assert {a.name: a.instances for a in f.pm2 or [] if a.status == "online"} == want
    assert f.rabbitmq is not None and "guest" not in f.rabbitmq.users
    assert f.npm_globals >= {"npm", "pm2"}


def test_times_keep_their_microseconds() -> None:
    """A config written in the second its unit started must still read as newer than the start."""
    assert seconds("1795775444.301312") == pytest.approx(1795775444.301312)
    assert seconds("1795775444") == 1795775444.0  # older recordings: whole seconds
    assert seconds("n/a") == 0.0 and seconds("-5") == 0.0
    services = facts._services(
        "redis-server\nelasticsearch\nnginx\n",
        "ActiveState=active\nUnitFileState=enabled\nActiveEnterTimestamp=Fri 2026-11-27 12:32:57.835883 UTC\n"
        "\nUnitFileState=enabled\nActiveState=failed\n"
        "ActiveEnterTimestamp=Fri 2026-11-27 12:30:00.000001 UTC\n"
        "\nActiveState=inactive\nUnitFileState=\nActiveEnterTimestamp=\n")
    assert services["redis-server"].since == pytest.approx(1795782777.835883)
    assert services["redis-server"].enabled and services["elasticsearch"].enabled
    assert services["elasticsearch"].since == 0.0  # not active: no start time
    assert services["nginx"] == facts.ServiceFact("nginx", False, False, 0.0, "inactive")  # no such unit
    assert services["elasticsearch"].state == "failed"  # systemd's ActiveState, as `systemctl show` gives it
    with pytest.raises(GuestError, match="described 1 units, asked about 2"):
        facts._services("a\nb\n", "ActiveState=active\n")
    doc = {"file_sums": base64.b64encode(("0" * 64 + "  /etc/redis/redis.conf\n").encode()).decode(),
           "file_stats": base64.b64encode(b"640 redis redis 1795775577.900001 /etc/redis/redis.conf\n")
           .decode(),
           "files": [{"path": "/etc/redis/redis.conf", "content": ""}]}
    assert facts._files(doc)["/etc/redis/redis.conf"].mtime == pytest.approx(1795775577.900001)
    doc["files"].append({"path": "/etc/cron.d/psa-backup", "content": ""})  # removed before sha256sum ran
    assert set(facts._files(doc)) == {"/etc/redis/redis.conf"}


def test_postgres_conf_load_time_is_read() -> None:
    pg = postgresql_facts.parse("setting\tport\t5432\nloaded\t1795775577.835883\n")
    assert pg.conf_loaded == pytest.approx(1795775577.835883) and pg.settings == {"port": "5432"}
    assert postgresql_facts.parse("setting\tport\t5432\n").conf_loaded == 0.0  # older guests: unknown


def test_pm2_saved_counts_the_processes_of_dump_pm2() -> None:
    doc = json.loads((CASES / "installed_phase0.json").read_text())

    def saved(pm2: object) -> dict[str, int] | None:
        doc["pm2"] = base64.b64encode(json.dumps(pm2).encode()).decode()
        return facts.parse_guest_facts(json.dumps(doc)).pm2_saved

    assert saved({"running": [], "saved": ["tickets", "tickets", "crm"]}) == {"tickets": 2, "crm": 1}
    assert saved({"running": [], "saved": []}) == {}  # no dump.pm2 (or an unreadable one)
    del doc["pm2"]
    assert facts.parse_guest_facts(json.dumps(doc)).pm2_saved is None  # PM2 not running: unknown



def test_pm2_apps_carry_the_start_of_their_oldest_process() -> None:
    apps, _ = app_facts.parse(json.dumps({"running": [
        {"name": "tickets", "status": "online", "started": 1795775577835},
        {"name": "tickets", "status": "online", "started": 1795775570000},
        {"name": "crm", "status": "online"}]}))
    by_name = {a.name: a for a in apps}
    assert by_name["tickets"].started == pytest.approx(1795775570.0) and by_name["tickets"].instances == 2
    assert by_name["crm"].started == 0.0  # unknown
