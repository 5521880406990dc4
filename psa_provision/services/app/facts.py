"""The app's part of the facts probe: PM2's processes (name, status, start) and what dump.pm2 would
restore at boot, asked only when the app user's PM2 daemon runs; and the shipped bundle's checksum.

A converged container's processes are read from PM2's own files (pm2.live_facts); only a container
whose processes are not exactly the wanted ones starts a Node.js to ask the daemon (about a tenth of
a CPU-second each, for 16 containers in phase 3)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from ...phases import ServiceSpec
from ..parse import dicts, json_object
from . import APP_USER, BUNDLE_STAMP, pm2


@dataclass(frozen=True)
class Pm2App:
    name: str
    status: str
    instances: int
    started: float = 0.0  # epoch seconds its oldest process was (re)started (0: unknown)


def start(apps: Mapping[str, int]) -> str:
    """Bash: PM2's facts, read at once from its files when exactly `apps` (name -> processes on this
    container) run, else asked of the daemon on fd 6 (a Node.js, started early); READ puts them into
    the document."""
    live = f"{pm2.live_facts(apps)}  pm2_live=$(pm2_live)\n" if apps else ""
    return f"""pm2="" pm2_live=""
if id {APP_USER} >/dev/null 2>&1 && [ -f {pm2.PID_FILE} ] && {pm2.DAEMON_ALIVE} \\
   && command -v pm2 >/dev/null; then
  pm2=1
{live}  if [ -z "$pm2_live" ]; then
    exec 6< <(cd / && {pm2.FACTS} 2>/dev/null | b64)
  fi
fi
"""


READ = f"""if [ -n "$pm2_live" ]; then
  printf ',"pm2":"%s"' "$(printf '%s' "$pm2_live" | b64)"
elif [ -n "$pm2" ]; then
  printf ',"pm2":"%s"' "$(cat <&6)"
  exec 6<&-
fi
printf ',"bundle_checksum":"%s"' "$(cat {BUNDLE_STAMP} 2>/dev/null | tr -dc '0-9a-f')"
"""


def processes(services: Mapping[str, ServiceSpec]) -> dict[str, int]:
    """The PM2 processes a container runs: its services' names (the apps' names in ecosystem.config.js)
    and instance counts."""
    return {name: s.instances for name, s in services.items()}


def parse(text: str) -> tuple[list[Pm2App], dict[str, int]]:
    """pm2.FACTS' {running: [{name, status, started}], saved: [name]}: the apps, and the processes
    per app in dump.pm2 (what `pm2 resurrect` starts at boot; {} when there is none)."""
    doc = json_object(text)
    saved = dict(Counter(str(name) for name in doc.get("saved") or []))
    counts: dict[str, list[str]] = {}
    started: dict[str, float] = {}
    for p in dicts(doc.get("running")):
        name = str(p["name"])
        counts.setdefault(name, []).append(str(p.get("status", "")))
        at = p.get("started")
        if isinstance(at, int | float) and at > 0:  # pm_uptime: milliseconds
            started[name] = min(started.get(name, at / 1000), at / 1000)
    apps = [Pm2App(name, "online" if all(s == "online" for s in st) else next(s for s in st if s != "online"),
                   len(st), started.get(name, 0.0)) for name, st in counts.items()]
    return apps, saved
