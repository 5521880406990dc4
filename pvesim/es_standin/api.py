"""The REST endpoints of the stand-in: (method, path) -> (status, JSON body), in Elasticsearch 8's shapes.

Pure request handling over a Store and Snapshots, so it can be tested without a socket.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from . import query
from .config import ES_VERSION, Settings, format_bytes
from .snapshots import Snapshots
from .store import EsError, Index, JsonDict, Store, new_id

STANDIN_NOTE = "pvesim sandbox STAND-IN, not Elasticsearch"
SHARDS = {"total": 1, "successful": 1, "failed": 0}
Response = tuple[int, Any]
Handler = Callable[["Request"], Response]


_BYTE_UNITS = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3, "tb": 1024**4}


def _size(size: int, unit: str | None) -> str:
    """A _cat size: `bytes=b|kb|mb|gb|tb` gives a whole number in that unit, else `4gb`-style text."""
    if unit in _BYTE_UNITS:
        return str(size // _BYTE_UNITS[unit])
    return format_bytes(size)


@dataclass
class Request:
    method: str
    path: str
    params: dict[str, str]
    body: bytes
    match: dict[str, str]

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


class Api:
    """One node's REST API: routes each request to a handler method."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        snapshots: Snapshots,
        node_id: str,
        cluster_uuid: str,
        address: str,
    ) -> None:
        self.settings, self.store, self.snapshots = settings, store, snapshots
        self.node_id, self.cluster_uuid, self.address = node_id, cluster_uuid, address
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = []
        for methods, pattern, handler in self._table():
            for method in methods.split():
                self.routes.append((method, re.compile(f"^{pattern}$"), handler))

    def _table(self) -> list[tuple[str, str, Handler]]:
        i, d, r, s = r"(?P<index>[^_/][^/]*)", r"(?P<id>[^/]+)", r"(?P<repo>[^/]+)", r"(?P<snap>[^/]+)"
        return [
            ("GET HEAD", "/", self.banner),
            ("GET", "/_cluster/health(?:/(?P<index>[^/]+))?", self.health),
            ("GET", "/_cat/nodes", self.cat_nodes),
            ("GET", "/_cat/health", self.cat_health),
            ("GET", "/_cat/indices(?:/(?P<index>[^/]+))?", self.cat_indices),
            ("GET", "/_nodes(?:/.*)?", self.nodes),
            ("POST PUT", f"(?:/{i})?/_bulk", self.bulk),
            ("GET POST", f"(?:/{i})?/_search", self.search),
            ("GET POST", f"(?:/{i})?/_count", self.count),
            ("GET POST", f"(?:/{i})?/_refresh", self.refresh),
            ("GET", "/_snapshot(?:/_all)?", self.get_repos),
            ("GET", f"/_snapshot/{r}", self.get_repos),
            ("PUT POST", f"/_snapshot/{r}", self.put_repo),
            ("DELETE", f"/_snapshot/{r}", self.delete_repo),
            ("POST", f"/_snapshot/{r}/{s}/_restore", self.restore),
            ("PUT POST", f"/_snapshot/{r}/{s}", self.create_snapshot),
            ("GET", f"/_snapshot/{r}/{s}", self.get_snapshot),
            ("DELETE", f"/_snapshot/{r}/{s}", self.delete_snapshot),
            ("PUT POST", f"/{i}/_doc/{d}", self.put_doc),
            ("PUT POST", f"/{i}/_create/{d}", self.create_doc),
            ("POST", f"/{i}/_doc", self.post_doc),
            ("GET HEAD", f"/{i}/_doc/{d}", self.get_doc),
            ("DELETE", f"/{i}/_doc/{d}", self.delete_doc),
            ("POST", f"/{i}/_update/{d}", self.update_doc),
            ("POST", f"/{i}/_delete_by_query", self.delete_by_query),
            ("POST", f"/{i}/_(?P<action>open|close)", self.open_close),
            ("GET", f"/{i}/_mapping", self.get_mapping),
            ("PUT POST", f"/{i}/_mapping", self.put_mapping),
            ("PUT", f"/{i}", self.create_index),
            ("DELETE", f"/{i}", self.delete_index),
            ("HEAD", f"/{i}", self.head_index),
            ("GET", f"/{i}", self.get_index),
        ]

    def handle(self, method: str, path: str, params: dict[str, str], body: bytes) -> Response:
        """Dispatch; EsError becomes Elasticsearch's error body with its status."""
        path = "/" + path.strip("/") if path != "/" else "/"
        known_path = False
        for route_method, pattern, handler in self.routes:
            match = pattern.match(path)
            if match:
                known_path = True
                if route_method == method:
                    try:
                        return handler(
                            Request(
                                method,
                                path,
                                params,
                                body,
                                {k: unquote(v) for k, v in match.groupdict().items() if v is not None},
                            )
                        )
                    except EsError as err:
                        return err.status, err.body()
        if known_path:
            return 405, {
                "error": f"Incorrect HTTP method for uri [{path}] and method [{method}]",
                "status": 405,
            }
        return 400, {"error": f"no handler found for uri [{path}] and method [{method}]"}

    # -- cluster and node information ------------------------------------------------------------
    def banner(self, _req: Request) -> Response:
        return 200, {
            "name": self.settings.node_name,
            "cluster_name": self.settings.cluster_name,
            "cluster_uuid": self.cluster_uuid,
            "version": {
                "number": ES_VERSION,
                "build_flavor": "default",
                "build_type": "deb",
                "build_hash": "pvesim-standin",
                "build_date": "2024-08-05T10:05:34.233336849Z",
                "build_snapshot": False,
                "lucene_version": "9.11.1",
                "minimum_wire_compatibility_version": "7.17.0",
                "minimum_index_compatibility_version": "7.0.0",
            },
            "tagline": "You Know, for Search",
            "standin": STANDIN_NOTE,
        }

    def _shard_count(self) -> int:
        return sum(1 for index in self.store.indices.values() if not index.closed)

    def health(self, req: Request) -> Response:
        if req.match.get("index"):
            self.store.resolve(req.match["index"])
        shards = self._shard_count()
        return 200, {
            "cluster_name": self.settings.cluster_name,
            "status": "green",
            "timed_out": False,
            "number_of_nodes": 1,
            "number_of_data_nodes": 1,
            "active_primary_shards": shards,
            "active_shards": shards,
            "relocating_shards": 0,
            "initializing_shards": 0,
            "unassigned_shards": 0,
            "delayed_unassigned_shards": 0,
            "number_of_pending_tasks": 0,
            "number_of_in_flight_fetch": 0,
            "task_max_waiting_in_queue_millis": 0,
            "active_shards_percent_as_number": 100.0,
        }

    def _cat(self, req: Request, rows: list[dict[str, str]], default: list[str]) -> Response:
        """`_cat` output: JSON with format=json, else aligned text (header with `v`); `h` picks columns."""
        columns = req.params["h"].split(",") if req.params.get("h") else default
        picked = [{c: row.get(c) for c in columns} for row in rows]
        if req.params.get("format") == "json":
            return 200, picked
        lines = [" ".join(columns)] if "v" in req.params else []
        lines += [" ".join(str(row[c]) for c in columns) for row in picked]
        return 200, "".join(line + "\n" for line in lines)

    def cat_nodes(self, req: Request) -> Response:
        load = os.getloadavg()
        row = {
            "ip": self.address.rsplit(":", 1)[0],
            "heap.percent": "10",
            "heap.current": "0b",
            "heap.max": _size(self.settings.heap_max, req.params.get("bytes")),
            "ram.percent": "50",
            "cpu": "1",
            "load_1m": f"{load[0]:.2f}",
            "load_5m": f"{load[1]:.2f}",
            "load_15m": f"{load[2]:.2f}",
            "node.role": "cdfhilmrstw",
            "master": "*",
            "name": self.settings.node_name,
            "id": self.node_id[:4],
            "version": ES_VERSION,
            "http_address": self.address,
        }
        default = [
            "ip",
            "heap.percent",
            "ram.percent",
            "cpu",
            "load_1m",
            "load_5m",
            "load_15m",
            "node.role",
            "master",
            "name",
        ]
        return self._cat(req, [row], default)

    def cat_health(self, req: Request) -> Response:
        shards = str(self._shard_count())
        row = {
            "cluster": self.settings.cluster_name,
            "status": "green",
            "node.total": "1",
            "node.data": "1",
            "shards": shards,
            "pri": shards,
            "relo": "0",
            "init": "0",
            "unassign": "0",
            "active_shards_percent": "100.0%",
        }
        return self._cat(req, [row], list(row))

    def cat_indices(self, req: Request) -> Response:
        with self.store.lock:  # export() iterates the documents; writers hold the same lock
            names = self.store.resolve(req.match.get("index") or "_all")
            rows = [self._index_row(self.store.indices[n], req.params.get("bytes")) for n in names]
        return self._cat(req, rows, list(rows[0]) if rows else ["health", "status", "index"])

    @staticmethod
    def _index_row(index: Index, unit: str | None) -> dict[str, str]:
        size = _size(len(json.dumps(index.export())), unit)
        return {
            "health": "green",
            "status": "close" if index.closed else "open",
            "index": index.name,
            "uuid": index.uuid,
            "pri": "1",
            "rep": "0",
            "docs.count": str(len(index.docs)),
            "docs.deleted": "0",
            "store.size": size,
            "pri.store.size": size,
        }

    def nodes(self, _req: Request) -> Response:
        heap = self.settings.heap_max
        node = {
            "name": self.settings.node_name,
            "transport_address": self.address,
            "host": self.address.rsplit(":", 1)[0],
            "ip": self.address.rsplit(":", 1)[0],
            "version": ES_VERSION,
            "roles": ["data", "ingest", "master"],
            "settings": {
                "cluster": {"name": self.settings.cluster_name},
                "path": {"repo": [str(p) for p in self.settings.path_repo]},
            },
            "jvm": {
                "mem": {
                    "heap_used_in_bytes": heap // 10,
                    "heap_used_percent": 10,
                    "heap_committed_in_bytes": heap,
                    "heap_max_in_bytes": heap,
                    "heap_init_in_bytes": self.settings.heap_min,
                }
            },
        }
        return 200, {
            "_nodes": {"total": 1, "successful": 1, "failed": 0},
            "cluster_name": self.settings.cluster_name,
            "nodes": {self.node_id: node},
        }

    # -- indices ---------------------------------------------------------------------------------
    def create_index(self, req: Request) -> Response:
        self.store.create_index(req.match["index"], req.json())
        return 200, {"acknowledged": True, "shards_acknowledged": True, "index": req.match["index"]}

    def delete_index(self, req: Request) -> Response:
        self.store.delete_index(req.match["index"])
        return 200, {"acknowledged": True}

    def head_index(self, req: Request) -> Response:
        return (200 if req.match["index"] in self.store.indices else 404), None

    def get_index(self, req: Request) -> Response:
        result = {}
        for name in self.store.resolve(req.match["index"]):
            index = self.store.indices[name]
            settings = {
                "index": {
                    "number_of_shards": "1",
                    "number_of_replicas": "0",
                    "uuid": index.uuid,
                    "provided_name": name,
                    "creation_date": str(index.created),
                }
            }
            result[name] = {"aliases": {}, "mappings": index.mappings, "settings": settings}
        return 200, result

    def open_close(self, req: Request) -> Response:
        self.store.set_closed(req.match["index"], req.match["action"] == "close")
        return 200, {"acknowledged": True, "shards_acknowledged": True}

    def get_mapping(self, req: Request) -> Response:
        names = self.store.resolve(req.match["index"])
        return 200, {n: {"mappings": self.store.indices[n].mappings} for n in names}

    def put_mapping(self, req: Request) -> Response:
        for name in self.store.resolve(req.match["index"]):
            self.store.update_mappings(name, req.json().get("properties", {}))
        return 200, {"acknowledged": True}

    def refresh(self, req: Request) -> Response:
        if req.match.get("index"):
            self.store.resolve(req.match["index"])
        return 200, {"_shards": SHARDS}

    # -- documents ------------------------------------------------------------------------------
    def _write_result(self, index: str, doc_id: str, version: int, seq_no: int, result: str) -> JsonDict:
        return {
            "_index": index,
            "_id": doc_id,
            "_version": version,
            "result": result,
            "_shards": SHARDS,
            "_seq_no": seq_no,
            "_primary_term": 1,
        }

    def _index_doc(self, index: str, doc_id: str, source: JsonDict, create_only: bool) -> Response:
        doc, result = self.store.put_doc(index, doc_id, source, create_only=create_only)
        return (201 if result == "created" else 200), self._write_result(
            index, doc_id, doc.version, doc.seq_no, result
        )

    def put_doc(self, req: Request) -> Response:
        create_only = req.params.get("op_type") == "create"
        return self._index_doc(req.match["index"], req.match["id"], req.json(), create_only)

    def create_doc(self, req: Request) -> Response:
        return self._index_doc(req.match["index"], req.match["id"], req.json(), True)

    def post_doc(self, req: Request) -> Response:
        return self._index_doc(req.match["index"], new_id(), req.json(), True)

    def get_doc(self, req: Request) -> Response:
        index = self.store.get(req.match["index"])
        doc = index.docs.get(req.match["id"])
        if doc is None:
            return 404, {"_index": index.name, "_id": req.match["id"], "found": False}
        if req.method == "HEAD":
            return 200, None
        return 200, {
            "_index": index.name,
            "_id": req.match["id"],
            "_version": doc.version,
            "_seq_no": doc.seq_no,
            "_primary_term": 1,
            "found": True,
            "_source": doc.source,
        }

    def delete_doc(self, req: Request) -> Response:
        name, doc_id = req.match["index"], req.match["id"]
        doc = self.store.delete_doc(name, doc_id)
        if doc is None:
            return 404, self._write_result(name, doc_id, 1, self.store.get(name).seq_no, "not_found")
        return 200, self._write_result(name, doc_id, doc.version, doc.seq_no, "deleted")

    def update_doc(self, req: Request) -> Response:
        name, doc_id, body = req.match["index"], req.match["id"], req.json()
        with self.store.lock:
            index = self.store.indices.get(name)
            old = index.docs.get(doc_id) if index else None
            if old is None and not (body.get("doc_as_upsert") or "upsert" in body):
                raise EsError(
                    404,
                    "document_missing_exception",
                    f"[{doc_id}]: document missing",
                    index=name,
                    shard="0",
                    index_uuid=index.uuid if index else "_na_",
                )
            source = dict(old.source) if old else dict(body.get("upsert", {}))
            source.update(body.get("doc", {}) if old or body.get("doc_as_upsert") else {})
            return self._index_doc(name, doc_id, source, False)

    def delete_by_query(self, req: Request) -> Response:
        body = req.json()
        deleted = 0
        with self.store.lock:
            for name in self.store.resolve(req.match["index"]):
                for doc_id, doc in list(self.store.get(name).docs.items()):
                    if query.score(body.get("query"), doc_id, doc.source) is not None:
                        self.store.delete_doc(name, doc_id)
                        deleted += 1
        return 200, {
            "took": 1,
            "timed_out": False,
            "total": deleted,
            "deleted": deleted,
            "batches": 1,
            "version_conflicts": 0,
            "noops": 0,
            "failures": [],
        }

    # -- search ---------------------------------------------------------------------------------
    def _docs(self, expression: str) -> list[tuple[str, str, JsonDict]]:
        with self.store.lock:
            names = self.store.resolve(expression or "_all")
            return [(n, i, d.source) for n in names for i, d in self.store.get(n).docs.items()]

    def search(self, req: Request) -> Response:
        hits = query.search(self._docs(req.match.get("index") or ""), req.json(), req.params)
        return 200, {
            "took": 1,
            "timed_out": False,
            "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
            "hits": hits,
        }

    def count(self, req: Request) -> Response:
        body = req.json()
        params = {k: v for k, v in req.params.items() if k in ("q", "df")}
        hits = query.search(
            self._docs(req.match.get("index") or ""), {"query": body.get("query")}, {**params, "size": "0"}
        )
        return 200, {
            "count": hits["total"]["value"],
            "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
        }

    def bulk(self, req: Request) -> Response:
        """POST /_bulk: NDJSON action lines (index/create/update take the next line as the document)."""
        lines = [line for line in req.body.decode().splitlines() if line.strip()]
        items, errors, position = [], False, 0
        try:
            while position < len(lines):
                action, meta = next(iter(json.loads(lines[position]).items()))
                position += 1
                source: JsonDict = {}
                if action in ("index", "create", "update"):
                    source = json.loads(lines[position])
                    position += 1
                item = self._bulk_item(action, meta, source, req.match.get("index"))
                errors = errors or "error" in item
                items.append({action: item})
        except (ValueError, IndexError, StopIteration, AttributeError) as err:
            raise EsError(
                400, "illegal_argument_exception", f"Malformed action/metadata line [{position + 1}]: {err}"
            ) from err
        return 200, {"took": 1, "errors": errors, "items": items}

    def _bulk_item(
        self, action: str, meta: JsonDict, source: JsonDict, default_index: str | None
    ) -> JsonDict:
        index = meta.get("_index") or default_index or ""
        doc_id = meta.get("_id") or new_id()
        routes = {
            "index": self.put_doc,
            "create": self.create_doc,
            "delete": self.delete_doc,
            "update": self.update_doc,
        }
        if action not in routes:
            raise EsError(
                400, "illegal_argument_exception", f"Malformed action/metadata line, unknown [{action}]"
            )
        method = "DELETE" if action == "delete" else "PUT"
        sub = Request(
            method, f"/{index}/_doc/{doc_id}", {}, json.dumps(source).encode(), {"index": index, "id": doc_id}
        )
        try:
            status, body = routes[action](sub)
        except EsError as err:
            return {
                "_index": index,
                "_id": doc_id,
                "status": err.status,
                "error": {"type": err.kind, "reason": err.reason, **err.extra},
            }
        return {**body, "status": status}

    # -- snapshots ------------------------------------------------------------------------------
    def get_repos(self, req: Request) -> Response:
        return 200, self.snapshots.get_repositories(req.match.get("repo"))

    def put_repo(self, req: Request) -> Response:
        self.snapshots.put_repository(req.match["repo"], req.json())
        return 200, {"acknowledged": True}

    def delete_repo(self, req: Request) -> Response:
        self.snapshots.delete_repository(req.match["repo"])
        return 200, {"acknowledged": True}

    def create_snapshot(self, req: Request) -> Response:
        info = self.snapshots.create(req.match["repo"], req.match["snap"], req.json())
        if req.params.get("wait_for_completion") == "true":
            return 200, {"snapshot": info}
        return 200, {"accepted": True}

    def get_snapshot(self, req: Request) -> Response:
        return 200, self.snapshots.get(req.match["repo"], req.match["snap"])

    def delete_snapshot(self, req: Request) -> Response:
        self.snapshots.delete(req.match["repo"], req.match["snap"])
        return 200, {"acknowledged": True}

    def restore(self, req: Request) -> Response:
        result = self.snapshots.restore(req.match["repo"], req.match["snap"], req.json())
        if req.params.get("wait_for_completion") == "true":
            return 200, {"snapshot": result}
        return 200, {"accepted": True}
