"""Data-driven component cases: tests/unit/cases/components/<case>.yml = converged facts + a
modification -> the exact list of non-Noop changes (kind, component, summary) the plan must hold."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_planner import actions, converged, make_ctx, scram_verifier

from psa_provision import planner
from psa_provision.facts import GuestFacts, Pm2App, ServiceFact

CASES = sorted((Path(__file__).parent / "cases" / "components").glob("*.yml"))


def modify(facts: GuestFacts, m: dict[str, Any]) -> GuestFacts:
    """Apply one case's `modify` block to converged facts."""
    files = dict(facts.files)
    for path, content in (m.get("file_content") or {}).items():
        files[path] = dataclasses.replace(files[path], sha256="0" * 64, content=content)
    for path, mode in (m.get("file_mode") or {}).items():
        files[path] = dataclasses.replace(files[path], mode=int(str(mode), 8))
    for path in m.get("remove_files") or []:
        del files[path]
    dirs = {k: v for k, v in facts.dirs.items() if k not in (m.get("remove_dirs") or [])}
    packages = {k: v for k, v in facts.packages.items() if k not in (m.get("remove_packages") or [])}
    services = dict(facts.services)
    for name, (active, enabled) in (m.get("services") or {}).items():
        services[name] = ServiceFact(name, active, enabled)
    pg = facts.postgres
    if pg and "pg_password" in m:
        roles = dict(pg.roles, psa_app=dataclasses.replace(pg.roles["psa_app"],
                                                           password_verifier=scram_verifier(m["pg_password"])))
        pg = dataclasses.replace(pg, roles=roles)
    if pg and m.get("pg_drop_extensions"):
        exts = {db: e - set(m["pg_drop_extensions"]) for db, e in pg.extensions.items()}
        pg = dataclasses.replace(pg, extensions=exts)
    rabbit = facts.rabbitmq
    if rabbit and "rabbit_users" in m:
        users = dict(rabbit.users)
        for name, tags in m["rabbit_users"].items():
            if tags is None:
                users.pop(name, None)
            else:
                users[name] = frozenset(tags)
        perms = {k: v for k, v in rabbit.permissions.items() if k[1] in users}
        rabbit = dataclasses.replace(rabbit, users=users, permissions=perms)
    pm2 = facts.pm2
    if pm2 is not None and m.get("pm2"):
        pm2 = [Pm2App(a.name, *m["pm2"][a.name]) if a.name in m["pm2"] else a for a in pm2]
    if m.get("pm2_none"):
        pm2 = None
    return dataclasses.replace(
        facts, files=files, dirs=dirs, packages=packages, services=services, postgres=pg, rabbitmq=rabbit,
        pm2=pm2, users=facts.users - set(m.get("users_remove") or []),
        npm_globals=facts.npm_globals - set(m.get("npm_globals_remove") or []),
        bundle_checksum=m.get("bundle_checksum", facts.bundle_checksum))


@pytest.mark.parametrize("case", CASES, ids=[p.stem for p in CASES])
def test_component_case(case: Path) -> None:
    spec = yaml.safe_load(case.read_text())
    ctx = make_ctx(spec.get("phase", "phase0"), spec.get("vmid"), **(spec.get("tuning") or {}))
    facts = modify(converged(ctx), spec.get("modify") or {})
    got = actions(planner.plan_guest(ctx, facts).changes)
    assert got == spec["expect"], f"{case.name}: {spec['description']}"


@pytest.mark.parametrize(("component", "unit", "path"), [
    ("redis", "redis-server", "/etc/redis/redis.conf"),
    ("postgresql", "postgresql", "/etc/postgresql/15/main/conf.d/psa.conf"),
    ("elasticsearch", "elasticsearch", "/etc/elasticsearch/elasticsearch.yml"),
    ("rabbitmq", "rabbitmq-server", "/etc/rabbitmq/rabbitmq.conf"),
])
def test_a_config_written_after_its_service_started_restarts_it(component: str, unit: str, path: str) -> None:
    """A run killed between writing a config file and restarting its unit leaves the file right and
    the service on the old configuration: the next plan restarts the unit, and only that."""
    ctx = make_ctx()
    facts = converged(ctx)
    assert not planner.plan_guest(ctx, facts).actions
    services = dict(facts.services, **{unit: ServiceFact(unit, True, True, since=1_000)})
    files = dict(facts.files, **{path: dataclasses.replace(facts.files[path], mtime=999)})
    older = dataclasses.replace(facts, services=services, files=files)
    assert not planner.plan_guest(ctx, older).actions, "a file older than the service restarts nothing"
    files[path] = dataclasses.replace(facts.files[path], mtime=1_001)
    newer = dataclasses.replace(facts, services=services, files=files)
    changes = [(c.component, type(c).__name__, getattr(c, "action", ""))
               for c in planner.plan_guest(ctx, newer).actions]
    assert changes == [(component, "Service", "restart")]
    # the same second as the start, after it: the package's own start, then our file (CI, 2026-11-27)
    services[unit] = ServiceFact(unit, True, True, since=1_000.25)
    files[path] = dataclasses.replace(facts.files[path], mtime=1_000.75)
    same_second = dataclasses.replace(facts, services=services, files=files)
    assert [type(c).__name__ for c in planner.plan_guest(ctx, same_second).actions] == ["Service"]
    files[path] = dataclasses.replace(facts.files[path], mtime=1_000.1)
    assert not planner.plan_guest(ctx, dataclasses.replace(facts, services=services, files=files)).actions


def test_pg_hba_written_after_the_last_config_load_is_reloaded() -> None:
    """A run killed between writing pg_hba.conf and `systemctl reload postgresql` leaves the server on
    the old client rules: pg_conf_load_time() older than the file makes the next plan reload it."""
    from psa_provision.services.postgresql.component import HBA

    ctx = make_ctx()
    facts = converged(ctx)
    assert facts.postgres is not None
    loaded = dataclasses.replace(facts.postgres, conf_loaded=1_000.5)
    files = dict(facts.files, **{HBA: dataclasses.replace(facts.files[HBA], mtime=1_000.2)})
    older = dataclasses.replace(facts, postgres=loaded, files=files)
    assert not planner.plan_guest(ctx, older).actions
    files[HBA] = dataclasses.replace(facts.files[HBA], mtime=1_000.7)
    changes = planner.plan_guest(ctx, dataclasses.replace(facts, postgres=loaded, files=files)).actions
    assert [(c.component, type(c).__name__, getattr(c, "action", "")) for c in changes] == [
        ("postgresql", "Service", "reload")]
