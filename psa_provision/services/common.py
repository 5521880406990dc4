"""Small planning helpers shared by the components: files, packages, services, environment."""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from pathlib import PurePosixPath

from ..changes import Change, Command, Noop, Package, PutFile, Sensitive, Service, sha256, unified_diff
from ..facts import FileFact, GuestFacts
from ..inventory import AptRepo
from ..render import render
from .base import APT_SOURCE_TEMPLATE
from .catalog import SECRET_FILES, mask_secret_lines
from .context import HostContext


def put_file(ctx: HostContext, facts: GuestFacts, component: str, path: str, content: str, *,
             mode: int = 0o644, owner: str = "root", group: str = "root") -> Change:
    """PutFile when content, mode or ownership differ from the guest's file, else Noop."""
    have = facts.files.get(path)
    if have is not None and have.sha256 == sha256(content) and (have.mode, have.owner, have.group) == (
            mode, owner, group):
        return Noop(ctx.host, component, f"{path} up to date")
    secrets = ctx.secrets.values()
    if have is None:
        diff = unified_diff(path, None, content, secrets)
        why = "create"
    elif have.sha256 == sha256(content):
        diff = f"{path}: mode/owner {have.mode:04o} {have.owner}:{have.group} -> {mode:04o} {owner}:{group}\n"
        why = "fix mode/owner of"
    elif have.content is None:
        diff = f"--- {path}\n+++ {path}\n(content changed; the guest's content is unknown)\n"
        why = "update"
    elif path in SECRET_FILES:  # the guest sent it with secret values masked: compare alike
        diff = (unified_diff(path, have.content, mask_secret_lines(content), secrets)
                or f"--- {path}\n+++ {path}\n(only secret values changed)\n")
        why = "update"
    else:
        diff = unified_diff(path, have.content, content, secrets)
        why = "update"
    return PutFile(ctx.host, component, f"{why} {path}", path=path, content=Sensitive(content, secrets),
                   mode=mode, owner=owner, group=group, diff=diff)


def fix_mode(ctx: HostContext, component: str, have: FileFact, mode: int, owner: str, group: str) -> Change:
    """chown/chmod alone, for a file whose content is right (a service rewrote it with other modes)."""
    path = shlex.quote(have.path)
    was = f"{have.mode:04o} {have.owner}:{have.group}"
    return command(ctx, component, f"fix mode/owner of {have.path} ({was})",
                   f"chown {owner}:{group} {path}\nchmod {mode:04o} {path}\n")


def changed(changes: Iterable[Change]) -> bool:
    """True if any of these changes is a real write (not a Noop)."""
    return any(not isinstance(c, Noop) for c in changes)


def content_changed(facts: GuestFacts, changes: Iterable[Change]) -> bool:
    """True if any PutFile here changes a file's content (a mode/owner fix restarts nothing)."""
    for c in changes:
        if isinstance(c, PutFile):
            have = facts.files.get(c.path)
            if have is None or have.sha256 != c.digest:
                return True
        elif not isinstance(c, Noop):
            return True
    return False


def restart_needed(facts: GuestFacts, unit: str, changes: Iterable[Change], paths: Iterable[str]) -> bool:
    """A file the unit reads changes, or was written after the unit last started: a run killed
    between writing the file and restarting the unit left it running the old configuration."""
    if content_changed(facts, changes):
        return True
    have = facts.services.get(unit)
    return bool(have and written_after(facts, paths, have.since))


def written_after(facts: GuestFacts, paths: Iterable[str], when: float) -> bool:
    """One of the files was written after `when` (the moment a service last loaded them; 0: unknown)."""
    return bool(when) and any((f := facts.files.get(path)) is not None and f.mtime > when for path in paths)


def packages(ctx: HostContext, facts: GuestFacts, component: str, names: Iterable[str]) -> Change:
    """Package change for the names not installed yet, else Noop."""
    names = tuple(names)
    missing = tuple(n for n in names if n not in facts.packages)
    if not missing:
        return Noop(ctx.host, component, f"packages installed: {' '.join(names)}")
    return Package(ctx.host, component, f"install {' '.join(missing)}", names=missing)


def service(ctx: HostContext, facts: GuestFacts, component: str, name: str, *, restart: bool = False,
            reload: bool = False) -> list[Change]:
    """Ensure a unit is enabled and running; restart/reload it when files it reads changed.

    On a fresh guest the package just installed may already run with its default config, so a
    changed file always means restart (which also starts a stopped unit), plus enable if needed.
    """
    have = facts.services.get(name)
    enabled = bool(have and have.enabled)
    active = bool(have and have.active)
    out: list[Change] = []
    if restart or (reload and not active):
        if not enabled:
            out.append(Service(ctx.host, component, f"enable {name}", name=name, action="enable"))
        out.append(Service(ctx.host, component, f"restart {name} (configuration changed)", name=name,
                           action="restart"))
    elif not (active and enabled):
        out.append(Service(ctx.host, component, f"enable and start {name}", name=name, action="enable-now"))
    elif reload:
        out.append(Service(ctx.host, component, f"reload {name} (configuration changed)", name=name,
                           action="reload"))
    else:
        out.append(Noop(ctx.host, component, f"{name} enabled and running"))
    return out


def proxy_env(ctx: HostContext) -> str:
    """`export ...` lines giving a guest command the package proxy and the system CA bundle."""
    pk = ctx.inventory.packages
    lines = ["export NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt",
             "export npm_config_cafile=/etc/ssl/certs/ca-certificates.crt"]
    if pk.proxy:
        proxy = shlex.quote(pk.proxy)
        no_proxy = shlex.quote(",".join(pk.no_proxy))
        lines += [f"export http_proxy={proxy} https_proxy={proxy} HTTP_PROXY={proxy} HTTPS_PROXY={proxy}",
                  f"export no_proxy={no_proxy} NO_PROXY={no_proxy}",
                  f"export npm_config_proxy={proxy} npm_config_https_proxy={proxy}",
                  f"export npm_config_noproxy={no_proxy}"]
    return "\n".join(lines) + "\n"


def command(ctx: HostContext, component: str, summary: str, script: str, *, user: str = "root",
            stdin: Sensitive | None = None, cwd: str | None = None, needs_peers: bool = False) -> Command:
    """A Command with `set -euo pipefail` in front."""
    return Command(ctx.host, component, summary, script="set -euo pipefail\n" + script, user=user,
                   stdin=stdin, cwd=cwd, needs_peers=needs_peers)


def size_mb(mb: int, *, units: tuple[str, str] = ("MB", "GB")) -> str:
    """4096 -> '4GB', 1536 -> '1536MB' (units: PostgreSQL style by default)."""
    return f"{mb // 1024}{units[1]}" if mb % 1024 == 0 and mb >= 1024 else f"{mb}{units[0]}"


def apt_update(ctx: HostContext, component: str, why: str) -> Command:
    """`apt-get update` (through the proxy conf base wrote); the planner places one per guest."""
    return command(ctx, component, f"apt-get update ({why})", "apt-get update -qq\n")


def install(ctx: HostContext, facts: GuestFacts, component: str, names: Iterable[str]) -> list[Change]:
    """Package for missing packages (the planner puts the guest's one `apt-get update` before it)."""
    return [packages(ctx, facts, component, names)]


KEY_FETCH = "fetch apt key"


def is_apt_source(change: Change) -> bool:
    """A change of apt's sources (a signing key fetched, a sources list written): package lists are stale."""
    if isinstance(change, PutFile):
        return change.path.startswith("/etc/apt/sources.list.d/")
    return isinstance(change, Command) and change.summary.startswith(KEY_FETCH)


def apt_repo(ctx: HostContext, facts: GuestFacts, component: str, repo: AptRepo, *, keyring: str,
             list_file: str) -> list[Change]:
    """Signing key (fetched by the guest through the proxy, ASCII-armored .asc) + sources list."""
    out: list[Change] = []
    if keyring in facts.files:
        out.append(Noop(ctx.host, component, f"{keyring} present"))
    else:
        key = shlex.quote(keyring)
        keydir = shlex.quote(str(PurePosixPath(keyring).parent))
        out.append(command(ctx, component, f"{KEY_FETCH} {repo.key_url} -> {keyring}",
                           proxy_env(ctx) + f"install -d -m 0755 {keydir}\n"
                           f"curl -fsSL --retry 3 {shlex.quote(repo.key_url)} -o {key}.tmp\n"
                           f"grep -q 'BEGIN PGP PUBLIC KEY BLOCK' {key}.tmp\n"
                           f"chmod 0644 {key}.tmp && mv {key}.tmp {key}\n"))
    out.append(put_file(ctx, facts, component, list_file, render(
        APT_SOURCE_TEMPLATE, name=component, keyring=keyring, repo_url=repo.repo_url, suite=repo.suite,
        component=repo.component)))
    return out
