"""RabbitMQ mover: definitions (vhosts, exchanges, queues, bindings, policies, parameters) and the
messages still in the queues, the source left intact for a rollback.

Definitions travel with `rabbitmqctl export_definitions -` / `import_definitions` (root's Erlang
cookie: no credentials), minus the users: provisioning created them on the target with the same
passwords, and importing the source's hashes must not touch them. Messages are read on the source
through the management API on loopback with `ackmode: ack_requeue_true` (each comes back to its
place; only its redelivered flag changes) and published on the target, in order, through a
temporary fanout exchange bound to that one queue, so each keeps its routing key and properties.
The admin password reaches curl in a config on stdin (services.mover.http), never argv. The writers are
quiesced, so depths are stable; a queue's messages are held in memory on the tool host while they
move (a backlog of the app's size, not millions).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from psa_provision.errors import GuestError
from psa_provision.secrets import Secrets
from psa_provision.services.mover import Check, CopyMover, Request, compare, http
from psa_provision.ssh import Connection

from . import ADMIN, ADMIN_SECRET, API

TEMP_EXCHANGE = "psa-provision.move"
PUBLISH_BATCH = 500
# what a definitions import carries; users stay as provisioning made them, global parameters
# (cluster_name) belong to the node
CARRIED = ("vhosts", "permissions", "topic_permissions", "parameters", "policies", "queues", "exchanges",
           "bindings")
COMPARED = ("vhosts", "exchanges", "queues", "bindings", "policies", "parameters")
EXPORT = "rabbitmqctl -q export_definitions - </dev/null\n"
IMPORT = "rabbitmqctl -q import_definitions\n"  # JSON on stdin
DEPTHS = ("while IFS= read -r vhost; do\n"  # vhost names on stdin, one a line
          "  printf '%s\\t' \"$vhost\"\n"
          "  rabbitmqctl -q list_queues -p \"$vhost\" name messages --formatter json </dev/null |\n"
          "    tr -d '\\n'\n"
          "  echo\n"
          "done\n")


class RabbitmqMover(CopyMover):
    """Moves RabbitMQ's definitions and queued messages (see the module docstring)."""

    component = "rabbitmq"

    def move(self, src: Connection, dst: Connection, secrets: Secrets, log: Callable[[str], None]) -> None:
        """Empty the target, import the source's definitions (no users), copy every queue's messages."""
        self.discard(dst, secrets, log)
        source = definitions(src)
        known = {u["name"] for u in definitions(dst).get("users", [])}
        dst.run(IMPORT, stdin=json.dumps(portable(source, known)))
        kinds = ("vhosts", "exchanges", "queues", "bindings", "policies")
        log(f"rabbitmq: definitions imported on {dst.host}: "
            + ", ".join(f"{len(source.get(k, []))} {k}" for k in kinds))
        total = 0
        for (vhost, queue), depth in sorted(depths(src, source).items()):
            if depth:
                total += copy_queue(src, dst, secrets, vhost, queue, depth)
        log(f"rabbitmq: {total} messages copied to {dst.host} (source queues left as they were)")

    def verify(self, src: Connection, dst: Connection, secrets: Secrets) -> list[Check]:
        """Definitions per kind (count + digest), every queue's depth, and for a queue holding messages an
        md5 over them in order (routing key, properties, payload; read with requeue, both sides)."""
        source, target = definitions(src), definitions(dst)
        src_depths, dst_depths = depths(src, source), depths(dst, target)
        out = checks(source, src_depths, target, dst_depths)
        for (vhost, queue), depth in sorted(src_depths.items()):
            if depth and dst_depths.get((vhost, queue)) == depth:  # else the depth check already fails
                out.append(Check(f"rabbitmq messages {vhost} {queue}",
                                 messages_digest(read_messages(src, secrets, vhost, queue, depth)),
                                 messages_digest(read_messages(dst, secrets, vhost, queue, depth))))
        return out

    def discard(self, dst: Connection, secrets: Secrets, log: Callable[[str], None]) -> None:
        """Delete dst's queues, exchanges (but the built-in ones), policies, parameters and vhosts but "/"."""
        defs = definitions(dst)
        requests = discard_requests(defs)
        log(f"rabbitmq: deleting {len(requests)} definitions on {dst.host}")
        for code, body in api(dst, secrets, requests):
            if code not in (200, 201, 204, 404):
                raise GuestError(f"{dst.host}: RabbitMQ refused a delete (HTTP {code}): {body[:300]}")


def definitions(conn: Connection) -> dict[str, Any]:
    """`rabbitmqctl export_definitions` as a dict (users' password hashes included: never printed)."""
    data = json.loads(conn.run(EXPORT).stdout)
    assert isinstance(data, dict)
    return data


def portable(defs: dict[str, Any], users: set[str]) -> dict[str, Any]:
    """What the target imports: no users, permissions only for users the target has."""
    out = {k: defs.get(k, []) for k in CARRIED}
    for key in ("permissions", "topic_permissions"):
        out[key] = [p for p in out[key] if p.get("user") in users]
    return out


def depths(conn: Connection, defs: dict[str, Any]) -> dict[tuple[str, str], int]:
    """(vhost, queue) -> messages (ready + unacknowledged) in the vhosts of `defs`, from rabbitmqctl
    (the management API's figures lag by its stats interval)."""
    vhosts = "".join(v["name"] + "\n" for v in defs.get("vhosts", []))
    return parse_depths(conn.run(DEPTHS, stdin=vhosts).stdout) if vhosts else {}


def parse_depths(text: str) -> dict[tuple[str, str], int]:
    """DEPTHS' output: `VHOST<TAB>[{"name":..,"messages":..},...]` per line."""
    out: dict[tuple[str, str], int] = {}
    for line in text.splitlines():
        vhost, sep, rows = line.partition("\t")
        if sep and rows.strip():
            for row in json.loads(rows):
                out[(vhost, row["name"])] = int(row["messages"])
    return out


def canonical(defs: dict[str, Any], kind: str) -> str:
    """`N, md5 X` over the sorted JSON of one kind of definition (volatile fields dropped)."""
    items = sorted(json.dumps({k: v for k, v in item.items() if k not in ("metadata", "limits")},
                              sort_keys=True) for item in defs.get(kind, []))
    digest = hashlib.md5("\n".join(items).encode(), usedforsecurity=False).hexdigest()
    return f"{len(items)}, md5 {digest}"


def checks(src_defs: dict[str, Any], src_depths: dict[tuple[str, str], int], dst_defs: dict[str, Any],
           dst_depths: dict[tuple[str, str], int]) -> list[Check]:
    """Definitions per kind, then one Check per queue's depth."""
    out = [Check(f"rabbitmq {kind}", canonical(src_defs, kind), canonical(dst_defs, kind))
           for kind in COMPARED]

    def named(d: dict[tuple[str, str], int]) -> dict[str, str]:
        return {f"{vhost} {queue}": f"{n} messages" for (vhost, queue), n in d.items()}

    return out + compare("rabbitmq queue", named(src_depths), named(dst_depths))


# -- management API through curl -K - ------------------------------------------------------------------
def api(conn: Connection, secrets: Secrets, requests: list[Request]) -> list[tuple[int, str]]:
    """Management API requests on conn's loopback as the admin; (code, body) each."""
    return http(conn, API, requests, auth=(ADMIN, secrets.get(ADMIN_SECRET).value))


def path(*parts: str) -> str:
    """An API path with every part percent-encoded ('/' vhost -> %2F)."""
    return "/" + "/".join(quote(p, safe="") for p in parts)


def discard_requests(defs: dict[str, Any]) -> list[Request]:
    """DELETE requests that empty a broker of the app's definitions (users and "/" stay)."""
    out: list[Request] = []
    for q in defs.get("queues", []):
        out.append(("DELETE", path("queues", q["vhost"], q["name"]), None))
    for e in defs.get("exchanges", []):
        if e["name"] and not e["name"].startswith("amq."):
            out.append(("DELETE", path("exchanges", e["vhost"], e["name"]), None))
    for p in defs.get("policies", []):
        out.append(("DELETE", path("policies", p["vhost"], p["name"]), None))
    for p in defs.get("parameters", []):
        out.append(("DELETE", path("parameters", p["component"], p["vhost"], p["name"]), None))
    for v in defs.get("vhosts", []):
        if v["name"] != "/":
            out.append(("DELETE", path("vhosts", v["name"]), None))
    return out


def read_messages(conn: Connection, secrets: Secrets, vhost: str, queue: str,
                  depth: int) -> list[dict[str, Any]]:
    """The first `depth` messages of a queue, each put back in its place (ack_requeue_true)."""
    body = {"count": depth, "ackmode": "ack_requeue_true", "encoding": "base64", "truncate": 2**31 - 1}
    [(code, text)] = api(conn, secrets, [("POST", path("queues", vhost, queue, "get"), body)])
    if code != 200:
        raise GuestError(f"{conn.host}: reading queue {queue} failed (HTTP {code}): {text[:300]}")
    messages: list[dict[str, Any]] = json.loads(text)
    if len(messages) != depth:
        raise GuestError(f"{conn.host}: queue {queue} gave {len(messages)} of {depth} messages")
    return messages


def messages_digest(messages: list[dict[str, Any]]) -> str:
    """`N, md5 X` over the messages in order: routing key, properties and payload of each."""
    digest = hashlib.md5(usedforsecurity=False)
    for m in messages:
        digest.update(json.dumps([m["routing_key"], m.get("properties", {}), m["payload"]],
                                 sort_keys=True).encode() + b"\n")
    return f"{len(messages)}, md5 {digest.hexdigest()}"


def copy_queue(src: Connection, dst: Connection, secrets: Secrets, vhost: str, queue: str, depth: int,
               *, into: str | None = None) -> int:
    """Read `depth` messages (requeued) from src's queue, publish them in order into dst's queue (the
    same name, or `into`)."""
    messages = read_messages(src, secrets, vhost, queue, depth)
    queue = into or queue
    setup = [("PUT", path("exchanges", vhost, TEMP_EXCHANGE),
              {"type": "fanout", "durable": False, "auto_delete": False, "internal": False, "arguments": {}}),
             ("POST", path("bindings", vhost, "e", TEMP_EXCHANGE, "q", queue),
              {"routing_key": "", "arguments": {}})]
    _expect(dst, api(dst, secrets, setup), "set up the temporary exchange")
    publish = path("exchanges", vhost, TEMP_EXCHANGE, "publish")
    for start in range(0, len(messages), PUBLISH_BATCH):
        batch = [("POST", publish, publish_body(m)) for m in messages[start:start + PUBLISH_BATCH]]
        answers = api(dst, secrets, batch)
        _expect(dst, answers, f"publish into {queue}")
        if any(json.loads(text).get("routed") is not True for _, text in answers):
            raise GuestError(f"{dst.host}: a message for {queue} was not routed")
    _expect(dst, api(dst, secrets, [("DELETE", path("exchanges", vhost, TEMP_EXCHANGE), None)]),
            "delete the temporary exchange")
    return len(messages)


def publish_body(message: dict[str, Any]) -> dict[str, Any]:
    """A publish request for a message read with /get (payload base64, routing key and properties kept)."""
    return {"properties": message.get("properties", {}), "routing_key": message["routing_key"],
            "payload": message["payload"], "payload_encoding": message.get("payload_encoding", "base64")}


def _expect(conn: Connection, answers: list[tuple[int, str]], what: str) -> None:
    bad = [(code, body) for code, body in answers if code not in (200, 201, 204)]
    if bad:
        raise GuestError(f"{conn.host}: RabbitMQ API: {what} failed (HTTP {bad[0][0]}): {bad[0][1][:300]}")


MOVER = RabbitmqMover()
