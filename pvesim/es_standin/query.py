"""The Query DSL subset the stand-in answers: a query matches a document with a score, or does not.

Text matching is case-insensitive token matching (no analyzers, no relevance model): the score is
the number of query tokens found. Supported: match_all, match, match_phrase, multi_match,
query_string/simple_query_string, term, terms, range, exists, ids, prefix, wildcard, bool.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterator
from typing import Any

from .store import EsError, JsonDict

_TOKEN = re.compile(r"\w+", re.UNICODE)


def tokens(text: Any) -> list[str]:
    """Lowercased word tokens of a value (numbers and booleans as their text)."""
    return _TOKEN.findall(str(text).lower())


def _walk(value: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, sub in value.items():
            yield from _walk(sub, f"{prefix}.{key}" if prefix else key)
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item, prefix)
    else:
        yield prefix, value


def flatten(source: JsonDict) -> dict[str, list[Any]]:
    """{"a": {"b": [1, 2]}} -> {"a.b": [1, 2]}: every leaf value under its dotted field name."""
    fields: dict[str, list[Any]] = {}
    for name, value in _walk(source, ""):
        fields.setdefault(name, []).append(value)
    return fields


def _field_values(fields: dict[str, list[Any]], pattern: str) -> list[Any]:
    """Values of a field; `name.keyword` means the field itself, `*` patterns and ^boosts allowed."""
    pattern = pattern.split("^")[0].removesuffix(".keyword")
    if pattern in ("*", "_all"):
        return [v for values in fields.values() for v in values]
    if "*" in pattern:
        return [v for name, values in fields.items() if fnmatch.fnmatchcase(name, pattern) for v in values]
    return fields.get(pattern, [])


def _text_score(values: list[Any], text: Any, operator: str = "or") -> float:
    field_tokens = {t for v in values for t in tokens(v)}
    wanted = tokens(text)
    found = sum(1 for t in wanted if t in field_tokens)
    if not wanted or found == 0 or (operator.lower() == "and" and found < len(wanted)):
        return 0.0
    return float(found)


def _single(clause: JsonDict, name: str) -> tuple[str, Any]:
    """`{"match": {"title": ...}}` -> ("title", ...)."""
    items = [(k, v) for k, v in clause.items() if k not in ("boost", "_name")]
    if len(items) != 1:
        raise EsError(400, "parsing_exception", f"[{name}] query doesn't support multiple fields")
    return items[0]


def _equal(value: Any, wanted: Any) -> bool:
    if isinstance(value, str) and not isinstance(wanted, str):
        return value == str(wanted).lower() or value == str(wanted)
    return bool(value == wanted)


def _compare(value: Any, op: str, bound: Any) -> bool:
    try:
        if isinstance(value, (int, float)) and not isinstance(bound, (int, float)):
            bound = float(bound)
        if op == "gt":
            return bool(value > bound)
        if op == "gte":
            return bool(value >= bound)
        if op == "lt":
            return bool(value < bound)
        return bool(value <= bound)
    except (TypeError, ValueError):
        return False


def _query_string(spec: JsonDict, fields: dict[str, list[Any]]) -> float:
    """`field:value`, bare words (any field), `*` wildcards in terms, AND/OR/NOT keywords ignored."""
    default_fields = spec.get("fields") or [spec.get("default_field", "*")]
    score = 0.0
    terms = re.findall(r'(?:[\w.]+:)?(?:"[^"]*"|\S+)', str(spec.get("query", "")))
    required = str(spec.get("default_operator", "or")).lower() == "and"
    for term in terms:
        if term in ("AND", "OR", "NOT", "&&", "||"):
            continue
        field_part, _, text = term.rpartition(":") if re.match(r"^[\w.]+:", term) else ("", "", term)
        text = text.strip('"()')
        if text == "*" and not field_part:
            score += 1.0
            continue
        values = [
            v for f in ([field_part] if field_part else default_fields) for v in _field_values(fields, f)
        ]
        if "*" in text or "?" in text:
            hit = any(fnmatch.fnmatchcase(t, text.lower()) for v in values for t in tokens(v))
            found = 1.0 if hit else 0.0
        else:
            found = _text_score(values, text, "and")
        if required and found == 0:
            return 0.0
        score += found
    return score


def score(query: JsonDict | None, doc_id: str, source: JsonDict) -> float | None:
    """The document's score for the query, or None when it does not match."""
    fields = flatten(source)
    result = _score(query or {"match_all": {}}, doc_id, fields)
    return None if result is None or result <= 0 else result


def _score(query: JsonDict, doc_id: str, fields: dict[str, list[Any]]) -> float | None:
    if len(query) != 1:
        raise EsError(400, "parsing_exception", "query malformed, must have exactly one query type")
    kind, spec = next(iter(query.items()))
    handler = _HANDLERS.get(kind)
    if handler is None:
        raise EsError(400, "parsing_exception", f"unknown query [{kind}]", line=1, col=1)
    return handler(spec, doc_id, fields)


def _match(spec: JsonDict, _id: str, fields: dict[str, list[Any]]) -> float:
    name, value = _single(spec, "match")
    text, operator = (
        (value.get("query", ""), value.get("operator", "or")) if isinstance(value, dict) else (value, "or")
    )
    return _text_score(_field_values(fields, name), text, operator)


def _match_phrase(spec: JsonDict, _id: str, fields: dict[str, list[Any]]) -> float:
    name, value = _single(spec, "match_phrase")
    phrase = " ".join(tokens(value.get("query", "") if isinstance(value, dict) else value))
    hit = any(phrase in " ".join(tokens(v)) for v in _field_values(fields, name))
    return float(len(phrase.split())) if hit and phrase else 0.0


def _multi_match(spec: JsonDict, _id: str, fields: dict[str, list[Any]]) -> float:
    names = spec.get("fields") or ["*"]
    values = [v for n in names for v in _field_values(fields, n)]
    return _text_score(values, spec.get("query", ""), spec.get("operator", "or"))


def _term(spec: JsonDict, _id: str, fields: dict[str, list[Any]]) -> float:
    name, value = _single(spec, "term")
    wanted = value.get("value") if isinstance(value, dict) else value
    return 1.0 if any(_equal(v, wanted) for v in _field_values(fields, name)) else 0.0


def _terms(spec: JsonDict, _id: str, fields: dict[str, list[Any]]) -> float:
    name, wanted = _single(spec, "terms")
    values = _field_values(fields, name)
    return 1.0 if any(_equal(v, w) for v in values for w in wanted) else 0.0


def _range(spec: JsonDict, _id: str, fields: dict[str, list[Any]]) -> float:
    name, bounds = _single(spec, "range")
    ops = {k: v for k, v in bounds.items() if k in ("gt", "gte", "lt", "lte")}
    values = _field_values(fields, name)
    return 1.0 if any(all(_compare(v, op, b) for op, b in ops.items()) for v in values) else 0.0


def _exists(spec: JsonDict, _id: str, fields: dict[str, list[Any]]) -> float:
    return 1.0 if any(v is not None for v in _field_values(fields, spec["field"])) else 0.0


def _ids(spec: JsonDict, doc_id: str, _fields: dict[str, list[Any]]) -> float:
    return 1.0 if doc_id in spec.get("values", []) else 0.0


def _prefix(spec: JsonDict, _id: str, fields: dict[str, list[Any]]) -> float:
    name, value = _single(spec, "prefix")
    wanted = str(value.get("value") if isinstance(value, dict) else value).lower()
    return 1.0 if any(str(v).lower().startswith(wanted) for v in _field_values(fields, name)) else 0.0


def _wildcard(spec: JsonDict, _id: str, fields: dict[str, list[Any]]) -> float:
    name, value = _single(spec, "wildcard")
    pattern = str(value.get("value") if isinstance(value, dict) else value).lower()
    return (
        1.0 if any(fnmatch.fnmatchcase(str(v).lower(), pattern) for v in _field_values(fields, name)) else 0.0
    )


def _clauses(spec: JsonDict, key: str) -> list[JsonDict]:
    value = spec.get(key, [])
    return value if isinstance(value, list) else [value]


def _bool(spec: JsonDict, doc_id: str, fields: dict[str, list[Any]]) -> float:
    total = 0.0
    for clause in _clauses(spec, "must"):
        found = _score(clause, doc_id, fields)
        if not found:
            return 0.0
        total += found
    for clause in _clauses(spec, "filter"):
        if not _score(clause, doc_id, fields):
            return 0.0
    if any(_score(clause, doc_id, fields) for clause in _clauses(spec, "must_not")):
        return 0.0
    should = [_score(clause, doc_id, fields) or 0.0 for clause in _clauses(spec, "should")]
    matched = sum(1 for s in should if s > 0)
    positive = bool(_clauses(spec, "must") or _clauses(spec, "filter"))
    minimum = int(spec.get("minimum_should_match", 0 if positive else (1 if should else 0)))
    if matched < minimum:
        return 0.0
    return total + sum(should) or 1.0


_HANDLERS = {
    "match_all": lambda _s, _i, _f: 1.0,
    "match_none": lambda _s, _i, _f: 0.0,
    "match": _match,
    "match_phrase": _match_phrase,
    "multi_match": _multi_match,
    "query_string": lambda s, _i, f: _query_string(s, f),
    "simple_query_string": lambda s, _i, f: _query_string(s, f),
    "term": _term,
    "terms": _terms,
    "range": _range,
    "exists": _exists,
    "ids": _ids,
    "prefix": _prefix,
    "wildcard": _wildcard,
    "bool": _bool,
}


def _sort_key(spec: Any) -> tuple[str, bool]:
    """`"f"`, `"f:desc"`, `{"f": "desc"}`, `{"f": {"order": "desc"}}` -> (field, descending)."""
    if isinstance(spec, str):
        name, _, order = spec.partition(":")
        return name, order == "desc" or (name == "_score" and order != "asc")
    name, order = next(iter(spec.items()))
    order = order.get("order", "asc") if isinstance(order, dict) else order
    return name, order == "desc" or (name == "_score" and order != "asc")


def sort_hits(hits: list[JsonDict], sort: Any) -> list[JsonDict]:
    """Sort by score (default) or by the given fields; missing values go last."""
    specs = sort if isinstance(sort, list) else [sort] if sort else ["_score"]
    for spec in reversed(specs):
        name, descending = _sort_key(spec)
        name = name.removesuffix(".keyword")

        def key(hit: JsonDict, name: str = name) -> tuple[int, Any]:
            value = hit["_score"] if name == "_score" else (flatten(hit["_source"]).get(name) or [None])[0]
            return (0, value) if value is not None else (1, "")

        present = [h for h in hits if key(h)[0] == 0]
        missing = [h for h in hits if key(h)[0] == 1]
        try:
            present.sort(key=lambda h: key(h)[1], reverse=descending)
        except TypeError:
            present.sort(key=lambda h: str(key(h)[1]), reverse=descending)
        hits = present + missing
    return hits


def search(docs: list[tuple[str, str, JsonDict]], body: JsonDict, params: dict[str, str]) -> JsonDict:
    """Run a search over (index, id, source) triples; returns Elasticsearch's `hits` object."""
    query = body.get("query")
    if "q" in params:
        query = {"query_string": {"query": params["q"], "default_field": params.get("df", "*")}}
    hits: list[JsonDict] = []
    for index, doc_id, source in docs:
        found = score(query, doc_id, source)
        if found is not None:
            hits.append({"_index": index, "_id": doc_id, "_score": found, "_source": source})
    hits = sort_hits(hits, body.get("sort") or params.get("sort"))
    start = int(params.get("from") or body.get("from") or 0)
    size = int(params.get("size") or body.get("size", 10))
    page = hits[start : start + size]
    if body.get("_source") is False:
        for hit in page:
            hit.pop("_source")
    max_score: float | None = max((float(h["_score"]) for h in hits), default=None)
    return {"total": {"value": len(hits), "relation": "eq"}, "max_score": max_score, "hits": page}
