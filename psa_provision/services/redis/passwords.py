"""The Redis password of a replicated set (phase 3): how the plan tells a wrong one without seeing it,
and the live steps that move every Redis and Sentinel of the set to a new one, none locked out.

Four places hold it on each member: redis.conf's `requirepass` and `masterauth`, sentinel.conf's
`requirepass` (clients and the other Sentinels authenticate with it) and `sentinel auth-pass` (what
the Sentinel authenticates to the Redis servers with). The facts carry each as a digest: the guest
reads the value from its file as Redis parses it (the double quotes and \\ \\xHH escapes CONFIG
REWRITE writes undone, the last line wins; a phase-3 password holds no other quote nor white space,
sentinel.check_password) and prints sha256(SALT + value), 32 hex digits; the planner compares
digest(the secrets file's value). The value itself never leaves the guest, and a digest is never
part of a plan, a diff or a log. The files speak for the running processes because every live change
below is saved at once (CONFIG REWRITE; Sentinel saves its file on SENTINEL SET) and a Sentinel's
requirepass changes only by a restart with its file.

What Redis 7.0 (Debian 12's 7.0.15) changes live, read in its source (src/commands.c, sentinel.c,
acl.c, config.c):
- a Redis server: CONFIG SET requirepass / masterauth; connections already authenticated stay so.
- a Sentinel: SENTINEL SET <master> auth-pass (it drops its links to the servers, reconnects with the
  new password and saves its file); ACL SETUSER (which passwords it accepts). There is no CONFIG in
  Sentinel mode (CONFIG lacks the SENTINEL flag), so its own `requirepass` is read only at start: it
  is also what it authenticates to the other Sentinels with (sentinelSendAuthIfNeeded), and what it
  writes back into its file on every save. That one setting needs a restart: the file is edited in
  place (only the password lines and the `user default` line that would override requirepass), so
  the primary, replicas, Sentinels and epochs Sentinel saved there survive it.

`rotate-secrets redis` runs ROTATION over every member, one step on all members before the next, one
member at a time: (1) every Redis and Sentinel accepts the new password beside the old one (ACL
SETUSER default >new: a user may have several); (2) the replicas' masterauth and the Sentinels'
auth-pass become the new one; (3) the Redis servers take only the new one; (4) each Sentinel restarts
with it and reaches the quorum again before the next one restarts. With two passwords accepted
everywhere while anyone switches, no replica or Sentinel is refused; at step 4 the Sentinels
restarted and those not yet restarted still form a majority that reach each other. `up` plans the
same changes for a member found with a wrong password (an interrupted rotation, a hand edit): SERVER
and AUTH_PASS_LIVE live, SENTINEL_RESTART for the Sentinel's requirepass; it runs the members side by
side, so only rotate-secrets holds the Sentinels to one restart at a time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from . import CLUSTER_MODE, CONF, MASTER_NAME, PORT, SENTINEL_CONF, SENTINEL_PORT, SENTINEL_UNIT, UNIT

SALT = "psa-provision redis password:"
REQUIREPASS, MASTERAUTH = "requirepass", "masterauth"  # redis.conf
SENTINEL_REQUIREPASS, AUTH_PASS = "sentinel-requirepass", "sentinel-auth-pass"  # sentinel.conf
# digest key -> (the file, the words before the value on its line, as an ERE)
HELD: dict[str, tuple[str, str]] = {
    REQUIREPASS: (CONF, "requirepass"),
    MASTERAUTH: (CONF, "masterauth"),
    SENTINEL_REQUIREPASS: (SENTINEL_CONF, "requirepass"),
    AUTH_PASS: (SENTINEL_CONF, f"sentinel[[:space:]]+auth-pass[[:space:]]+{MASTER_NAME}"),
}
MARK = "@@passwords"


def digest(value: str) -> str:
    """What the facts carry for a password (the probe computes the same on the guest)."""
    return hashlib.sha256((SALT + value).encode()).hexdigest()[:32]


def stale(held: dict[str, str], value: str, keys: Iterable[str]) -> list[str]:
    """The keys whose password on the guest is known and is not `value` (a missing line is drift's)."""
    want = digest(value)
    return [k for k in keys if k in held and held[k] != want]


def parse(text: str) -> dict[str, str]:
    """The probe's `key digest` lines."""
    pairs = (line.split() for line in text.splitlines())
    return {p[0]: p[1] for p in pairs if len(p) == 2 and p[0] in HELD and len(p[1]) == 32}


# bash: a password line's value as Redis's config parser reads it (sdssplitargs): a double-quoted one
# (CONFIG REWRITE writes them so) loses its quotes and its \\ \xHH escapes (printf %b undoes them).
CONF_VALUE = r'''conf_value() {  # FILE ERE: the value of FILE's last `ERE value` line ("" if none)
  local v
  v=$(sed -n -E "s/^[[:space:]]*$2[[:space:]]+(.*[^[:space:]])[[:space:]]*\$/\1/p" "$1" 2>/dev/null |
    tail -n1)
  case $v in \"*\") v=${v#\"}; v=${v%\"}; v=$(printf '%b' "$v") ;; esac
  printf '%s' "$v"
}
'''


def probe() -> str:
    """bash (after CONF_VALUE) printing MARK, then `key digest` per password line found."""
    lines = "".join(f"password_digest {key} {file} '{words}'\n" for key, (file, words) in HELD.items())
    return ("password_digest() {\n  local v\n  v=$(conf_value \"$2\" \"$3\")\n"
            f"  [ -z \"$v\" ] || printf '%s %s\\n' \"$1\" \"$(printf '%s%s' '{SALT}' \"$v\" | sha256sum | "
            "cut -c1-32)\"\n}\n"
            f"echo {MARK}\n{lines}")


# The steps' bash: the new password is stdin's first line; each reaches redis-cli on stdin (-x: as the
# last argument), never argv; redis-cli authenticates with REDISCLI_AUTH from the environment.
HEAD = CONF_VALUE + r'''IFS= read -r NEW
use_password() {  # PORT FILE: REDISCLI_AUTH = what the local server accepts, FILE's password or the new one
  local p
  for p in "$(conf_value "$2" requirepass)" "$NEW"; do
    export REDISCLI_AUTH="$p"
    [ "$(timeout 5 redis-cli -h 127.0.0.1 -p "$1" --no-auth-warning PING 2>/dev/null)" = PONG ] && return 0
  done
  echo "127.0.0.1:$1 accepts neither the password in $2 nor the new one" >&2
  return 1
}
send() {  # PORT PREFIX WORDS...: WORDS plus PREFIX and the new password as last argument; fails unless OK
  local answer
  answer=$(printf '%s%s' "$2" "$NEW" |
           timeout 10 redis-cli -h 127.0.0.1 -p "$1" --no-auth-warning -x "${@:3}" 2>&1) || true
  [ "$answer" = OK ] && return 0
  echo "${*:3} on port $1 answered: ${answer//"$NEW"/***}" >&2
  return 1
}
'''


def _on(unit: str, body: str) -> str:
    return (f"if systemctl is-active -q {unit}; then\n{body}else\n"
            f"  echo '{unit} is not running: up writes its file'\nfi\n")


def _send(port: int, conf: str, prefix: str, words: str) -> str:
    """bash: authenticate to the local server on `port`, then send `words` + prefix + the new password."""
    return f"  use_password {port} {conf}\n  send {port} '{prefix}' {words}\n"


ACCEPT = (HEAD + _on(UNIT, _send(PORT, CONF, ">", "ACL SETUSER default"))
          + _on(SENTINEL_UNIT, _send(SENTINEL_PORT, SENTINEL_CONF, ">", "ACL SETUSER default")))
AUTH_PASS_LIVE = HEAD + _on(SENTINEL_UNIT, _send(SENTINEL_PORT, SENTINEL_CONF, "",
                                                 f"SENTINEL SET {MASTER_NAME} auth-pass"))
SWITCH = (HEAD + _on(UNIT, _send(PORT, CONF, "", "CONFIG SET masterauth"))
          + AUTH_PASS_LIVE.removeprefix(HEAD))
SERVER = HEAD + _on(UNIT, f"""  use_password {PORT} {CONF}
  send {PORT} '' CONFIG SET masterauth
  send {PORT} '' CONFIG SET requirepass
  export REDISCLI_AUTH="$NEW"
  answer=$(timeout 10 redis-cli -h 127.0.0.1 -p {PORT} --no-auth-warning CONFIG REWRITE 2>&1) || true
  [ "$answer" = OK ] || {{ echo "CONFIG REWRITE answered: $answer" >&2; exit 1; }}
""")
# stopped while its file is edited (a running Sentinel saves its file whenever its view changes)
_OWN_LINES = (f"^[[:space:]]*(requirepass|user[[:space:]]+default|sentinel[[:space:]]+auth-pass[[:space:]]+"
              f"{MASTER_NAME})([[:space:]]|$)")
QUORUM_WAIT_S = 30
SENTINEL_RESTART = HEAD + f"""conf={SENTINEL_CONF}
if ! systemctl is-active -q {SENTINEL_UNIT}; then
  echo '{SENTINEL_UNIT} is not running: up writes its file'
  exit 0
fi
systemctl stop {SENTINEL_UNIT}
tmp=$(mktemp "$conf.XXXXXX")
grep -v -E '{_OWN_LINES}' "$conf" >"$tmp" || true
printf 'requirepass %s\\nsentinel auth-pass %s %s\\n' "$NEW" {MASTER_NAME} "$NEW" >>"$tmp"
chown redis:redis "$tmp"
chmod {CLUSTER_MODE:04o} "$tmp"
mv -f "$tmp" "$conf"
systemctl reset-failed {SENTINEL_UNIT} 2>/dev/null || true
systemctl start {SENTINEL_UNIT}
export REDISCLI_AUTH="$NEW"
answer=""
for _ in $(seq 1 {QUORUM_WAIT_S * 2}); do
  answer=$(timeout 5 redis-cli -h 127.0.0.1 -p {SENTINEL_PORT} --no-auth-warning \\
           SENTINEL ckquorum {MASTER_NAME} 2>&1) || true
  case $answer in OK*) echo "{SENTINEL_UNIT} restarted: $answer"; exit 0 ;; esac
  sleep 0.5
done
echo "{SENTINEL_UNIT} restarted but reaches no quorum within {QUORUM_WAIT_S} s: ${{answer:-no answer}}" >&2
exit 1
"""

# rotate-secrets: (what the step does, its script), each run on every member before the next
ROTATION: tuple[tuple[str, str], ...] = (
    ("Redis and Sentinel accept the new password beside the old one (ACL SETUSER default >…)", ACCEPT),
    ("masterauth and Sentinel's auth-pass become the new password (CONFIG SET, SENTINEL SET)", SWITCH),
    ("Redis takes only the new password (CONFIG SET requirepass, CONFIG REWRITE)", SERVER),
    ("Sentinel restarted with the new requirepass (its file edited in place), quorum reached",
     SENTINEL_RESTART),
)
