"""The REST endpoints of the stand-in: (method, path) -> (status, JSON body), in Elasticsearch 8's shapes.

Pure request handling over a Store and Snapshots, so it can be tested without a socket. Routing,
cluster/node information, index and snapshot endpoints live here; documents and search in documents.py.
"""

from __future__ import annotations

import json
import os
import re
from urllib.parse import unquote

from .config import ES_VERSION, Settings, format_bytes
from .documents import DocumentApi
from .request import SHARDS, Handler, Request, Response
from .snapshots import Snapshots
from .store import EsError, Index, Store

STANDIN_NOTE = "pvesim sandbox STAND-IN, not Elasticsearch"
_BYTE_UNITS = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3, "tb": 1024**4}


def _size(size: int, unit: str | None) -> str:
    """A _cat size: `bytes=b|kb|mb|gb|tb` gives a whole number in that unit, else `4gb`-style text."""
    if unit in _BYTE_UNITS:
        return str(size // _BYTE_UNITS[unit])
    return format_bytes(size)


class Api(DocumentApi):
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
