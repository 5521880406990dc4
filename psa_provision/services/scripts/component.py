"""Operations scripts from the seed: health-check.sh, backup-psa.sh and its daily cron entry (02:00)."""

from __future__ import annotations

from ...changes import Change
from ...facts import GuestFacts
from ...render import render
from ..app import APP_DIR, APP_USER, ECOSYSTEM_FILE, ENV_FILE
from ..common import put_file
from ..context import HostContext
from ..elasticsearch import BACKUP_DIR as ES_BACKUP_DIR
from ..postgresql import CONF_DIR as PG_CONF_DIR
from ..redis import CONF as REDIS_CONF
from . import BACKUP, COMPONENT, CRON, HEALTH, TEMPLATES


def _vars(ctx: HostContext) -> dict[str, object]:
    comps = set(ctx.container.components)
    checks = {c: c in comps for c in ("postgresql", "redis", "rabbitmq", "elasticsearch", "app")}
    config = [ENV_FILE, ECOSYSTEM_FILE] if checks["app"] else []
    if checks["postgresql"]:
        config += [f"{PG_CONF_DIR}/{name}" for name in ("postgresql.conf", "conf.d/psa.conf", "pg_hba.conf")]
    if checks["redis"]:
        config.append(REDIS_CONF)
    return {"checks": checks, "services": ctx.services, "env_file": ENV_FILE, "app_user": APP_USER,
            "app_dir": APP_DIR, "backup_dir": f"{APP_DIR}/backups", "es_repo_path": ES_BACKUP_DIR,
            "elasticsearch_host": "127.0.0.1", "config_files": config}


def plan(ctx: HostContext, facts: GuestFacts) -> list[Change]:
    v = _vars(ctx)
    return [
        put_file(ctx, facts, COMPONENT, HEALTH, render(TEMPLATES[HEALTH], **v), mode=0o755),
        put_file(ctx, facts, COMPONENT, BACKUP, render(TEMPLATES[BACKUP], **v), mode=0o750),
        put_file(ctx, facts, COMPONENT, CRON, render(TEMPLATES[CRON])),
    ]
