"""The bundled app: user psa, /opt/psa-platform, .env (0600 psa), ecosystem, bundle ship + build, PM2.

PM2 runs as `psa` under the pm2-psa systemd unit (starts at boot, resurrects the saved list).
Code or .env/ecosystem changes -> `pm2 reload` (zero-downtime in cluster mode); instance count
changes -> `pm2 scale`; nothing changed and every app online -> Noop.
"""

from __future__ import annotations

import shlex

from ..facts import GuestFacts
from ..phases import APP_SERVICES
from ..plan import Change, Noop, PutTree
from ..render import render
from .catalog import APP_DIR, APP_HOME, APP_USER, BUNDLE_STAMP, DIRS, ECOSYSTEM_FILE, ENV_FILE
from .common import changed, command, content_changed, proxy_env, put_file
from .context import HostContext

COMPONENT = "app"
UNIT = "/etc/systemd/system/pm2-psa.service"
PM2_ENV = f"export HOME={APP_HOME} PM2_HOME={APP_HOME}/.pm2\ncd {APP_DIR}\n"
ROOT_OWNED_DIRS = {f"{APP_DIR}/backups"}


def env_content(ctx: HostContext) -> str:
    """The seed's .env keys + admin user, binds and *_SERVICE_URL for the gateway."""
    s = ctx.secrets
    local_only = all(svc.container == ctx.container.vmid for svc in ctx.phase.services.values()) and \
        ctx.listen_address() == "127.0.0.1"
    urls = {}
    for name, port in APP_SERVICES.items():
        if name == "api-gateway":
            continue
        svc = ctx.phase.services.get(name)
        host = "127.0.0.1"
        if svc is not None and svc.container != ctx.container.vmid:
            host = ctx.phase.container(svc.container).ip
        urls[f"{name.upper()}_SERVICE_URL"] = f"http://{host}:{svc.port if svc else port}"
    return render(
        "env.j2",
        postgres_host=ctx.address_of("postgresql"), redis_host=ctx.address_of("redis"),
        rabbitmq_host=ctx.address_of("rabbitmq"), elasticsearch_host=ctx.address_of("elasticsearch"),
        postgres_password=s.get("postgresql.app_password").value,
        redis_password=s.get("redis.password").value,
        rabbitmq_password=s.get("rabbitmq.app_password").value, jwt_secret=s.get("app.jwt_secret").value,
        admin_email=s.get("app.admin_email").value, admin_password=s.get("app.admin_password").value,
        service_bind="127.0.0.1" if local_only else ctx.container.ip, gateway_bind="0.0.0.0",  # noqa: S104
        service_urls=urls,
    )


def ecosystem_content(ctx: HostContext) -> str:
    return render("ecosystem.config.js.j2", env_file=ENV_FILE, app_dir=APP_DIR, services=ctx.services)


def _user(ctx: HostContext, facts: GuestFacts) -> Change:
    if APP_USER in facts.users:
        return Noop(ctx.host, COMPONENT, f"user {APP_USER} exists")
    return command(ctx, COMPONENT, f"create user {APP_USER}",
                   f"id {APP_USER} >/dev/null 2>&1 || useradd --system --create-home --home-dir {APP_HOME} "
                   f"--shell /bin/bash {APP_USER}\n")


def _dirs(ctx: HostContext, facts: GuestFacts) -> Change:
    def want(d: str) -> tuple[str, str]:
        return ("root", "root") if d in ROOT_OWNED_DIRS else (APP_USER, APP_USER)

    wrong = [d for d in DIRS["app"]
             if d not in facts.dirs or (facts.dirs[d].owner, facts.dirs[d].group) != want(d)]
    if not wrong:
        return Noop(ctx.host, COMPONENT, f"{APP_DIR} layout present")
    lines = [f"install -d -m 0755 -o {want(d)[0]} -g {want(d)[1]} {shlex.quote(d)}" for d in wrong]
    return command(ctx, COMPONENT, f"create directories {' '.join(wrong)}", "\n".join(lines) + "\n")


def _bundle(ctx: HostContext, facts: GuestFacts) -> list[Change]:
    b = ctx.bundle
    if b is None:
        return [Noop(ctx.host, COMPONENT, "no app bundle given")]
    if facts.bundle_checksum == b.checksum:
        return [Noop(ctx.host, COMPONENT, f"app bundle {b.checksum[:12]} already shipped and built")]
    return [
        PutTree(ctx.host, COMPONENT, f"ship app bundle {b.path.name} ({b.checksum[:12]}) to {APP_DIR}",
                local_dir=str(b.path), remote_dir=APP_DIR, exclude=b.exclude, owner=APP_USER, group=APP_USER,
                checksum=b.checksum),
        command(ctx, COMPONENT, "npm ci && npm run build (as psa)",
                proxy_env(ctx) + PM2_ENV + "npm ci --no-fund --no-audit\nnpm run build\n"
                f"echo {b.checksum} > {BUNDLE_STAMP}\n", user=APP_USER),
    ]


def _pm2_unit(ctx: HostContext, facts: GuestFacts) -> list[Change]:
    unit = put_file(ctx, facts, COMPONENT, UNIT, render("pm2-psa.service.j2", user=APP_USER, home=APP_HOME))
    if not changed([unit]) and facts.service_ok("pm2-psa"):
        return [unit, Noop(ctx.host, COMPONENT, "pm2-psa enabled and running")]
    return [unit, command(ctx, COMPONENT, "enable and start pm2-psa (PM2 daemon at boot)",
                          "systemctl daemon-reload\nsystemctl enable --now pm2-psa\n")]


def _processes(ctx: HostContext, facts: GuestFacts, restart_needed: bool) -> list[Change]:
    wanted = {n: s.instances for n, s in ctx.services.items()}
    running = {a.name: a for a in facts.pm2 or []}
    if not running:
        return [command(ctx, COMPONENT, f"pm2 start ecosystem.config.js ({len(wanted)} apps)",
                        PM2_ENV + f"pm2 start {ECOSYSTEM_FILE}\npm2 save\n", user=APP_USER)]
    lines: list[str] = []
    why: list[str] = []
    extra = sorted(set(running) - set(wanted))
    for name in extra:
        lines.append(f"pm2 delete {shlex.quote(name)}")
    missing = sorted(set(wanted) - set(running))
    offline = sorted(n for n in wanted if n in running and running[n].status != "online")
    if restart_needed or missing or offline:
        lines.append(f"pm2 reload {ECOSYSTEM_FILE} --update-env")
        why.append("code or configuration changed" if restart_needed else
                   f"not online: {', '.join(missing + offline)}")
    for name, count in sorted(wanted.items()):
        if name in running and running[name].instances != count:
            lines.append(f"pm2 scale {shlex.quote(name)} {count}")
            why.append(f"{name} {running[name].instances} -> {count} instances")
    if extra:
        why.append(f"remove {', '.join(extra)}")
    if not lines:
        return [Noop(ctx.host, COMPONENT, f"{len(wanted)} PM2 apps online with their instance counts")]
    return [command(ctx, COMPONENT, "pm2: " + "; ".join(why),
                    PM2_ENV + "\n".join(lines) + "\npm2 save\n", user=APP_USER)]


def plan(ctx: HostContext, facts: GuestFacts) -> list[Change]:
    out: list[Change] = [_user(ctx, facts), _dirs(ctx, facts)]
    env = put_file(ctx, facts, COMPONENT, ENV_FILE, env_content(ctx), mode=0o600, owner=APP_USER,
                   group=APP_USER)
    eco = put_file(ctx, facts, COMPONENT, ECOSYSTEM_FILE, ecosystem_content(ctx), owner=APP_USER,
                   group=APP_USER)
    bundle = _bundle(ctx, facts)
    out += [env, eco, *bundle, *_pm2_unit(ctx, facts)]
    out += _processes(ctx, facts, restart_needed=content_changed(facts, [env, eco, *bundle]))
    return out
