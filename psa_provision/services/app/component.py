"""The bundled app: user psa, /opt/psa-platform, .env (0600 psa), ecosystem, bundle ship + build, PM2.

PM2 runs as `psa` under the pm2-psa systemd unit (starts at boot, resurrects the saved list).
Code or ecosystem changes -> `pm2 reload` of every app (zero-downtime in cluster mode); a changed
.env value -> reload of only the apps that read it (app.APP_STORES; ENV_STAMP records what the
apps were loaded with); instance count changes -> `pm2 scale`; nothing changed, all online -> Noop.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import shlex

from ...changes import Change, Noop, PutTree
from ...facts import GuestFacts
from ...phases import APP_SERVICES, ContainerSpec, Phase
from ...render import render
from ..common import changed, command, content_changed, put_file
from ..context import HostContext
from ..elasticsearch import PORT as ES_PORT
from ..elasticsearch.component import members as es_members
from ..haproxy.config import front_address
from ..nodejs.component import npm_env
from ..patroni.haproxy import client_endpoint
from ..postgresql import PORT as POSTGRES_PORT
from ..rabbitmq import cluster as rabbit_cluster
from ..redis import MASTER_NAME, SENTINEL_PORT
from ..redis import topology as redis_topology
from . import (
    APP_DIR,
    APP_HOME,
    APP_USER,
    BUNDLE_STAMP,
    COMPONENT,
    DIRS,
    ECOSYSTEM_FILE,
    ENV_FILE,
    ENV_STAMP,
    ROOT_OWNED_DIRS,
    TEMPLATES,
    UNIT,
    UNIT_FILE,
    env_readers,
)
from .facts import processes

PM2_ENV = f"export HOME={APP_HOME} PM2_HOME={APP_HOME}/.pm2\ncd {APP_DIR}\n"


def service_bind(phase: Phase, spec: ContainerSpec) -> str:
    """SERVICE_BIND: loopback when every service runs on this container and no other app container
    calls in (phase 0, phase 1's app), else the container's private address (phase 2)."""
    local_only = all(svc.containers == [spec.vmid] for svc in phase.services.values()) and \
        not any(c.vmid != spec.vmid and "app" in c.components for c in phase.containers)
    return "127.0.0.1" if local_only else spec.ip


def probe_address(phase: Phase, spec: ContainerSpec, service: str) -> str:
    """Where a /health probe on the container itself reaches `service` (the gateway binds every address)."""
    return "127.0.0.1" if service == "api-gateway" else service_bind(phase, spec)


def service_url(phase: Phase, spec: ContainerSpec, service: str) -> str:
    """Where the gateway on `spec` reaches `service`: on this container, itself; on one other container,
    that one; on several (phase 3), the load balancers in front of them (a lost container is only a
    lost backend); its seed port when the phase does not place it."""
    svc = phase.services.get(service)
    if svc is None:
        return f"http://127.0.0.1:{APP_SERVICES[service]}"
    front = front_address(phase)
    if svc.container == spec.vmid:
        host = "127.0.0.1"
    elif len(svc.containers) > 1 and front is not None:
        host = front
    else:
        host = phase.container(svc.container).ip
    return f"http://{host}:{svc.port}"


def cluster_env(phase: Phase) -> dict[str, str]:
    """Phase 3's store clusters for .env: Redis Sentinels, RabbitMQ nodes and Elasticsearch nodes
    (host:port, phase order); empty values where the phase runs a store standalone."""
    redis = next((c for c in phase.with_component("redis") if redis_topology.replicated(phase, c)), None)
    rabbit = next((c for c in phase.with_component("rabbitmq") if rabbit_cluster.members(phase, c)), None)
    sentinels = [f"{c.ip}:{SENTINEL_PORT}" for c in redis_topology.members(phase, redis)] if redis else []
    nodes = [f"{c.ip}:5672" for c in rabbit_cluster.members(phase, rabbit)] if rabbit else []
    search = es_members(phase)
    return {"redis_sentinels": ",".join(sentinels), "redis_sentinel_name": MASTER_NAME if sentinels else "",
            "rabbitmq_nodes": ",".join(nodes),
            "elasticsearch_nodes": ",".join(f"{c.ip}:{ES_PORT}" for c in search) if len(search) > 1 else ""}


def env_content(ctx: HostContext) -> str:
    """The seed's .env keys + admin user, binds and *_SERVICE_URL for the gateway."""
    s = ctx.secrets
    urls = {f"{name.upper()}_SERVICE_URL": service_url(ctx.phase, ctx.container, name)
            for name in APP_SERVICES if name != "api-gateway"}
    # a Patroni cluster is reached through the load balancer's leader port, a lone server directly
    postgres_host, postgres_port = client_endpoint(ctx.phase) or (ctx.address_of("postgresql"), POSTGRES_PORT)
    return render(
        TEMPLATES[ENV_FILE],
        postgres_host=postgres_host, postgres_port=postgres_port, redis_host=ctx.address_of("redis"),
        rabbitmq_host=ctx.address_of("rabbitmq"), elasticsearch_host=ctx.address_of("elasticsearch"),
        postgres_password=s.get("postgresql.app_password").value,
        redis_password=s.get("redis.password").value,
        rabbitmq_password=s.get("rabbitmq.app_password").value, jwt_secret=s.get("app.jwt_secret").value,
        admin_email=s.get("app.admin_email").value, admin_password=s.get("app.admin_password").value,
        service_bind=service_bind(ctx.phase, ctx.container), gateway_bind="0.0.0.0",  # noqa: S104
        service_urls=urls, **cluster_env(ctx.phase),
    )


def ecosystem_content(ctx: HostContext) -> str:
    return render(TEMPLATES[ECOSYSTEM_FILE], env_file=ENV_FILE, app_dir=APP_DIR, services=ctx.services)


def _user(ctx: HostContext, facts: GuestFacts) -> Change:
    if APP_USER in facts.users:
        return Noop(ctx.host, COMPONENT, f"user {APP_USER} exists")
    return command(ctx, COMPONENT, f"create user {APP_USER}",
                   f"id {APP_USER} >/dev/null 2>&1 || useradd --system --create-home --home-dir {APP_HOME} "
                   f"--shell /bin/bash {APP_USER}\n")


def _dirs(ctx: HostContext, facts: GuestFacts) -> Change:
    def want(d: str) -> tuple[str, str]:
        return ("root", "root") if d in ROOT_OWNED_DIRS else (APP_USER, APP_USER)

    wrong = [d for d in DIRS
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
                npm_env(ctx) + PM2_ENV + "npm ci --no-fund --no-audit\nnpm run build\n"
                f"echo {b.checksum} > {BUNDLE_STAMP}\n", user=APP_USER),
    ]


def _pm2_unit(ctx: HostContext, facts: GuestFacts) -> list[Change]:
    unit = put_file(ctx, facts, COMPONENT, UNIT_FILE, render(TEMPLATES[UNIT_FILE], user=APP_USER,
                                                            home=APP_HOME))
    if not changed([unit]) and facts.service_ok(UNIT):
        return [unit, Noop(ctx.host, COMPONENT, "pm2-psa enabled and running")]
    return [unit, command(ctx, COMPONENT, "enable and start pm2-psa (PM2 daemon at boot)",
                          "systemctl daemon-reload\nsystemctl enable --now pm2-psa\n")]


def env_values(content: str) -> dict[str, str]:
    """NAME -> value of every assignment in a rendered .env (as ecosystem.config.js reads it)."""
    return {m[1]: m[2] for m in re.finditer(r"(?m)^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", content)}


def env_fingerprints(ctx: HostContext, env: str) -> dict[str, str]:
    """NAME -> HMAC-SHA256 of NAME=value (keyed per host): compares values without holding them."""
    key = f"psa-provision .env {ctx.host}".encode()
    return {name: hmac.new(key, f"{name}={value}".encode(), hashlib.sha256).hexdigest()[:32]
            for name, value in env_values(env).items()}


def loaded_fingerprints(facts: GuestFacts) -> dict[str, str] | None:
    """The fingerprints the running apps were last (re)loaded with (ENV_STAMP), None if unknown."""
    have = facts.files.get(ENV_STAMP)
    if have is None or have.content is None:
        return None
    pairs = (line.split() for line in have.content.splitlines() if line.strip() and not line.startswith("#"))
    return {p[0]: p[1] for p in pairs if len(p) == 2}


def _stamp_script(fingerprints: dict[str, str]) -> str:
    """Write ENV_STAMP (0600, as the app user) once the apps run with these values."""
    body = "".join(f"{name} {digest}\n" for name, digest in sorted(fingerprints.items()))
    return (f"umask 077\ncat > {ENV_STAMP}.tmp <<'PSA_ENV_STAMP'\n# psa-provision: the .env the PM2 apps "
            f"were last (re)loaded with (HMAC per variable)\n{body}PSA_ENV_STAMP\n"
            f"mv -f {ENV_STAMP}.tmp {ENV_STAMP}\n")


def _stale_apps(facts: GuestFacts, apps: set[str], fingerprints: dict[str, str], *, code_changed: bool,
                env_changed: bool) -> tuple[set[str], str]:
    """The apps to reload for code/config or environment changes, and why (variable names only).

    With a stamp, only the apps that read a variable whose value differs from what they were loaded
    with (app.env_readers); without one (a guest from before the stamp), every app when .env changed.
    """
    if code_changed:
        return set(apps), "code or configuration changed"
    older = _older_than_their_code(facts, apps)
    built = "code built after they started" if older else ""
    loaded = loaded_fingerprints(facts)
    if loaded is None:
        return (set(apps), "code or configuration changed") if env_changed else (older, built)
    changed_vars = sorted(k for k in fingerprints.keys() | loaded.keys()
                          if fingerprints.get(k) != loaded.get(k))
    stale = {a for v in changed_vars for a in env_readers(v, apps)}
    more = f" and {len(changed_vars) - 4} more" if len(changed_vars) > 4 else ""
    reasons = [f"{', '.join(changed_vars[:4])}{more} changed" if changed_vars else "", built]
    return stale | older, "; ".join(r for r in reasons if r)


def _older_than_their_code(facts: GuestFacts, apps: set[str]) -> set[str]:
    """Apps whose oldest process started before the last build (BUNDLE_STAMP) or ecosystem file: a run
    killed between the build and the reload left them on the old code."""
    newest = max((f.mtime for p in (BUNDLE_STAMP, ECOSYSTEM_FILE) if (f := facts.files.get(p)) is not None),
                 default=0.0)
    return {a.name for a in facts.pm2 or [] if a.name in apps and 0 < a.started < newest}


def _processes(ctx: HostContext, facts: GuestFacts, env: str, *, code_changed: bool,
               env_changed: bool) -> list[Change]:
    """Start, reload (only the apps whose code or environment changed), scale or delete PM2 apps."""
    wanted = processes(ctx.services)
    running = {a.name: a for a in facts.pm2 or []}
    if ctx.hold_app and running:
        return [Noop(ctx.host, COMPONENT, "PM2 apps left as they are: a migration to this phase is under way "
                     "(its app step starts them)")]
    fingerprints = env_fingerprints(ctx, env)
    if not running:
        # the record first: apps a killed `pm2 start` did start were loaded with exactly this .env
        return [command(ctx, COMPONENT, f"pm2 start ecosystem.config.js ({len(wanted)} apps)",
                        PM2_ENV + _stamp_script(fingerprints) + f"pm2 start {ECOSYSTEM_FILE}\npm2 save\n",
                        user=APP_USER, needs_peers=True)]
    lines: list[str] = []
    why: list[str] = []
    extra = sorted(set(running) - set(wanted))
    for name in extra:
        lines.append(f"pm2 delete {shlex.quote(name)}")
    stale, reason = _stale_apps(facts, set(wanted), fingerprints, code_changed=code_changed,
                                env_changed=env_changed)
    missing = sorted(set(wanted) - set(running))
    offline = sorted(n for n in wanted if n in running and running[n].status != "online")
    reload = stale | set(missing) | set(offline)
    if reload == set(wanted):
        lines.append(f"pm2 reload {ECOSYSTEM_FILE} --update-env")
    elif reload:
        only = shlex.quote(",".join(sorted(reload)))
        lines.append(f"pm2 reload {ECOSYSTEM_FILE} --only {only} --update-env")
    if stale:
        why.append(reason if reload == set(wanted) else f"reload {', '.join(sorted(stale))} ({reason})")
    if missing or offline:
        why.append(f"not online: {', '.join(missing + offline)}")
    for name, count in sorted(wanted.items()):
        if name in running and running[name].instances != count:
            lines.append(f"pm2 scale {shlex.quote(name)} {count}")
            why.append(f"{name} {running[name].instances} -> {count} instances")
    if extra:
        why.append(f"remove {', '.join(extra)}")
    if not lines:
        saved = facts.pm2_saved
        if saved is not None and saved != {n: a.instances for n, a in running.items()}:
            # e.g. a run killed between `pm2 start` and `pm2 save`: the apps run, a reboot would lose them
            return [command(ctx, COMPONENT, "pm2 save (the process list restored at boot differs from the "
                            "running one)", PM2_ENV + "pm2 save\n", user=APP_USER)]
        return [Noop(ctx.host, COMPONENT, f"{len(wanted)} PM2 apps online with their instance counts")]
    stamp = _stamp_script(fingerprints) if reload else ""
    return [command(ctx, COMPONENT, "pm2: " + "; ".join(why),
                    PM2_ENV + "\n".join(lines) + "\npm2 save\n" + stamp, user=APP_USER, needs_peers=True)]


def plan(ctx: HostContext, facts: GuestFacts) -> list[Change]:
    out: list[Change] = [_user(ctx, facts), _dirs(ctx, facts)]
    env_content_ = env_content(ctx)
    env = put_file(ctx, facts, COMPONENT, ENV_FILE, env_content_, mode=0o600, owner=APP_USER,
                   group=APP_USER)
    eco = put_file(ctx, facts, COMPONENT, ECOSYSTEM_FILE, ecosystem_content(ctx), owner=APP_USER,
                   group=APP_USER)
    bundle = _bundle(ctx, facts)
    out += [env, eco, *bundle, *_pm2_unit(ctx, facts)]
    out += _processes(ctx, facts, env_content_, code_changed=content_changed(facts, [eco, *bundle]),
                      env_changed=content_changed(facts, [env]))
    return out
