"""A REST request as the stand-in's endpoints see it, and the shapes they answer with."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .store import EsError, JsonDict

SHARDS = {"total": 1, "successful": 1, "failed": 0}
Response = tuple[int, Any]
Handler = Callable[["Request"], Response]


@dataclass
class Request:
    """Method, path, query parameters, raw body and the route's named path parts (percent-decoded)."""

    method: str
    path: str
    params: dict[str, str]
    body: bytes
    match: dict[str, str]
    forwarded: bool = False  # sent on by another member: handle here, never forward again

    def json(self) -> JsonDict:
        """The body as a JSON object ({} when empty); 400 on malformed JSON like Elasticsearch."""
        if not self.body.strip():
            return {}
        try:
            data = json.loads(self.body)
        except ValueError as err:
            raise EsError(400, "x_content_parse_exception", f"Failed to parse request body: {err}") from err
        if not isinstance(data, dict):
            raise EsError(400, "parsing_exception", "request body must be a JSON object")
        return data
