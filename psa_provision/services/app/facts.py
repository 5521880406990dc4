"""The app's part of the facts probe: PM2's processes (name, status, start) and what dump.pm2 would
restore at boot, asked only when the app user's PM2 daemon runs; and the shipped bundle's checksum."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from ..parse import dicts, json_object
from . import APP_USER, BUNDLE_STAMP, pm2


@dataclass(frozen=True)
class Pm2App:
    name: str
    status: str
    instances: int
    started: float = 0.0  # epoch seconds its oldest process was (re)started (0: unknown)


# Started early on fd 6 (pm2 starts a Node.js); READ puts it into the document.
START = f"""pm2=""
if id {APP_USER} >/dev/null 2>&1 && [ -f {pm2.PID_FILE} ] && {pm2.DAEMON_ALIVE} \\
   && command -v pm2 >/dev/null; then
  pm2=1
  exec 6< <(cd / && {pm2.FACTS} 2>/dev/null | b64)
fi
"""
READ = f"""if [ -n "$pm2" ]; then
  printf ',"pm2":"%s"' "$(cat <&6)"
  exec 6<&-
fi
printf ',"bundle_checksum":"%s"' "$(cat {BUNDLE_STAMP} 2>/dev/null | tr -dc '0-9a-f')"
"""


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
