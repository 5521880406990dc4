"""Calls between stand-ins: JSON over HTTP on `transport.port` (POST /_standin/<op>).

Not Elasticsearch's binary transport protocol; only stand-ins speak it. Stdlib only.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from .store import EsError

TRANSPORT_TIMEOUT_S = 2.0


class TransportError(Exception):
    """Another node did not answer (down, unreachable), or answered an error (`status`, `body`)."""

    def __init__(self, message: str, status: int = 0, body: Any = None) -> None:
        super().__init__(message)
        self.status, self.body = status, body

    def as_es_error(self) -> EsError:
        """The other node's Elasticsearch error, or 503 when it did not answer at all."""
        error = self.body.get("error") if isinstance(self.body, dict) else None
        if self.status and isinstance(error, dict):
            extra = {k: v for k, v in error.items() if k not in ("type", "reason", "root_cause")}
            return EsError(self.status, str(error.get("type")), str(error.get("reason")), **extra)
        return EsError(503, "node_not_connected_exception", f"STAND-IN transport: {self}")


def call(address: str, op: str, body: Any, timeout: float = TRANSPORT_TIMEOUT_S) -> Any:
    """POST JSON to another stand-in's transport; its JSON answer, or TransportError."""
    request = urllib.request.Request(
        f"http://{address}/_standin/{op}", data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as err:
        raw = err.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        raise TransportError(f"{address} {op}: HTTP {err.code} {raw[:200]!r}", err.code, body) from err
    except (OSError, ValueError) as err:
        raise TransportError(f"{address} {op}: {err}") from err
