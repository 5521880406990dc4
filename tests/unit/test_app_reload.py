"""`up` after a .env change reloads only the PM2 apps that read a changed variable (rotate-secrets)."""

from __future__ import annotations

import dataclasses

import pytest
from test_planner import SECRETS, actions, converged, make_ctx

from psa_provision import planner
from psa_provision.changes import Command, sha256
from psa_provision.facts import FileFact, GuestFacts
from psa_provision.secrets import Secrets
from psa_provision.services import app as app_service
from psa_provision.services.app import component as app
from psa_provision.services.context import HostContext


def stamped(ctx: HostContext) -> GuestFacts:
    """Converged facts plus the stamp `pm2 start` wrote: the apps run with the current .env."""
    facts = converged(ctx)
    start = planner.plan_guest(ctx, GuestFacts()).changes
    script = next(c.script for c in start if isinstance(c, Command) and "pm2 start" in c.script)
    body = script.split("<<'PSA_ENV_STAMP'\n", 1)[1].split("PSA_ENV_STAMP\n", 1)[0]
    stamp = FileFact(app_service.ENV_STAMP, "e" * 64, 0o600, "psa", "psa", body)
    return dataclasses.replace(facts, files={**facts.files, app_service.ENV_STAMP: stamp})


def rotated(ctx: HostContext, **values: str) -> HostContext:
    return dataclasses.replace(ctx, secrets=Secrets(dict(SECRETS, **values)))


def pm2_command(changes: list[object]) -> Command:
    found = [c for c in changes if isinstance(c, Command) and c.summary.startswith("pm2")]
    assert len(found) == 1, found
    return found[0]


def test_the_stamp_holds_no_value_and_a_converged_guest_stays_noop() -> None:
    ctx = make_ctx()
    facts = stamped(ctx)
    stamp = facts.files[app_service.ENV_STAMP].content or ""
    assert "REDIS_PASSWORD " in stamp and "JWT_SECRET " in stamp
    assert not any(v in stamp for k, v in SECRETS.items() if k != "app.admin_email")
    assert actions(planner.plan_guest(ctx, facts).changes) == []


@pytest.mark.parametrize(("key", "reloaded"), [
    ("redis.password", "auth,tickets"),
    ("rabbitmq.app_password", "billing,tickets"),
    ("postgresql.app_password", "assets,auth,billing,crm,projects,reports,tickets"),
])
def test_a_rotated_store_password_reloads_only_that_stores_apps(key: str, reloaded: str) -> None:
    ctx = make_ctx()
    changes = planner.plan_guest(rotated(ctx, **{key: "N3w-" + "x" * 28}), stamped(ctx)).actions
    cmd = pm2_command(changes)
    variable = app_service.SECRET_ENV[key]
    assert f"--only {reloaded} --update-env" in cmd.script
    assert cmd.summary == f"pm2: reload {reloaded.replace(',', ', ')} ({variable} changed)"
    assert "api-gateway" not in cmd.script and app_service.ENV_STAMP in cmd.script
    assert cmd.script.index("pm2 reload") < cmd.script.index(app_service.ENV_STAMP)  # stamp after the reload


def test_the_jwt_secret_reloads_every_app() -> None:
    ctx = make_ctx()
    cmd = pm2_command(planner.plan_guest(rotated(ctx, **{"app.jwt_secret": "j" * 64}), stamped(ctx)).actions)
    assert "--only" not in cmd.script
    assert "reload /opt/psa-platform/ecosystem.config.js --update-env" in cmd.script
    assert cmd.summary == "pm2: JWT_SECRET changed"


def test_an_interrupted_reload_is_redone_though_env_is_already_written() -> None:
    """.env on the guest already new, the apps (stamp) still on the old value: reload them, no file change."""
    ctx = make_ctx()
    new = rotated(ctx, **{"redis.password": "R" * 32})
    facts = stamped(ctx)
    env_new = app.env_content(new)
    env_fact = dataclasses.replace(facts.files[app_service.ENV_FILE], sha256=sha256(env_new))
    facts = dataclasses.replace(facts, files={**facts.files, app_service.ENV_FILE: env_fact})
    changes = [c for c in planner.plan_guest(new, facts).actions if c.component == "app"]
    assert actions(changes) == ["Command app: pm2: reload auth, tickets (REDIS_PASSWORD changed)"]


def test_without_a_stamp_a_changed_env_reloads_every_app() -> None:
    """A guest provisioned before the stamp: nothing says what the apps run with, so all reload."""
    ctx = make_ctx()
    new = rotated(ctx, **{"redis.password": "R" * 32})
    cmd = pm2_command(planner.plan_guest(new, converged(ctx)).actions)
    assert "--only" not in cmd.script and app_service.ENV_STAMP in cmd.script


def test_code_change_reloads_every_app_and_an_offline_app_joins_a_partial_reload() -> None:
    ctx = make_ctx()
    facts = stamped(ctx)
    cmd = pm2_command(planner.plan_guest(ctx, dataclasses.replace(facts, bundle_checksum="c" * 64)).actions)
    assert "--only" not in cmd.script
    pm2 = [dataclasses.replace(a, status="errored") if a.name == "crm" else a for a in facts.pm2 or []]
    new = rotated(ctx, **{"redis.password": "R" * 32})
    cmd = pm2_command(planner.plan_guest(new, dataclasses.replace(facts, pm2=pm2)).actions)
    assert "--only auth,crm,tickets --update-env" in cmd.script
    assert cmd.summary == "pm2: reload auth, tickets (REDIS_PASSWORD changed); not online: crm"


def test_apps_running_but_not_saved_get_saved() -> None:
    """A run killed between `pm2 start` and `pm2 save` leaves the apps running and dump.pm2 without
    them: a reboot would resurrect nothing. The next plan saves, and only that."""
    ctx = make_ctx()
    facts = stamped(ctx)
    running = {a.name: a.instances for a in facts.pm2 or []}
    assert running
    assert actions(planner.plan_guest(ctx, dataclasses.replace(facts, pm2_saved=running)).changes) == []
    for saved in ({}, dict(running, tickets=1)):  # no dump; a dump from before a scale
        changes = planner.plan_guest(ctx, dataclasses.replace(facts, pm2_saved=saved)).actions
        assert [c.summary for c in changes] == [
            "pm2 save (the process list restored at boot differs from the running one)"]
        assert isinstance(changes[0], Command) and changes[0].script.endswith("pm2 save\n")


def test_the_record_of_the_env_is_written_before_pm2_start() -> None:
    """Apps a killed `pm2 start` did start were loaded with this .env: the record must already say so,
    or a later rotation cannot tell which apps read the rotated variable (CI, 2026-11-27)."""
    start = planner.plan_guest(make_ctx(), GuestFacts()).changes
    script = next(c.script for c in start if isinstance(c, Command) and "pm2 start" in c.script)
    assert script.index(app_service.ENV_STAMP) < script.index("pm2 start") < script.index("pm2 save")


def test_apps_started_before_the_last_build_are_reloaded() -> None:
    """A run killed between `npm run build` (which writes the bundle stamp) and the PM2 reload leaves
    the new code built and the apps on the old one: apps started before the stamp are reloaded."""
    ctx = make_ctx()
    facts = stamped(ctx)
    built = FileFact(app_service.BUNDLE_STAMP, "b" * 64, 0o644, "psa", "psa", "", mtime=1_000.5)
    apps = [dataclasses.replace(a, started=1_001.0) for a in facts.pm2 or []]
    after = dataclasses.replace(facts, pm2=apps, files={**facts.files, app_service.BUNDLE_STAMP: built})
    assert actions(planner.plan_guest(ctx, after).changes) == []
    apps[0] = dataclasses.replace(apps[0], started=1_000.2)  # one app kept running through the build
    before = dataclasses.replace(after, pm2=apps)
    command = pm2_command(planner.plan_guest(ctx, before).actions)
    assert command.summary == f"pm2: reload {apps[0].name} (code built after they started)"
    assert f"--only {apps[0].name} --update-env" in command.script
