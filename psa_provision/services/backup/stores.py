"""What a backup set holds of each store besides PostgreSQL, as guest scripts; shipped to the repository.

Each producer leaves one file at a path on its container and prints nothing else; `ship` then
checksums it there, streams it through the tool host into the set on the repository host, checksums
it on arrival and compares (a stream cut short or damaged in transit fails the backup). Redis: an RDB
snapshot taken with BGSAVE and waited for (LASTSAVE moves, status ok), pinned with a hard link while
it is copied. RabbitMQ: definitions, with the message count of each queue. Elasticsearch: a snapshot
into a location of the set's own, each member's part of it as a tar (elasticsearch/snapshot.py). App and
config: one tarball.
"""

from __future__ import annotations

import json
import posixpath
import shlex
from dataclasses import dataclass
from typing import Any

from ...errors import GuestError
from ...sensitive import Sensitive
from ...ssh import Connection
from ..app import APP_DIR, ECOSYSTEM_FILE, ENV_FILE
from ..elasticsearch import snapshot as es_snapshot
from ..rabbitmq import VHOST
from .manifest import Artifact, set_dir

REDIS_PIN = "/var/lib/redis/.psa-backup.rdb"  # same filesystem as dump.rdb: a hard link, no copy
REDIS_WAIT_S = 600
CONFIG_DIRS = ("etc/postgresql", "etc/redis", "etc/rabbitmq", "etc/elasticsearch", "etc/pgbackrest")


@dataclass(frozen=True)
class Producer:
    """A guest script that leaves the artifact at `path` (and may print JSON detail on stdout)."""

    store: str
    name: str  # file name inside the set (under the store's directory)
    script: str
    path: str
    stdin: Sensitive | None = None


def redis(password: str) -> Producer:
    """BGSAVE once no save runs, wait until LASTSAVE moves, check the status, pin dump.rdb."""
    script = f"""set -euo pipefail
IFS= read -r REDISCLI_AUTH; export REDISCLI_AUTH
r() {{ redis-cli --no-auth-warning -h 127.0.0.1 "$@"; }}
info() {{ r INFO persistence | tr -d '\\r' | sed -n "s/^$1://p"; }}
deadline=$((SECONDS + {REDIS_WAIT_S}))
while [ "$(info rdb_bgsave_in_progress)" != 0 ]; do
  [ $SECONDS -lt $deadline ] || {{ echo "a running BGSAVE did not end in {REDIS_WAIT_S} s" >&2; exit 1; }}
  sleep 0.2
done
before=$(r LASTSAVE)
r BGSAVE >/dev/null
while [ "$(r LASTSAVE)" = "$before" ] || [ "$(info rdb_bgsave_in_progress)" != 0 ]; do
  [ $SECONDS -lt $deadline ] || {{ echo "BGSAVE did not finish in {REDIS_WAIT_S} s" >&2; exit 1; }}
  sleep 0.2
done
[ "$(info rdb_last_bgsave_status)" = ok ] || {{ echo "BGSAVE failed (rdb_last_bgsave_status)" >&2; exit 1; }}
dir=$(r CONFIG GET dir | sed -n 2p); file=$(r CONFIG GET dbfilename | sed -n 2p)
ln -f "$dir/$file" {REDIS_PIN}
printf '{{"lastsave": %s, "keys": %s}}\\n' "$(r LASTSAVE)" "$(r DBSIZE)"
"""
    return Producer("redis", "dump.rdb", script, REDIS_PIN, Sensitive(password + "\n", [password]))


def rabbitmq() -> Producer:
    """Definitions (users, vhosts, queues, exchanges, bindings, policies) and each queue's depth."""
    path = "/var/tmp/psa-backup-rabbitmq.json"
    vhost = shlex.quote(VHOST)
    script = f"""set -euo pipefail
rabbitmqctl -q export_definitions - </dev/null > {path}.tmp
mv -f {path}.tmp {path}
rabbitmqctl -q list_queues -p {vhost} name messages --formatter json </dev/null
"""
    return Producer("rabbitmq", "definitions.json", script, path)


def elasticsearch_part(set_id: str, hostname: str, members: int) -> Producer:
    """One member's part of the set's Elasticsearch snapshot (elasticsearch/snapshot.py), as a tar."""
    path = "/var/tmp/psa-backup-elasticsearch.tar"
    return Producer("elasticsearch", es_snapshot.part_name(hostname, members),
                    es_snapshot.pack(set_id, path), path)


def app_and_config() -> Producer:
    """The app's source and .env, the PM2 file and the stores' configuration (what exists here)."""
    path = "/var/tmp/psa-backup-app-config.tar.gz"
    app = APP_DIR.lstrip("/")
    items = [f"{app}/services", f"{app}/shared", ENV_FILE.lstrip("/"), ECOSYSTEM_FILE.lstrip("/"),
             *CONFIG_DIRS]
    script = f"""set -euo pipefail
umask 077
cd /
have=(); for p in {' '.join(shlex.quote(i) for i in items)}; do [ -e "$p" ] && have+=("$p"); done
tar -czf {path} --exclude=node_modules --exclude=dist "${{have[@]}}"
"""
    return Producer("app", "app-config.tar.gz", script, path)


def ship(src: Connection, producer: Producer, repo: Connection, set_id: str) -> Artifact:
    """Produce on `src`, checksum there, stream into the set on `repo`, checksum on arrival, compare."""
    made = src.run(producer.script, stdin=producer.stdin)
    path = shlex.quote(producer.path)
    size, sha = _sum(src.run(f"stat -c %s {path} && sha256sum {path} | cut -d' ' -f1").stdout)
    rel = f"{producer.store}/{producer.name}"
    final = f"{set_dir(set_id)}/{rel}"
    part = shlex.quote(final + ".part")
    sink = (f"set -euo pipefail\ninstall -d -m 0700 {shlex.quote(posixpath.dirname(final))}\n"
            f"cat > {part}\nsync {part}\nstat -c %s {part}\nsha256sum {part} | cut -d' ' -f1\n"
            f"mv -f {part} {shlex.quote(final)}\n")
    try:
        streamed = src.stream_to(f"cat {path}\n", repo, sink)
    finally:
        src.run(f"rm -f {path}", check=False)
    got = _sum(streamed.target.stdout)
    if got != (size, sha):
        raise GuestError(f"{producer.store}: {rel} arrived as {got[0]} bytes sha256 {got[1][:12]}..., "
                         f"left {src.host} as {size} bytes sha256 {sha[:12]}...",
                         hint="the transfer was damaged; run the backup again")
    return Artifact(producer.store, rel, size, sha, _detail(made.stdout))


def _sum(text: str) -> tuple[int, str]:
    lines = text.split()
    if len(lines) < 2 or not lines[-2].isdigit():
        raise GuestError(f"expected `<bytes> <sha256>`, got: {text.strip()[:200]}")
    return int(lines[-2]), lines[-1]


def _detail(stdout: str) -> dict[str, Any]:
    """The producer's JSON detail (all it printed, else its last JSON line), e.g. queue depths; {}: none."""
    try:
        whole = json.loads(stdout)
    except ValueError:
        whole = None
    if whole is not None:
        return whole if isinstance(whole, dict) else {"items": whole}
    for line in reversed(stdout.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        return value if isinstance(value, dict) else {"items": value}
    return {}
