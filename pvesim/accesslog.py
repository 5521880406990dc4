"""The API access log: one JSON object per request in state.access_log, secrets masked."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MASK = "***"
SECRET_PARAMS = re.compile(r"password|ssh-public-keys|secret|ticket|token|otp|key", re.IGNORECASE)
_SECRET_IN_TEXT = re.compile(r"(PVEAPIToken=[^=\s]+=)\S+|(PVE:[^:]+:[0-9A-F]{8}::)\S+")


def mask_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """A copy with secret-bearing parameters replaced by `***`."""
    return {k: (MASK if SECRET_PARAMS.search(k) else _mask_text(v)) for k, v in params.items()}


def _mask_text(value: Any) -> Any:
    """Mask token secrets and ticket signatures that might appear inside a value."""
    if isinstance(value, str):
        return _SECRET_IN_TEXT.sub(lambda m: (m.group(1) or m.group(2)) + MASK, value)
    return value


class AccessLog:
    """Appends request records; safe to call from many handler threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def record(self, method: str, path: str, params: Mapping[str, Any], status: int, user: str | None,
               duration: float, error: str | None = None) -> None:
        """Write one line: time, method, path, masked params, status, user, duration_ms (+ error)."""
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "method": method,
            "path": path,
            "params": mask_params(params),
            "status": status,
            "user": user,
            "duration_ms": round(duration * 1000, 1),
        }
        if error is not None:
            entry["error"] = _mask_text(error)
        with self._lock, self.path.open("a") as f:
            f.write(json.dumps(entry) + "\n")
