"""The guest plan: fresh guest -> full plan in install order; converged guest -> only Noops;
one template value changed -> exactly that file and a restart of exactly the services reading it.

`converged()` builds the facts a converged guest has (the seed's files and packages, SEED_FILES and
SEED_PACKAGES), so these tests exercise the comparison code `plan` uses against a real guest.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
from pathlib import Path

import pytest

from psa_provision import inventory, phases, planner
from psa_provision.changes import Change, Command, Noop, Package, PutFile, PutTree, Service
from psa_provision.facts import (
    DirFact,
    FileFact,
    GuestFacts,
    PgRole,
    Pm2App,
    PostgresFacts,
    RabbitFacts,
    ServiceFact,
)
from psa_provision.packaged import APP_BUNDLE, PHASES_DIR, SANDBOX_INVENTORY
from psa_provision.secrets import Secrets, generate
from psa_provision.sensitive import Sensitive
from psa_provision.services import app as app_service
from psa_provision.services import backup as backup_service
from psa_provision.services import base as base_service
from psa_provision.services import catalog, pgbackrest
from psa_provision.services import elasticsearch as es_service
from psa_provision.services.common import is_apt_source
from psa_provision.services.context import Bundle, HostContext
from psa_provision.services.pgbackrest.keys import BackupKeys, KeyPair

SECRETS = generate()
BACKUP_KEYS = BackupKeys(KeyPair(Sensitive("db private key\n", ["db private key"]), "ssh-ed25519 DB db"),
                         KeyPair(Sensitive("repo private key\n", ["repo private key"]),
                                 "ssh-ed25519 REPO repo"))
CA = ("psa-extra-0-guest-ca.crt", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")


def make_ctx(phase_name: str = "phase0", vmid: int | None = None, **tuning: dict[str, object]) -> HostContext:
    inv = inventory.load_inventory(SANDBOX_INVENTORY)
    if tuning:
        inv = inv.model_copy(update={"tuning": inventory.Tuning.model_validate(tuning)})
    phase = phases.load_phase(phase_name, PHASES_DIR)
    spec = phase.containers[0] if vmid is None else phase.container(vmid)
    bundle = Bundle(APP_BUNDLE, "b" * 64)
    return HostContext(inv, phase, spec, Secrets(SECRETS), (CA,), bundle, backup_keys=BACKUP_KEYS)


def scram_verifier(password: str, salt: bytes = b"0123456789abcdef", iterations: int = 4096) -> str:
    """A PostgreSQL-format SCRAM-SHA-256 verifier (what pg_authid.rolpassword holds)."""
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored = hashlib.sha256(hmac.new(salted, b"Client Key", hashlib.sha256).digest()).digest()
    server = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = base64.b64encode
    return f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}${b64(stored).decode()}:{b64(server).decode()}"


# What a converged guest holds, per component, written out from the seed (not from the planner): the
# files with their mode and owner, and the packages. converged() builds its facts from these, so a
# planner that writes another path, mode or owner, or installs another package, is caught.
SEED_FILES: dict[str, dict[str, tuple[int, str, str]]] = {
    "base": {
        "/etc/apt/apt.conf.d/01psa-proxy": (0o644, "root", "root"),  # the sandbox inventory's apt proxy
        "/usr/local/share/ca-certificates/psa-extra-0-guest-ca.crt": (0o644, "root", "root"),
    },
    "postgresql": {
        "/etc/postgresql/15/main/conf.d/psa.conf": (0o644, "postgres", "postgres"),
        "/etc/postgresql/15/main/pg_hba.conf": (0o640, "postgres", "postgres"),
    },
    "redis": {"/etc/redis/redis.conf": (0o640, "redis", "redis")},
    "rabbitmq": {
        "/etc/rabbitmq/rabbitmq-env.conf": (0o644, "root", "root"),
        "/etc/rabbitmq/erl_inetrc": (0o644, "root", "root"),
        "/etc/systemd/system/epmd.socket.d/psa-loopback.conf": (0o644, "root", "root"),
        "/etc/rabbitmq/rabbitmq.conf": (0o644, "rabbitmq", "rabbitmq"),
        "/etc/rabbitmq/enabled_plugins": (0o644, "rabbitmq", "rabbitmq"),
    },
    "elasticsearch": {
        "/etc/apt/sources.list.d/elastic-8.x.list": (0o644, "root", "root"),
        "/etc/elasticsearch/elasticsearch.yml": (0o660, "root", "elasticsearch"),
        "/etc/elasticsearch/jvm.options.d/heap.options": (0o660, "root", "elasticsearch"),
    },
    "nodejs": {"/etc/apt/sources.list.d/nodesource.list": (0o644, "root", "root")},
    "app": {
        "/opt/psa-platform/.env": (0o600, "psa", "psa"),
        "/opt/psa-platform/ecosystem.config.js": (0o644, "psa", "psa"),
        "/etc/systemd/system/pm2-psa.service": (0o644, "root", "root"),
    },
    "scripts": {
        "/usr/local/bin/health-check.sh": (0o755, "root", "root"),
        "/usr/local/bin/backup-psa.sh": (0o750, "root", "root"),
        "/etc/cron.d/psa-backup": (0o644, "root", "root"),
    },
    # pgBackRest's user guide ("Dedicated Repository Host"): the database side and the repository host
    "pgbackrest": {
        "/etc/pgbackrest/pgbackrest.conf": (0o644, "root", "root"),
        "/var/lib/postgresql/.ssh/id_ed25519": (0o600, "postgres", "postgres"),
        "/var/lib/postgresql/.ssh/authorized_keys": (0o600, "postgres", "postgres"),
        "/var/lib/postgresql/.ssh/config": (0o600, "postgres", "postgres"),
    },
    "backup": {
        "/etc/pgbackrest/pgbackrest.conf": (0o644, "root", "root"),
        "/home/pgbackrest/.ssh/id_ed25519": (0o600, "pgbackrest", "pgbackrest"),
        "/home/pgbackrest/.ssh/authorized_keys": (0o600, "pgbackrest", "pgbackrest"),
        "/home/pgbackrest/.ssh/config": (0o600, "pgbackrest", "pgbackrest"),
        **{f"/etc/systemd/system/psa-pgbackrest-{kind}.{unit}": (0o644, "root", "root")
           for kind in ("full", "diff") for unit in ("service", "timer")},
    },
}
SEED_PACKAGES: dict[str, tuple[str, ...]] = {
    "base": ("ca-certificates", "curl", "sudo", "cron", "gzip", "tar"),
    "postgresql": ("postgresql-15",),
    "redis": ("redis-server", "redis-tools"),
    "rabbitmq": ("rabbitmq-server",),
    "elasticsearch": ("elasticsearch",),
    "nodejs": ("nodejs",),
    "pgbackrest": ("pgbackrest",),
    "backup": ("pgbackrest",),
}


def converged(ctx: HostContext) -> GuestFacts:
    """Facts of this guest once converged: the seed's files (SEED_FILES: path, mode, owner; their content
    as rendered for this context) and packages (SEED_PACKAGES), units running, roles and users in place."""
    rendered = {c.path: c for c in planner.plan_guest(ctx, GuestFacts()).changes if isinstance(c, PutFile)}
    files = {}
    for component in ctx.container.components:
        for path, (mode, owner, group) in SEED_FILES.get(component, {}).items():
            have = rendered.get(path)
            digest = have.digest if have is not None else "0" * 64
            content = None if have is None or path in catalog.SECRET_FILES else have.content.reveal()
            files[path] = FileFact(path, digest, mode, owner, group, content)
    for key in (f"{base_service.KEYRINGS}/elastic.asc", f"{base_service.KEYRINGS}/nodesource.asc"):
        files[key] = FileFact(key, "k" * 64, 0o644, "root", "root", "-----BEGIN PGP PUBLIC KEY BLOCK-----\n")
    stamp = app_service.BUNDLE_STAMP
    files[stamp] = FileFact(stamp, "s" * 64, 0o644, "psa", "psa", "b" * 64 + "\n")
    owners = {es_service.BACKUP_DIR: "elasticsearch", f"{app_service.APP_DIR}/backups": "root"}
    dirs = {d: DirFact(d, 0o755, owners.get(d, "psa"), owners.get(d, "psa"))
            for d in catalog.managed_dirs(ctx.container.components)}
    backup_dirs = {pgbackrest.DB_SSH_DIR: (0o700, "postgres"), pgbackrest.REPO_SSH_DIR: (0o700, "pgbackrest"),
                   pgbackrest.REPO_PATH: (0o750, "pgbackrest"), pgbackrest.LOG_PATH: (0o750, "pgbackrest"),
                   backup_service.ROOT: (0o700, "root"), backup_service.SETS_DIR: (0o700, "root")}
    dirs.update({d: DirFact(d, mode, who, who) for d, (mode, who) in backup_dirs.items() if d in dirs})
    services = {s: ServiceFact(s, True, True) for s in catalog.managed_services(ctx.container.components)}
    packages = {n: "1" for c in ctx.container.components for n in SEED_PACKAGES.get(c, ())}
    comps = set(ctx.container.components)
    pg = PostgresFacts(
        roles={"postgres": PgRole("postgres", True, True, ""),
               "psa_app": PgRole("psa_app", True, False, scram_verifier(SECRETS["postgresql.app_password"]))},
        databases={"postgres": "postgres", "psa_platform": "psa_app"},
        extensions={"psa_platform": frozenset({"plpgsql", "uuid-ossp", "pg_trgm", "btree_gin", "pgcrypto"})},
        default_acls={"psa_platform": frozenset({"r", "S"})},
    ) if "postgresql" in comps else None
    rabbit = RabbitFacts(
        users={"admin": frozenset({"administrator"}), "psa_app": frozenset()},
        permissions={("/", "admin"): (".*", ".*", ".*"), ("/", "psa_app"): (".*", ".*", ".*")},
    ) if "rabbitmq" in comps else None
    pm2 = [Pm2App(n, "online", s.instances) for n, s in ctx.services.items()] if "app" in comps else None
    return GuestFacts(hostname=ctx.host, os_id="debian", os_version="12", packages=packages, files=files,
                      dirs=dirs, services=services,
                      users=frozenset({"root", "postgres", "psa", "pgbackrest"}),
                      npm_globals=frozenset({"npm", "pm2"}), postgres=pg, rabbitmq=rabbit, pm2=pm2,
                      bundle_checksum="b" * 64 if "app" in comps else None)


def actions(changes: list[Change]) -> list[str]:
    return [f"{c.kind} {c.component}: {c.summary}" for c in changes if not isinstance(c, Noop)]


def test_fresh_guest_gets_every_component_in_order() -> None:
    plan = planner.plan_guest(make_ctx(), GuestFacts())
    assert plan.noops == []
    order = [c.component for c in plan.changes if not is_apt_source(c)]  # apt sources: right after base
    seen = list(dict.fromkeys(order))
    assert seen == ["base", "postgresql", "redis", "rabbitmq", "elasticsearch", "nodejs", "app", "scripts"]
    paths = {c.path for c in plan.changes if isinstance(c, PutFile)}
    assert paths >= set(catalog.managed_files(make_ctx().container.components)) - {
        f"{base_service.KEYRINGS}/elastic.asc", f"{base_service.KEYRINGS}/nodesource.asc",
        app_service.BUNDLE_STAMP, app_service.ENV_STAMP}
    assert any(isinstance(c, PutTree) for c in plan.changes)
    # apt proxy before the first package install; the app bundle before its build
    first_pkg = next(i for i, c in enumerate(plan.changes) if isinstance(c, Package))
    assert plan.changes[0].summary == "create /etc/apt/apt.conf.d/01psa-proxy" and first_pkg > 0


def test_only_the_pm2_apps_wait_for_the_other_containers() -> None:
    """`up` applies needs_peers changes in its second wave: the PM2 apps connect to the stores as they
    start; everything else (packages, files, the app build, the PM2 daemon) runs alongside the stores."""
    fresh = planner.plan_guest(make_ctx("phase1", 230), GuestFacts())
    assert [c.summary for c in fresh.changes if c.needs_peers] == ["pm2 start ecosystem.config.js (8 apps)"]
    assert any(c.summary.startswith("npm ci") and not c.needs_peers for c in fresh.changes)
    ctx = make_ctx()
    rotated = dataclasses.replace(ctx, secrets=Secrets(dict(SECRETS, **{"app.jwt_secret": "f" * 64})))
    reload = planner.plan_guest(rotated, converged(ctx)).actions
    assert [c.needs_peers for c in reload] == [False, True]  # the .env, then the reload


def test_fresh_plan_never_puts_a_secret_in_summaries_diffs_or_argv() -> None:
    plan = planner.plan_guest(make_ctx(), GuestFacts())
    values = [v for k, v in SECRETS.items() if k != "app.admin_email"]
    for c in plan.changes:
        shown = c.summary + getattr(c, "diff", "") + getattr(c, "script", "")
        assert not any(v in shown for v in values), c.summary


def test_secrets_reach_the_guest_only_through_stdin_or_files() -> None:
    plan = planner.plan_guest(make_ctx(), GuestFacts())
    stdin = "".join(c.stdin.reveal() for c in plan.changes if isinstance(c, Command) and c.stdin)
    assert SECRETS["postgresql.app_password"] in stdin
    assert SECRETS["rabbitmq.admin_password"] in stdin and SECRETS["rabbitmq.app_password"] in stdin


def test_stdin_reaches_only_the_command_meant_to_read_it() -> None:
    """rabbitmqctl (the Erlang VM) reads stdin: a list_users before add_user would swallow the password
    (seen in the sandbox: "Password is not provided via argument or stdin")."""
    plan = planner.plan_guest(make_ctx(), GuestFacts())
    with_stdin = [c for c in plan.changes if getattr(c, "stdin", None)]
    assert with_stdin
    for c in with_stdin:
        script: str = getattr(c, "script", "")
        readers = [line for line in script.splitlines() for part in line.split("|")
                   if ("rabbitmqctl" in part or "psql" in part) and "</dev/null" not in part]
        assert len(readers) == 1, f"{c.summary}: more than one command may read stdin: {readers}"


@pytest.mark.parametrize(("phase", "vmid"),
                         [("phase0", 200), ("phase1", 100), ("phase1", 230), ("phase2", 140)])
def test_converged_guest_plans_only_noops(phase: str, vmid: int) -> None:
    ctx = make_ctx(phase, vmid)
    plan = planner.plan_guest(ctx, converged(ctx))
    assert actions(plan.changes) == []
    assert plan.empty and len(plan.noops) > 3


@pytest.mark.parametrize(("tuning", "path", "service"), [
    ({"redis": {"maxmemory": "1gb"}}, "/etc/redis/redis.conf", "redis-server"),
    ({"postgresql": {"work_mem": "32MB"}}, "/etc/postgresql/15/main/conf.d/psa.conf", "postgresql"),
    ({"elasticsearch": {"heap": "2g"}}, "/etc/elasticsearch/jvm.options.d/heap.options", "elasticsearch"),
])
def test_one_template_value_changes_one_file_and_one_restart(
        tuning: dict[str, dict[str, object]], path: str, service: str) -> None:
    facts = converged(make_ctx())
    changes = planner.plan_guest(make_ctx(**tuning), facts).actions
    assert [(type(c), getattr(c, "path", None) or getattr(c, "name", None)) for c in changes] == [
        (PutFile, path), (Service, service)], actions(changes)
    assert isinstance(changes[1], Service) and changes[1].action == "restart"


def test_changed_secret_in_env_reloads_pm2_and_masks_diff() -> None:
    ctx = make_ctx()
    facts = converged(ctx)
    rotated = dict(SECRETS, **{"app.jwt_secret": "f" * 64})
    ctx2 = dataclasses.replace(ctx, secrets=Secrets(rotated))
    changes = planner.plan_guest(ctx2, facts).actions
    assert actions(changes) == [
        "PutFile app: update /opt/psa-platform/.env",
        "Command app: pm2: code or configuration changed",
    ]
    env = changes[0]
    assert isinstance(env, PutFile) and "f" * 64 in env.content.reveal() and "f" * 64 not in env.diff
    assert "reload /opt/psa-platform/ecosystem.config.js --update-env" in getattr(changes[1], "script", "")


def test_bundle_checksum_follows_sources_not_build_output(tmp_path: Path) -> None:
    from psa_provision.services.context import bundle_checksum

    (tmp_path / "services" / "auth" / "src").mkdir(parents=True)
    (tmp_path / "package.json").write_text("{}")
    src = tmp_path / "services" / "auth" / "src" / "index.ts"
    src.write_text("export {}\n")
    first = bundle_checksum(tmp_path)
    for built in ("node_modules/x/index.js", "services/auth/dist/index.js", "npm-debug.log"):
        (tmp_path / built).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / built).write_text("built")
    assert bundle_checksum(tmp_path) == first
    src.write_text("export const x = 1\n")
    assert bundle_checksum(tmp_path) != first


def test_build_context_reads_cas_and_refuses_bad_ones(tmp_path: Path) -> None:
    from psa_provision.errors import InputError
    from psa_provision.services.context import build_context

    ctx = make_ctx()
    pem = tmp_path / "corp.pem"
    pem.write_text(CA[1])
    packages = ctx.inventory.packages.model_copy(update={"extra_ca_files": [pem]})
    inv = ctx.inventory.model_copy(update={"packages": packages})
    built = build_context(inv, ctx.phase, ctx.container, ctx.secrets, bundle_dir=None)
    assert built.extra_cas == (("psa-extra-0-corp.crt", CA[1]),) and built.bundle is None
    pem.write_text("not a certificate")
    with pytest.raises(InputError, match="not a PEM certificate"):
        build_context(inv, ctx.phase, ctx.container, ctx.secrets, bundle_dir=None)
    pem.unlink()
    with pytest.raises(InputError, match="cannot read CA certificate"):
        build_context(inv, ctx.phase, ctx.container, ctx.secrets, bundle_dir=None)
    with pytest.raises(InputError, match="app bundle is missing"):
        build_context(ctx.inventory, ctx.phase, ctx.container, ctx.secrets, bundle_dir=tmp_path)
