"""The drill's Redis writer (phase 3): bash for a surviving member of the replicated set, and what its
output says (pure).

The writer runs detached on a Redis member (it has redis-cli, and the members reach each other's Redis
and Sentinel ports), bounded in rate, count and time, and stops by itself. It writes unique keys
`drill:<run>:wait:<n>` and `drill:<run>:nowait:<n>` alternately to the primary the Sentinels name
(`SENTINEL get-master-addr-by-name`, asked again after any write whose SET did not answer OK):
- with WAIT: `SET` then `WAIT 1 <ms>` on one connection, acknowledged when SET answered OK and WAIT
  counted at least one replica. `CLIENT ID` before and after shows they shared the connection:
  redis-cli reading commands from stdin reconnects after an error, and a WAIT on a new connection
  has no write of its own to wait for, so it would count every replica;
- without WAIT: acknowledged on SET's OK.
After the drill, `collect` stops it, prints its record and the drill's keys the current primary holds
(SCAN on the primary: a replica may lag). The password reaches redis-cli in REDISCLI_AUTH, read from
the script's stdin, never argv. Every key expires after KEY_TTL_S. ASK_PRIMARY is how the drill finds
the primary it stops (Sentinel has requirepass: an unauthenticated question gets NOAUTH).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from . import MASTER_NAME, SENTINEL_PORT

KEY_TTL_S = 3600
WAIT_MS = 1000
COMMAND_TIMEOUT_S = 5  # one write (connect, SET, WAIT) or one Sentinel question at most
STORES = ("wait", "nowait")
MARK_WRITES, MARK_PRIMARY, MARK_HELD, MARK_SCAN_FAILED = "@@writes", "@@primary", "@@held", "@@scan-failed"
AUTH = "IFS= read -r REDISCLI_AUTH\nexport REDISCLI_AUTH\n"  # the password from stdin's first line
_PRIMARY = re.compile(r"^\d{1,3}(\.\d{1,3}){3}:\d+$")

# bash: the primary's address and port as the guest's own Sentinel names them (password: stdin's first line)
ASK_PRIMARY = (f"{AUTH}exec redis-cli -h 127.0.0.1 -p {SENTINEL_PORT} --no-auth-warning "
               f"SENTINEL get-master-addr-by-name {MASTER_NAME}\n")


def sentinel_addresses(addresses: list[str]) -> list[str]:
    """`host:port` of each member's Sentinel, from the members' addresses."""
    return [f"{a}:{SENTINEL_PORT}" for a in addresses]


def run_dir(run: str, base: str = "/run") -> str:
    """Where the writer keeps its script, record and stop file on the guest (tmpfs, root's)."""
    if not re.fullmatch(r"[0-9a-z]+", run):
        raise ValueError(f"a drill's run is lowercase letters and digits, not {run!r}")
    return f"{base}/psa-drill-redis-{run}"


def key(run: str, store: str, n: int) -> str:
    return f"drill:{run}:{store}:{n}"


def _discover(sentinels: list[str]) -> str:
    """bash: `discover` sets $primary (address) and $pport from the first Sentinel (`host:port`) that
    names an IPv4 address and a port; $primary "" when none does."""
    ask = (f"timeout {COMMAND_TIMEOUT_S} redis-cli -h \"${{s%:*}}\" -p \"${{s##*:}}\" --no-auth-warning "
           f"SENTINEL get-master-addr-by-name {MASTER_NAME} 2>/dev/null | tr -d '\\r' | paste -sd ' '")
    return f"""sentinels=({' '.join(shlex.quote(s) for s in sentinels)})
discover() {{
  primary=""
  pport=""
  local s a
  for s in "${{sentinels[@]}}"; do
    a=$({ask})
    if [[ $a =~ ^([0-9]+\\.[0-9]+\\.[0-9]+\\.[0-9]+)[[:space:]]([0-9]+)$ ]]; then
      primary=${{BASH_REMATCH[1]}}
      pport=${{BASH_REMATCH[2]}}
      return 0
    fi
  done
  return 1
}}
"""


def writer_script(run: str, sentinels: list[str], *, rate: float, max_seconds: float, max_writes: int,
                  base: str = "/run") -> str:
    """bash run with the password as stdin's first line: starts the writer detached and returns.

    The writer writes at most `rate` keys a second, alternately with and without WAIT, and stops at
    the stop file, after `max_seconds` or after `max_writes` writes (and `timeout` kills it a little
    later whatever happens). Its record: a `start <µs>` line, then per write
    `<store>\\t<n>\\t<sent µs>\\t<answered µs>\\t<primary>\\t<replies joined by |>`.
    """
    d = run_dir(run, base)
    interval_us = max(1, int(1_000_000 / rate))
    q = shlex.quote
    ttl, wait_ms, t = KEY_TTL_S, WAIT_MS, COMMAND_TIMEOUT_S
    body = f"""set -u
export LC_ALL=C
d={q(d)}
{_discover(sentinels)}now() {{ echo "${{EPOCHREALTIME/./}}"; }}
trap 'touch "$d/done"' EXIT
start=$(now)
echo "start $start"
deadline=$((start + {int(max_seconds * 1_000_000)}))
next=$start
primary=""
n=0
while [ ! -e "$d/stop" ] && [ "$n" -lt {int(max_writes)} ] && [ "$(now)" -lt "$deadline" ]; do
  n=$((n + 1))
  if [ $((n % 2)) -eq 1 ]; then store=wait; else store=nowait; fi
  k="drill:{run}:$store:$n"
  [ -n "$primary" ] || discover
  sent=$(now)
  out=""
  if [ -n "$primary" ]; then
    if [ "$store" = wait ]; then
      out=$(printf 'CLIENT ID\\nSET %s %s EX {ttl}\\nWAIT 1 {wait_ms}\\nCLIENT ID\\n' "$k" "$n" |
            timeout {t} redis-cli -h "$primary" -p "$pport" 2>/dev/null)
    else
      out=$(timeout {t} redis-cli -h "$primary" -p "$pport" SET "$k" "$n" EX {ttl} 2>/dev/null)
    fi
  fi
  out=${{out//$'\\r'/}}
  flat=${{out//$'\\n'/|}}
  printf '%s\\t%s\\t%s\\t%s\\t%s\\t%s\\n' "$store" "$n" "$sent" "$(now)" "$primary:$pport" "$flat"
  case "|$flat|" in *"|OK|"*) ;; *) primary="" ;; esac
  next=$((next + {interval_us}))
  rest=$((next - $(now)))
  if [ "$rest" -gt 0 ]; then
    sleep "$((rest / 1000000)).$(printf '%06d' $((rest % 1000000)))"
  else
    next=$(now)
  fi
done
"""
    hard = int(max_seconds) + 30
    return f"""set -eu
{AUTH}d={q(d)}
rm -rf "$d"
mkdir -m 700 "$d"
cat > "$d/writer.sh" <<'PSA_DRILL_WRITER'
{body}PSA_DRILL_WRITER
setsid -f timeout -k 5 {hard} bash "$d/writer.sh" </dev/null >"$d/out" 2>"$d/err"
echo started
"""


def stop_script(run: str, base: str = "/run") -> str:
    """bash: ask the writer to stop (it finishes its write in flight)."""
    d = shlex.quote(run_dir(run, base))
    return f"[ -d {d} ] && touch {d}/stop\ntrue\n"


def collect_script(run: str, sentinels: list[str], *, wait_s: int = 30, base: str = "/run") -> str:
    """bash run with the password as stdin's first line: stop the writer, wait up to `wait_s` for it,
    print its record, the primary the Sentinels name now and the drill's keys it holds; then remove
    the writer's directory."""
    d = shlex.quote(run_dir(run, base))
    return f"""set -u
export LC_ALL=C
{AUTH}d={d}
touch "$d/stop" 2>/dev/null
for _ in $(seq 1 {wait_s * 2}); do [ -e "$d/done" ] && break; sleep 0.5; done
{_discover(sentinels)}echo {MARK_WRITES}
cat "$d/out" 2>/dev/null
discover
echo {MARK_PRIMARY}
echo "$primary:$pport"
echo {MARK_HELD}
if [ -z "$primary" ] || ! timeout 120 redis-cli -h "$primary" -p "$pport" --scan \\
    --pattern {shlex.quote(f"drill:{run}:*")} 2>/dev/null; then
  echo {MARK_SCAN_FAILED}
fi
rm -rf "$d"
"""


@dataclass(frozen=True)
class Write:
    """One write as the writer made it: store (wait, nowait), key, sent and answered (µs since the
    writer started), the primary it went to, acknowledged."""

    store: str
    key: str
    sent_us: int
    answered_us: int
    primary: str
    acked: bool


@dataclass(frozen=True)
class Collected:
    """The writer's record and, when the primary could be read, the drill's keys it holds."""

    writes: list[Write]
    primary: str
    held: set[str] | None


def acknowledged(store: str, replies: list[str]) -> bool:
    """Whether a write counts as acknowledged: without WAIT, SET answered OK; with WAIT, SET answered
    OK and WAIT at least one replica, both on the same connection (the same CLIENT ID around them)."""
    if store == "nowait":
        return replies == ["OK"]
    if len(replies) != 4:
        return False
    before, answer, replicas, after = replies
    return (before.isdigit() and before == after and answer == "OK" and replicas.isdigit()
            and int(replicas) >= 1)


def parse_record(run: str, text: str) -> list[Write]:
    """The writer's record (writer_script's format); lines it did not write are skipped."""
    start: int | None = None
    out: list[Write] = []
    for line in text.splitlines():
        if line.startswith("start ") and start is None:
            value = line.split()[1]
            start = int(value) if value.isdigit() else None
            continue
        parts = line.split("\t", 5)
        if start is None or len(parts) != 6 or parts[0] not in STORES:
            continue
        store, n, sent, answered, primary, replies = parts
        if not (n.isdigit() and sent.isdigit() and answered.isdigit()):
            continue
        out.append(Write(store, key(run, store, int(n)), int(sent) - start, int(answered) - start,
                         primary if _PRIMARY.match(primary) else "",
                         acknowledged(store, replies.split("|") if replies else [])))
    return out


def parse_collected(run: str, text: str) -> Collected:
    """collect_script's output: the record, the primary, and the keys it holds (None when it could not
    be read: no primary named, or SCAN failed)."""
    sections: dict[str, list[str]] = {MARK_WRITES: [], MARK_PRIMARY: [], MARK_HELD: []}
    current: list[str] | None = None
    for line in text.splitlines():
        if line in sections:
            current = sections[line]
        elif current is not None:
            current.append(line)
    primary = next((p.strip() for p in sections[MARK_PRIMARY] if _PRIMARY.match(p.strip())), "")
    held_lines = sections[MARK_HELD]
    readable = bool(primary) and MARK_HELD in text and MARK_SCAN_FAILED not in held_lines
    prefix = f"drill:{run}:"
    held = {k.strip() for k in held_lines if k.strip().startswith(prefix)} if readable else None
    return Collected(parse_record(run, "\n".join(sections[MARK_WRITES])), primary, held)
