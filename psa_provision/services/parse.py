"""Pure parsing helpers shared by the facts probes (psa_provision/facts.py and services/*/facts.py)."""

from __future__ import annotations

import json
from typing import Any


def seconds(text: str) -> float:
    """Epoch seconds with microseconds as stat %.6Y and date +%s.%6N print them (0.0: unknown)."""
    try:
        return max(float(text), 0.0)
    except ValueError:
        return 0.0


def json_object(text: str) -> dict[str, Any]:
    """One JSON object ({} for no output; JSONDecodeError for anything else)."""
    doc = json.loads(text) if text.strip() else {}
    if not isinstance(doc, dict):
        raise json.JSONDecodeError("not an object", text, 0)
    return doc


def dicts(value: Any) -> list[dict[str, Any]]:
    return [d for d in value if isinstance(d, dict)] if isinstance(value, list) else []
