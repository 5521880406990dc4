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


# PM2 runs a service's instances in cluster mode: its master hands each new connection to the next
# instance in turn, and a kept-alive connection stays on one instance. One GET /health therefore speaks
# for one instance only (an instance still waiting to reconnect to its broker answers 503 while the
# others answer 200). The probe opens a new connection per request (Connection: close) and asks
# REQUESTS_PER_INSTANCE times per instance, so that every instance answers even when another client's
# connections come in between; the first answer that is not 200 is the service's.
REQUESTS_PER_INSTANCE = 2

EVERY_INSTANCE = r"""health_of_every_instance() {  # HOST PORT REQUESTS [body]
  # -> the first code that is not 200 (else 200; 000: no answer), with `body` then <TAB> and its body
  local out=/dev/null dir="" codes c n=0 pick=0 code=""
  if [ -n "${4:-}" ]; then
    dir=$(mktemp -d) || return 1
    out="$dir/#1"
  fi
  codes=$(curl -s --fail-early -m 10 -H 'Connection: close' -w '%{http_code}\n' -o "$out" \
    "http://$1:$2/health?probe=[1-$3]")
  for c in $codes; do
    n=$((n + 1)); pick=$n; code=$c
    [ "$c" = 200 ] || break
  done
  if [ -z "$dir" ]; then
    echo "${code:-000}"
  else
    printf '%s\t%s\n' "${code:-000}" "$(tr '\t\n' '  ' < "$dir/$pick" 2>/dev/null)"
    rm -rf "$dir"
  fi
}"""


HTTP_PROBE = r"""http() {  # NAME PORT HOST REQUESTS -> http:NAME<TAB>code<TAB>body
  printf 'http:%s\t%s\n' "$1" "$(health_of_every_instance "$3" "$2" "$4" body | cut -c1-300)"
}"""


def requests_for(instances: int) -> int:
    """How many GET /health reach every one of `instances` instances (see EVERY_INSTANCE)."""
    return REQUESTS_PER_INSTANCE * max(1, instances)


def probes(services: Mapping[str, tuple[int, int]], hosts: Mapping[str, str] | None = None) -> list[str]:
    """The PM2 probe, then GET /health of every instance of each service (name -> (port, instances)) on
    hosts[name], else loopback."""
    where = hosts or {}
    return [PM2_PROBE, EVERY_INSTANCE, HTTP_PROBE] + [
        f"http {shlex.quote(name)} {int(port)} {shlex.quote(where.get(name, '127.0.0.1'))} {requests_for(n)}"
        for name, (port, n) in sorted(services.items())]


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


HEALTH_LOOP = """for target in {targets}; do  # host:port:requests
  host=${{target%%:*}}; port=${{target#*:}}; requests=${{port#*:}}; port=${{port%%:*}}
  echo "$port $(health_of_every_instance "$host" "$port" "$requests")"
done
"""


def health_script(phase: Phase, spec: ContainerSpec) -> str:
    """The probe of the services on `spec`, every instance where it listens: `<port> <code>` lines (the
    first answer that is not 200, else 200)."""
    services = phase.services_on(spec.vmid)
    targets = [f"{probe_address(phase, spec, name)}:{svc.port}:{requests_for(svc.instances)}"
               for name, svc in services.items()]
    return EVERY_INSTANCE + "\n" + HEALTH_LOOP.format(targets=" ".join(shlex.quote(t) for t in targets))


PM2_STATES = f"cd / && {pm2.STATES} 2>/dev/null || true\n"
