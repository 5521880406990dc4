"""Guest scripts that put a set's artifacts back on a restored container (the reverse of stores.py).

Each artifact is first streamed from the repository host into ARRIVAL on the container and checked
against the manifest's sha256 there (`arrived`); only then does the store's script replace its data.
"""

from __future__ import annotations

import json
import shlex

from ...sensitive import Sensitive
from ..rabbitmq import UNIT as RABBITMQ_UNIT
from ..rabbitmq import mover as rabbitmq_mover
from ..redis import UNIT as REDIS_UNIT

ARRIVAL = "/var/tmp/psa-restore"
REDIS_CONF = "/etc/redis/redis.conf"


def arrival(store: str, name: str) -> str:
    return f"{ARRIVAL}/{store}-{name}"


def receive(path: str) -> str:
    """Bash on the container: stdin into `path` (directory made first)."""
    return f"set -euo pipefail\ninstall -d -m 0700 {shlex.quote(ARRIVAL)}\ncat > {shlex.quote(path)}\n"


def arrived(path: str, sha256: str, size: int) -> str:
    """Bash: fail naming the file unless it has the manifest's size and sha256."""
    p = shlex.quote(path)
    return (f"set -euo pipefail\nsize=$(stat -c %s {p})\nsum=$(sha256sum {p} | cut -d' ' -f1)\n"
            f"[ \"$size\" = {size} ] || {{ echo \"{path}: $size bytes arrived, manifest: {size}\" >&2\n"
            "  exit 1; }\n"
            f"[ \"$sum\" = {sha256} ] || {{ echo \"{path}: sha256 $sum, the manifest says {sha256}\" >&2\n"
            "  exit 1; }\n")


def redis(path: str, password: str) -> tuple[str, Sensitive]:
    """Stop Redis, the RDB in place, the AOF set aside; start without AOF (so the RDB is what loads),
    then switch AOF on (Redis rewrites it from the loaded data) and wait for that rewrite."""
    script = f"""set -euo pipefail
IFS= read -r REDISCLI_AUTH; export REDISCLI_AUTH
r() {{ redis-cli --no-auth-warning -h 127.0.0.1 "$@"; }}
systemctl stop {REDIS_UNIT}
rm -rf /var/lib/redis/appendonlydir /var/lib/redis/appendonly.aof
install -m 0660 -o redis -g redis {shlex.quote(path)} /var/lib/redis/dump.rdb
sed -i 's/^appendonly yes/appendonly no/' {REDIS_CONF}
systemctl start {REDIS_UNIT}
for _ in $(seq 1 300); do r PING 2>/dev/null | grep -qx PONG && break; sleep 0.2; done
sed -i 's/^appendonly no/appendonly yes/' {REDIS_CONF}
r CONFIG SET appendonly yes >/dev/null
for _ in $(seq 1 3000); do
  r INFO persistence | tr -d '\\r' | grep -qx 'aof_rewrite_in_progress:0' && \\
    r INFO persistence | tr -d '\\r' | grep -qx 'aof_enabled:1' && exit 0
  sleep 0.2
done
echo 'Redis did not finish rewriting its AOF from the restored RDB' >&2
exit 1
"""
    return script, Sensitive(password + "\n", [password])


def rabbitmq(path: str) -> str:
    """Import the definitions (users, vhosts, queues, exchanges, bindings, policies). Messages are not
    in a set: queues come back empty, their depths at backup time are in the manifest."""
    # on stdin, as the mover imports them: rabbitmqctl runs as the rabbitmq user, which may not read
    # the arrival directory (root's, 0700)
    return (f"set -euo pipefail\nsystemctl start {RABBITMQ_UNIT}\n"
            f"{rabbitmq_mover.IMPORT.rstrip()} < {shlex.quote(path)}\n")


# queue arguments only a quorum queue takes (RabbitMQ's quorum queue guide): a classic queue refuses them
QUORUM_ONLY = ("x-queue-type", "x-quorum-initial-group-size", "x-delivery-limit", "x-dead-letter-strategy",
               "x-max-in-memory-length", "x-max-in-memory-bytes")


def classic_queues(definitions: str) -> str:
    """RabbitMQ definitions with each quorum queue made a classic one, for a restore into standalone
    copies (phase 3's set into phase 1's layout): the app copy declares its queues as phase 1 does,
    classic, and a declare of another type than the queue's is refused (PRECONDITION_FAILED); on a
    single node a quorum queue would protect nothing more. Everything else as exported."""
    data = json.loads(definitions)
    for queue in data.get("queues", []):
        arguments = queue.get("arguments") or {}
        if arguments.get("x-queue-type") == "quorum":
            queue["arguments"] = {k: v for k, v in arguments.items() if k not in QUORUM_ONLY}
    return json.dumps(data)


def rabbitmq_stdin() -> str:
    """As `rabbitmq`, the definitions on the script's stdin (classic_queues' output)."""
    return f"set -euo pipefail\nsystemctl start {RABBITMQ_UNIT}\n{rabbitmq_mover.IMPORT}"


def clean() -> str:
    return f"rm -rf {shlex.quote(ARRIVAL)}\n"
