"""Phase 2 -> 3: each classic queue of the app becomes a quorum queue of the same name, no message lost.

A queue's type is fixed when it is declared, and the app declares its queues by name (a consumer of
phase 3's .env declares x-queue-type quorum and is refused, PRECONDITION_FAILED, while the classic queue
exists). So, on the cluster's seed through the management API on loopback, for each classic queue Q:

1. a quorum queue Q.quorum takes Q's bindings, then Q loses them: new messages wait in Q.quorum;
2. Q's consumers drain it (bounded wait; with no consumer its messages are copied into Q.quorum);
3. Q is deleted and declared again as a quorum queue with its bindings; Q.quorum loses them;
4. Q.quorum's messages are copied into Q (read with requeue, published in order), then Q.quorum goes.

A run killed anywhere is run again from the top: a queue already quorum is left alone, a Q.quorum left
over is finished (steps 3-4). A crash between the copy of step 4 and the delete repeats messages on the
rerun, never loses one (the app's handlers are idempotent). Consumers of phase 2's .env lose their
queue at step 3 and are refused by the quorum queue until their own .env step: their messages wait.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from psa_provision.errors import GuestError
from psa_provision.secrets import Secrets
from psa_provision.ssh import Connection

from .mover import _expect, api, copy_queue, path

TEMP_SUFFIX = ".quorum"
QUORUM = {"durable": True, "auto_delete": False, "arguments": {"x-queue-type": "quorum"}}
DRAIN_S = 120.0
POLL_S = 1.0
REDECLARE_TRIES = 10


def classic_queues(listed: list[dict[str, Any]], vhost: str) -> list[str]:
    """The names of vhost's queues still to make quorum: classic ones, and any left half done (its
    Q.quorum is there), in name order."""
    names = {q["name"]: str(q.get("type", "classic")) for q in listed if q.get("vhost") == vhost}
    out = {n for n, kind in names.items() if kind == "classic" and not n.endswith(TEMP_SUFFIX)}
    out |= {n[:-len(TEMP_SUFFIX)] for n in names if n.endswith(TEMP_SUFFIX)}
    return sorted(out)


def app_bindings(listed: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A queue's bindings but the default exchange's (every queue has it, implicitly)."""
    return [b for b in listed if b.get("source")]


def bind_requests(vhost: str, queue: str, bindings: list[dict[str, Any]]) -> list[tuple[str, str, Any]]:
    return [("POST", path("bindings", vhost, "e", b["source"], "q", queue),
             {"routing_key": b.get("routing_key", ""), "arguments": b.get("arguments") or {}})
            for b in bindings]


def unbind_requests(vhost: str, queue: str, bindings: list[dict[str, Any]]) -> list[tuple[str, str, Any]]:
    return [("DELETE", path("bindings", vhost, "e", b["source"], "q", queue, b["properties_key"]), None)
            for b in bindings]


def _get(conn: Connection, secrets: Secrets, api_path: str) -> tuple[int, Any]:
    [(code, text)] = api(conn, secrets, [("GET", api_path, None)])
    return code, (json.loads(text) if code == 200 and text.strip() else None)


def _queue(conn: Connection, secrets: Secrets, vhost: str, name: str) -> dict[str, Any] | None:
    code, body = _get(conn, secrets, path("queues", vhost, name))
    if code == 404:
        return None
    if code != 200 or not isinstance(body, dict):
        raise GuestError(f"{conn.host}: RabbitMQ API: reading queue {name} failed (HTTP {code})")
    return body


def _bindings(conn: Connection, secrets: Secrets, vhost: str, name: str) -> list[dict[str, Any]]:
    code, body = _get(conn, secrets, path("queues", vhost, name, "bindings"))
    if code == 404:
        return []
    if code != 200 or not isinstance(body, list):
        raise GuestError(f"{conn.host}: RabbitMQ API: reading {name}'s bindings failed (HTTP {code})")
    return app_bindings(body)


def _depth(conn: Connection, secrets: Secrets, vhost: str, name: str) -> tuple[int, int]:
    """(messages ready + unacknowledged, consumers) of a queue, read with rabbitmqctl (the API's
    figures lag by its statistics interval)."""
    out = conn.run(f"rabbitmqctl -q list_queues -p '{vhost}' name messages consumers --formatter json "
                   "</dev/null\n").stdout
    for row in json.loads(out or "[]"):
        if row.get("name") == name:
            return int(row.get("messages", 0)), int(row.get("consumers", 0))
    return 0, 0


def to_quorum(conn: Connection, secrets: Secrets, vhost: str, queue: str,
              log: Callable[[str], None], *, drain_s: float = DRAIN_S) -> None:
    """Queue `queue` of `vhost` made a quorum queue of the same name (module docstring, steps 1-4)."""
    temp = queue + TEMP_SUFFIX
    now = _queue(conn, secrets, vhost, queue)
    if now is not None and now.get("type") == "quorum" and _queue(conn, secrets, vhost, temp) is None:
        return
    bindings = _bindings(conn, secrets, vhost, queue) or _bindings(conn, secrets, vhost, temp)
    if now is not None and now.get("type") != "quorum":
        log(f"rabbitmq: {queue}: new messages go to {temp} (quorum) while its consumers drain it")
        _expect(conn, api(conn, secrets, [("PUT", path("queues", vhost, temp), QUORUM),
                                          *bind_requests(vhost, temp, bindings)]), f"declare {temp}")
        bound = _bindings(conn, secrets, vhost, queue)
        _expect(conn, api(conn, secrets, unbind_requests(vhost, queue, bound)), f"unbind {queue}")
        deadline = time.monotonic() + drain_s
        depth, consumers = _depth(conn, secrets, vhost, queue)
        while depth and consumers and time.monotonic() < deadline:
            time.sleep(POLL_S)
            depth, consumers = _depth(conn, secrets, vhost, queue)
        if depth:
            log(f"rabbitmq: {queue}: {depth} messages left undrained, copied into {temp}")
            copy_queue(conn, conn, secrets, vhost, queue, depth, into=temp)
        _redeclare(conn, secrets, vhost, queue)
    elif now is None:
        _redeclare(conn, secrets, vhost, queue)
    _expect(conn, api(conn, secrets, bind_requests(vhost, queue, bindings)), f"bind {queue}")
    _expect(conn, api(conn, secrets, unbind_requests(vhost, temp, _bindings(conn, secrets, vhost, temp))),
            f"unbind {temp}")
    if _queue(conn, secrets, vhost, temp) is not None:
        left, _ = _depth(conn, secrets, vhost, temp)
        if left:
            copy_queue(conn, conn, secrets, vhost, temp, left, into=queue)
        _expect(conn, api(conn, secrets, [("DELETE", path("queues", vhost, temp), None)]), f"delete {temp}")
        log(f"rabbitmq: {queue} is a quorum queue ({left} messages moved back from {temp})")


def _redeclare(conn: Connection, secrets: Secrets, vhost: str, queue: str) -> None:
    """Delete the classic queue and declare it quorum. A consumer of phase 2's .env may declare it
    classic again in between (it reconnects when its queue goes): then again, a few times."""
    for _ in range(REDECLARE_TRIES):
        now = _queue(conn, secrets, vhost, queue)
        if now is not None and now.get("type") == "quorum":
            return
        if now is not None:
            _expect(conn, api(conn, secrets, [("DELETE", path("queues", vhost, queue), None)]),
                    f"delete the classic {queue}")
        [(code, _)] = api(conn, secrets, [("PUT", path("queues", vhost, queue), QUORUM)])
        if code in (201, 204):
            return
        time.sleep(POLL_S)
    raise GuestError(f"{conn.host}: {queue} could not be declared as a quorum queue: a client keeps "
                     "declaring it classic", hint="the app containers of phase 2 still consume it; "
                     "run `migrate phase3` again once they are stopped")


def move_all(conn: Connection, secrets: Secrets, vhost: str, log: Callable[[str], None]) -> list[str]:
    """Every classic queue of vhost made quorum (to_quorum); their names."""
    code, listed = _get(conn, secrets, path("queues", vhost) + "?columns=name,vhost,type")
    if code != 200 or not isinstance(listed, list):
        raise GuestError(f"{conn.host}: RabbitMQ API: listing the queues failed (HTTP {code})")
    names = classic_queues(listed, vhost)
    for name in names:
        to_quorum(conn, secrets, vhost, name, log)
    return names
