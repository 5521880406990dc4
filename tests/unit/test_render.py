"""Rendering: key lines of every template (golden checks), StrictUndefined errors name file:line,
secrets present in the content but masked in diffs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from psa_provision import inventory, phases, render
from psa_provision.changes import MASK, PutFile
from psa_provision.errors import RenderError
from psa_provision.facts import GuestFacts
from psa_provision.packaged import PHASES_DIR, SANDBOX_INVENTORY
from psa_provision.secrets import Secrets, generate
from psa_provision.services.app import component as app
from psa_provision.services.context import HostContext
from psa_provision.services.elasticsearch import component as elasticsearch
from psa_provision.services.postgresql import component as postgresql
from psa_provision.services.redis import component as redis
from psa_provision.services.scripts import component as scripts


@pytest.fixture(scope="module")
def ctx() -> HostContext:
    inv = inventory.load_inventory(SANDBOX_INVENTORY)
    phase = phases.load_phase("phase0", PHASES_DIR)
    return HostContext(inv, phase, phase.containers[0], Secrets(generate()))


def lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()]


def test_postgresql_seed_values_at_64_gib(ctx: HostContext) -> None:
    conf = lines(postgresql.conf_content(ctx))
    for want in ("listen_addresses = 'localhost'", "port = 5432", "max_connections = 200",
                 "shared_buffers = 4GB", "effective_cache_size = 12GB", "maintenance_work_mem = 1GB",
                 "work_mem = 20MB", "random_page_cost = 1.1", "effective_io_concurrency = 200",
                 "log_min_duration_statement = 1000", "password_encryption = scram-sha-256"):
        assert want in conf


def test_postgresql_derives_from_memory_and_obeys_overrides(ctx: HostContext) -> None:
    small = ctx.container.model_copy(update={"memory_mb": 16384})
    conf = lines(postgresql.conf_content(HostContext(ctx.inventory, ctx.phase, small, ctx.secrets)))
    assert "shared_buffers = 1GB" in conf and "effective_cache_size = 3GB" in conf
    assert "work_mem = 5MB" in conf
    tuning = ctx.inventory.tuning.model_copy(update={"postgresql": ctx.inventory.tuning.postgresql.model_copy(
        update={"shared_buffers": "6GB"})})
    inv = ctx.inventory.model_copy(update={"tuning": tuning})
    conf = lines(postgresql.conf_content(HostContext(inv, ctx.phase, ctx.container, ctx.secrets)))
    assert "shared_buffers = 6GB" in conf and "effective_cache_size = 12GB" in conf


def test_pg_hba_local_peer_and_scram_for_app(ctx: HostContext) -> None:
    text = postgresql.hba_content(ctx)
    hba = [" ".join(line.split()) for line in text.splitlines() if not line.startswith("#")]
    assert "local all postgres peer" in hba
    assert "host psa_platform psa_app 127.0.0.1/32 scram-sha-256" in hba
    assert "host psa_platform psa_app ::1/128 scram-sha-256" in hba
    assert not any(" trust" in line or "md5" in line for line in hba)


def test_redis_conf_for_debian_unit(ctx: HostContext) -> None:
    conf = lines(redis.content(ctx))
    pw = ctx.secrets.get("redis.password").value
    for want in ("bind 127.0.0.1", "supervised systemd", "daemonize no", "dir /var/lib/redis",
                 f"requirepass {pw}", "maxmemory 2gb", "maxmemory-policy allkeys-lru", "appendonly yes",
                 "save 900 1", "save 300 10", "save 60 10000", 'rename-command FLUSHALL ""',
                 'rename-command FLUSHDB ""'):
        assert want in conf, want


def test_elasticsearch_yml_and_heap(ctx: HostContext) -> None:
    yml = lines(elasticsearch.conf_content(ctx))
    for want in ("cluster.name: psa-platform", "network.host: 127.0.0.1", "http.port: 9200",
                 "discovery.type: single-node", "xpack.security.enabled: false",
                 "path.repo: /opt/psa-platform/backups/elasticsearch"):
        assert want in yml
    heap = lines(elasticsearch.heap_content(ctx))
    assert "-Xms4g" in heap and "-Xmx4g" in heap
    huge = ctx.container.model_copy(update={"memory_mb": 1024 * 1024})
    assert elasticsearch.heap(HostContext(ctx.inventory, ctx.phase, huge, ctx.secrets)) == "31g"


def test_env_has_the_app_contract_keys(ctx: HostContext) -> None:
    env = dict(line.split("=", 1) for line in app.env_content(ctx).splitlines() if "=" in line and
               not line.startswith("#"))
    s = ctx.secrets
    assert env["POSTGRES_PASSWORD"] == s.get("postgresql.app_password").value
    assert env["REDIS_PASSWORD"] == s.get("redis.password").value
    assert env["RABBITMQ_PASSWORD"] == s.get("rabbitmq.app_password").value
    assert env["JWT_SECRET"] == s.get("app.jwt_secret").value
    assert env["APP_ADMIN_PASSWORD"] == s.get("app.admin_password").value
    for key, value in {"POSTGRES_HOST": "127.0.0.1", "POSTGRES_PORT": "5432", "POSTGRES_DB": "psa_platform",
                       "POSTGRES_USER": "psa_app", "REDIS_HOST": "127.0.0.1", "REDIS_PORT": "6379",
                       "RABBITMQ_HOST": "127.0.0.1", "RABBITMQ_PORT": "5672", "RABBITMQ_USER": "psa_app",
                       "RABBITMQ_VHOST": "/", "ELASTICSEARCH_HOST": "127.0.0.1", "ELASTICSEARCH_PORT": "9200",
                       "NODE_ENV": "production", "SERVICE_BIND": "127.0.0.1", "GATEWAY_BIND": "0.0.0.0",  # noqa: S104
                       "AUTH_SERVICE_URL": "http://127.0.0.1:3010",
                       "REPORTS_SERVICE_URL": "http://127.0.0.1:3070"}.items():
        assert env[key] == value, key
    assert len([k for k in env if k.endswith("_SERVICE_URL")]) == 7


def test_ecosystem_has_no_secret_and_parses(ctx: HostContext, tmp_path: Path) -> None:
    eco = app.ecosystem_content(ctx)
    assert not any(v in eco for v in ctx.secrets.values())
    assert "exec_mode: 'cluster'" in eco and "app('tickets', 3030, 4)," in eco
    node = subprocess.run(["which", "node"], capture_output=True, text=True, check=False).stdout.strip()
    if not node:
        pytest.skip("node not installed here")
    (tmp_path / ".env").write_text("A=1\nPORT=9\n")
    script = eco.replace("/opt/psa-platform/.env", str(tmp_path / ".env"))
    (tmp_path / "eco.js").write_text(script)
    out = subprocess.run([node, "-e", f"const c=require('{tmp_path}/eco.js');"
                          "const t=c.apps[3];console.log(c.apps.length, t.instances, t.env.A, t.env.PORT)"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["8", "4", "1", "3030"]


def test_scripts_are_valid_bash_and_keep_secrets_off_argv(ctx: HostContext, tmp_path: Path) -> None:
    changes = scripts.plan(ctx, GuestFacts())
    files = {c.path: c.content.reveal() for c in changes if isinstance(c, PutFile)}
    for path in ("/usr/local/bin/health-check.sh", "/usr/local/bin/backup-psa.sh"):
        f = tmp_path / Path(path).name
        f.write_text(files[path])
        subprocess.run(["bash", "-n", str(f)], check=True)
        assert "redis-cli -a" not in files[path] and "REDISCLI_AUTH" in files[path]
    assert "0 2 * * * root /usr/local/bin/backup-psa.sh" in files["/etc/cron.d/psa-backup"]
    backup = files["/usr/local/bin/backup-psa.sh"]
    assert "_snapshot/psa_backup" in backup
    # Debian's rabbitmqctl runs as rabbitmq: it writes the definitions to stdout, the root script to a file
    assert 'export_definitions - </dev/null > "$BACKUP_DIR/rabbitmq_$DATE.json"' in backup
    assert '"location":"/opt/psa-platform/backups/elasticsearch"' in backup


def test_missing_value_names_template_file_and_line() -> None:
    with pytest.raises(RenderError) as info:
        render.render("redis.conf.j2", bind="127.0.0.1", maxmemory="1gb")
    assert "redis.conf.j2:17:" in str(info.value) and "password" in str(info.value)


def test_unknown_template() -> None:
    with pytest.raises(RenderError, match="not found"):
        render.render("nope.j2")


def test_secret_in_content_masked_in_diff(ctx: HostContext) -> None:
    change = redis.plan(ctx, GuestFacts())
    put = next(c for c in change if isinstance(c, PutFile))
    pw = ctx.secrets.get("redis.password").value
    assert pw in put.content.reveal()
    assert pw not in put.diff and f"+requirepass {MASK}" in put.diff


def test_phase1_addresses_follow_the_phase_file() -> None:
    """Infrastructure on its own container listens on its private address for the app container only."""
    from test_planner import make_ctx

    pg = make_ctx("phase1", 100)
    assert "listen_addresses = '10.0.30.10,localhost'" in lines(postgresql.conf_content(pg))
    hba = [" ".join(line.split()) for line in postgresql.hba_content(pg).splitlines()]
    assert "host psa_platform psa_app 10.0.20.230/32 scram-sha-256" in hba
    assert "bind 10.0.30.20 127.0.0.1" in lines(redis.content(make_ctx("phase1", 110)))
    env = app.env_content(make_ctx("phase1", 230))
    for want in ("POSTGRES_HOST=10.0.30.10", "REDIS_HOST=10.0.30.20", "RABBITMQ_HOST=10.0.30.30",
                 "ELASTICSEARCH_HOST=10.0.30.40", "SERVICE_BIND=127.0.0.1", "AUTH_SERVICE_URL=http://127.0.0.1:3010"):
        assert want in env.splitlines(), want
    env2 = app.env_content(make_ctx("phase2", 120)).splitlines()
    assert "TICKETS_SERVICE_URL=http://10.0.20.140:3030" in env2 and "SERVICE_BIND=10.0.20.120" in env2
