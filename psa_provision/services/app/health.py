"""The app's `psa-provision health` probe: PM2 instances online per service, and each service's /health.

`probe` and `http` are the shell functions of health.py's prelude; judging is pure (recorded output).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping

from psa_provision.phases import ContainerSpec, Phase

from . import APP_USER, pm2
from .component import probe_address

PM2_PROBE = f"""pm2_counts() {{
  set -o pipefail
  if ! {pm2.DAEMON_ALIVE}; then
    echo "PM2 daemon of {APP_USER} not running"; return 1
  fi
  {pm2.COUNTS}
}}
probe pm2 pm2_counts"""


def probes(services: Mapping[str, int], hosts: Mapping[str, str] | None = None) -> list[str]:
    """The PM2 probe, then GET /health of each service (name -> port) on hosts[name], else loopback."""
    where = hosts or {}
    return [PM2_PROBE] + [f"http {shlex.quote(name)} {int(port)} {shlex.quote(where.get(name, '127.0.0.1'))}"
                          for name, port in sorted(services.items())]


def _pm2_counts(detail: str) -> dict[str, tuple[int, int]]:
    counts: dict[str, tuple[int, int]] = {}
    for item in filter(None, detail.split(",")):
        name, _, frac = item.partition("=")
        online, _, total = frac.partition("/")
        if online.isdigit() and total.isdigit():
            counts[name] = (int(online), int(total))
    return counts


def judge(services: Mapping[str, tuple[int, int]], answers: Mapping[str, tuple[int, str]]
          ) -> list[tuple[str, bool, str]]:
    """(service, ok, why) per service (name -> (port, instances)) from the pm2 and http:<name> answers."""
    pm2_code, pm2_detail = answers.get("pm2", (-1, "no answer from pm2"))
    counts = _pm2_counts(pm2_detail) if pm2_code == 0 else {}
    out: list[tuple[str, bool, str]] = []
    for name, (port, instances) in sorted(services.items()):
        online, total = counts.get(name, (0, 0))
        http, body = answers.get(f"http:{name}", (0, ""))
        problems = []
        if pm2_code != 0:
            problems.append(pm2_detail[:80] or f"pm2 jlist failed (exit {pm2_code})")
        elif online != instances:
            in_pm2 = f" ({total} in pm2)" if total else ""
            problems.append(f"{online}/{instances} instances online{in_pm2}")
        if http != 200:
            problems.append(f"GET :{port}/health answered {http:03d}{failing_checks(body)}" if http
                            else f"nothing answers :{port}/health")
        why = "; ".join(problems) or f"{online}/{instances} online, /health 200"
        out.append((name, not problems, why))
    return out


def failing_checks(body: str) -> str:
    """` (redis: error: ...)` from a service's /health body: the store checks that are not ok."""
    found = re.finditer(r'"([\w-]+)":"((?:error|fail)[^"]*)"', body)
    bad = list(dict.fromkeys(f"{m.group(1)}: {m.group(2)}" for m in found if m.group(1) != "status"))
    return f" ({'; '.join(bad)[:160]})" if bad else ""


HEALTH_SCRIPT = """for hp in {ports}; do
  code=$(curl -s -o /dev/null -m 5 -w '%{{http_code}}' http://$hp/health || true)
  echo "${{hp##*:}} $code"
done
"""


def health_script(phase: Phase, spec: ContainerSpec) -> str:
    """HEALTH_SCRIPT for the services on `spec`, each probed where it listens (`<port> <code>` lines)."""
    services = phase.services_on(spec.vmid)
    targets = [f"{probe_address(phase, spec, name)}:{svc.port}" for name, svc in services.items()]
    return HEALTH_SCRIPT.format(ports=" ".join(shlex.quote(t) for t in targets))


PM2_STATES = f"cd / && {pm2.STATES} 2>/dev/null || true\n"
