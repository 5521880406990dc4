"""The REST endpoints of the stand-in: (method, path) -> (status, JSON body), in Elasticsearch 8's shapes.

Request handling over a Store, the cluster (node.py) and the snapshot repositories (repositories.py),
testable without a socket. Routing, cluster/node information and snapshot endpoints live here (a
repository or snapshot change, a snapshot listing and a restore run on the elected master, handed
there by any member); documents, indices and search (routed to the member holding the data) in
routing.py and documents.py.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any
from urllib.parse import unquote

from . import cluster
from .cluster import Member
from .config import ES_VERSION, Settings, format_bytes
from .node import ClusterNode, no_master
from .repositories import Repositories
from .request import Handler, Request, Response
from .routing import ClusterApi
from .store import EsError, Store

STANDIN_NOTE = "pvesim sandbox STAND-IN, not Elasticsearch"
TAGLINE = "You Know, for Search (pvesim STAND-IN, not Elasticsearch)"
_BYTE_UNITS = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3, "tb": 1024**4}
_WAIT_S = 30.0


def _size(size: int, unit: str | None) -> str:
    """A _cat size: `bytes=b|kb|mb|gb|tb` gives a whole number in that unit, else `4gb`-style text."""
    if unit in _BYTE_UNITS:
        return str(size // _BYTE_UNITS[unit])
    return format_bytes(size)


def _seconds(text: str | None, default: float) -> float:
    """An Elasticsearch time value (`30s`, `500ms`, `1m`) in seconds."""
    match = re.fullmatch(r"(\d+)(ms|s|m)?", text or "")
    if match is None:
        return default
    return int(match.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[match.group(2) or "ms"]


def _nodes_reached(count: int, want: str) -> bool:
    """`wait_for_nodes`: `3`, `>=3`, `<2`, `ge(3)`, `lt(2)`..."""
    match = re.fullmatch(r"(>=|<=|>|<|ge|le|gt|lt)?\(?(\d+)\)?", want)
    if match is None:
        raise EsError(400, "illegal_argument_exception", f"cannot parse wait_for_nodes [{want}]")
    op, number = match.group(1) or "eq", int(match.group(2))
    op = {">=": "ge", "<=": "le", ">": "gt", "<": "lt"}.get(op, op)
    return {"eq": count == number, "ge": count >= number, "le": count <= number, "gt": count > number,
            "lt": count < number}[op]


class Api(ClusterApi):
    """One node's REST API: routes each request to a handler method."""

    def __init__(self, settings: Settings, store: Store, repositories: Repositories,
                 node: ClusterNode) -> None:
        self.settings, self.store, self.repositories, self.cluster = settings, store, repositories, node
        self.node_id, self.address = node.me.node_id, node.me.http
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = []
        for methods, pattern, handler in self._table():
            for method in methods.split():
                self.routes.append((method, re.compile(f"^{pattern}$"), handler))

    def _table(self) -> list[tuple[str, str, Handler]]:
        i, d, r, s = r"(?P<index>[^_/][^/]*)", r"(?P<id>[^/]+)", r"(?P<repo>[^/]+)", r"(?P<snap>[^/]+)"
        master = self._at_master
        return [
            ("GET HEAD", "/", self.banner),
            ("GET", "/_cluster/health(?:/(?P<index>[^/]+))?", self.health),
            ("GET", "/_cat/nodes", self.cat_nodes),
            ("GET", "/_cat/health", self.cat_health),
            ("GET", "/_cat/shards(?:/(?P<index>[^/]+))?", self.cat_shards),
            ("GET", "/_cat/indices(?:/(?P<index>[^/]+))?", self.cat_indices),
            ("GET", "/_nodes(?:/.*)?", self.nodes),
            ("POST PUT", f"(?:/{i})?/_bulk", self.bulk),
            ("GET POST", f"(?:/{i})?/_search", self.search),
            ("GET POST", f"(?:/{i})?/_count", self.count),
            ("GET POST", f"(?:/{i})?/_refresh", self.refresh),
            ("GET", "/_snapshot(?:/_all)?", self.get_repos),
            ("GET", f"/_snapshot/{r}", self.get_repos),
            ("PUT POST", f"/_snapshot/{r}", master(self.put_repo)),
            ("DELETE", f"/_snapshot/{r}", master(self.delete_repo)),
            ("POST", f"/_snapshot/{r}/_verify", master(self.verify_repo)),
            ("POST", f"/_snapshot/{r}/{s}/_restore", master(self.restore)),
            ("PUT POST", f"/_snapshot/{r}/{s}", master(self.create_snapshot)),
            ("GET", f"/_snapshot/{r}/{s}", master(self.get_snapshot)),
            ("DELETE", f"/_snapshot/{r}/{s}", master(self.delete_snapshot)),
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

    def handle(self, method: str, path: str, params: dict[str, str], body: bytes,
               forwarded: bool = False) -> Response:
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
                                forwarded,
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
            "cluster_uuid": self.cluster.state["cluster_uuid"] if self.cluster.state["term"] else "_na_",
            "version": {
                "number": ES_VERSION,
                "build_flavor": "stand-in",
                "build_type": "deb",
                "build_hash": "pvesim-standin",
                "build_date": "2024-08-05T10:05:34.233336849Z",
                "build_snapshot": False,
                "lucene_version": "9.11.1",
                "minimum_wire_compatibility_version": "7.17.0",
                "minimum_index_compatibility_version": "7.0.0",
            },
            "tagline": TAGLINE,
            "standin": STANDIN_NOTE,
        }

    def _members(self) -> dict[str, Member]:
        """The cluster's live members as the master published them (this node alone without one)."""
        if self.cluster.master() is None:
            raise EsError(503, "master_not_discovered_exception", "STAND-IN: no elected master")
        live = self.cluster.live()
        return {n: m for n, m in live.items() if n in self.cluster.state["nodes"] or n == self.node_id}

    def _health(self, index: str | None) -> dict[str, Any]:
        members = self._members()
        indices = self._indices()
        if index:
            indices = {n: indices[n] for n in self.resolve(index)}
        shards = cluster.cluster_health(indices, members)
        return {
            "cluster_name": self.settings.cluster_name,
            "status": shards["status"],
            "timed_out": False,
            "number_of_nodes": len(members),
            "number_of_data_nodes": sum(1 for m in members.values() if m.data),
            "active_primary_shards": shards["active_primary_shards"],
            "active_shards": shards["active_shards"],
            "relocating_shards": 0,
            "initializing_shards": shards["initializing_shards"],
            "unassigned_shards": shards["unassigned_shards"],
            "delayed_unassigned_shards": 0,
            "number_of_pending_tasks": 0,
            "number_of_in_flight_fetch": 0,
            "task_max_waiting_in_queue_millis": 0,
            "active_shards_percent_as_number": shards["active_shards_percent_as_number"],
        }

    def health(self, req: Request) -> Response:
        """GET /_cluster/health[/index], honouring wait_for_status, wait_for_nodes and timeout."""
        want_status = req.params.get("wait_for_status")
        want_nodes = req.params.get("wait_for_nodes", "")
        deadline = time.monotonic() + _seconds(req.params.get("timeout"), _WAIT_S)
        while True:
            body = self._health(req.match.get("index"))
            ok = not want_status or cluster.STATUS_ORDER.index(body["status"]) <= cluster.STATUS_ORDER.index(
                want_status)
            if want_nodes:
                ok = ok and _nodes_reached(body["number_of_nodes"], want_nodes)
            if ok or not (want_status or want_nodes):
                return 200, body
            if time.monotonic() >= deadline:
                return 408, {**body, "timed_out": True}
            time.sleep(0.2)

    def _cat(self, req: Request, rows: list[dict[str, Any]], default: list[str]) -> Response:
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
        master = self.cluster.state["master"]
        rows: list[dict[str, str]] = []
        for node_id, member in sorted(self._members().items(), key=lambda item: item[1].name):
            rows.append({
                "ip": member.http.rsplit(":", 1)[0],
                "heap.percent": "10",
                "heap.current": "0b",
                # each member's heap is its own setting; every member of the sandbox's cluster gets the same
                "heap.max": _size(self.settings.heap_max, req.params.get("bytes")),
                "ram.percent": "50",
                "cpu": "1",
                "load_1m": f"{load[0]:.2f}",
                "load_5m": f"{load[1]:.2f}",
                "load_15m": f"{load[2]:.2f}",
                "node.role": "".join(sorted({"data": "d", "ingest": "i", "master": "m"}.get(r, "")
                                            for r in member.roles)),
                "master": "*" if node_id == master else "-",
                "name": member.name,
                "id": node_id[:4],
                "version": ES_VERSION,
                "http_address": member.http,
            })
        default = ["ip", "heap.percent", "ram.percent", "cpu", "load_1m", "load_5m", "load_15m", "node.role",
                   "master", "name"]
        return self._cat(req, rows, default)

    def cat_health(self, req: Request) -> Response:
        body = self._health(None)
        row = {
            "cluster": self.settings.cluster_name,
            "status": body["status"],
            "node.total": str(body["number_of_nodes"]),
            "node.data": str(body["number_of_data_nodes"]),
            "shards": str(body["active_shards"]),
            "pri": str(body["active_primary_shards"]),
            "relo": "0",
            "init": str(body["initializing_shards"]),
            "unassign": str(body["unassigned_shards"]),
            "active_shards_percent": f"{body['active_shards_percent_as_number']}%",
        }
        return self._cat(req, [row], list(row))

    def cat_indices(self, req: Request) -> Response:
        members = self._members()
        rows = []
        for name in self.resolve(req.match.get("index") or "_all"):
            meta = self._meta(name)
            health = cluster.index_health(meta, members)
            count = self.doc_count(name) if not meta["closed"] else 0
            size = _size(count * 256, req.params.get("bytes"))
            rows.append({
                "health": health["status"],
                "status": "close" if meta["closed"] else "open",
                "index": name,
                "uuid": meta["uuid"],
                "pri": "1",
                "rep": str(health["replicas"]),
                "docs.count": str(count),
                "docs.deleted": "0",
                "store.size": size,
                "pri.store.size": size,
            })
        return self._cat(req, rows, list(rows[0]) if rows else ["health", "status", "index"])

    def cat_shards(self, req: Request) -> Response:
        """One row per shard copy: the primary (p), replicas (r) started, initializing or unassigned."""
        members = self._members()
        rows: list[dict[str, Any]] = []
        for name in self.resolve(req.match.get("index") or "_all"):
            meta = self._meta(name)
            active = [n for n in meta["in_sync"] if n in members]
            copies = [(n, "STARTED") for n in active] + [
                (n, "INITIALIZING") for n in meta["initializing"] if n in members and n not in active]
            copies += [("", "UNASSIGNED")] * max(0, 1 + cluster.replicas_of(meta) - len(copies))
            for number, (node, state) in enumerate(copies):
                rows.append({"index": name, "shard": "0", "prirep": "p" if number == 0 else "r",
                             "state": state if node or number else "UNASSIGNED",
                             "node": members[node].name if node else None})
        return self._cat(req, rows, ["index", "shard", "prirep", "state", "node"])

    def nodes(self, _req: Request) -> Response:
        heap = self.settings.heap_max
        members = self._members()
        nodes = {}
        for node_id, member in members.items():
            nodes[node_id] = {
                "name": member.name,
                "transport_address": member.transport,
                "host": member.http.rsplit(":", 1)[0],
                "ip": member.http.rsplit(":", 1)[0],
                "version": ES_VERSION,
                "build_flavor": "stand-in",
                "roles": sorted(member.roles),
                "http": {"publish_address": member.http},
                "settings": {
                    "cluster": {"name": self.settings.cluster_name},
                    "node": {"name": member.name},
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
            "_nodes": {"total": len(nodes), "successful": len(nodes), "failed": 0},
            "cluster_name": self.settings.cluster_name,
            "nodes": nodes,
        }

    # -- snapshots ------------------------------------------------------------------------------
    def _at_master(self, handler: Handler) -> Handler:
        """The handler on the elected master: another member hands the request there."""
        def run(req: Request) -> Response:
            elected = self.cluster.master()
            if elected is None:
                raise no_master()
            return handler(req) if self._is_me(elected.node_id) else self._forward(elected, req)
        return run

    def get_repos(self, req: Request) -> Response:
        return 200, self.repositories.get(req.match.get("repo"))

    def put_repo(self, req: Request) -> Response:
        verify = req.params.get("verify", "true") != "false"
        self.repositories.put(req.match["repo"], req.json(), verify=verify)
        return 200, {"acknowledged": True}

    def delete_repo(self, req: Request) -> Response:
        self.repositories.delete(req.match["repo"])
        return 200, {"acknowledged": True}

    def verify_repo(self, req: Request) -> Response:
        return 200, self.repositories.verify(req.match["repo"])

    def create_snapshot(self, req: Request) -> Response:
        info = self.repositories.create(req.match["repo"], req.match["snap"], req.json())
        if req.params.get("wait_for_completion") == "true":
            return 200, {"snapshot": info}
        return 200, {"accepted": True}

    def get_snapshot(self, req: Request) -> Response:
        return 200, self.repositories.snapshots_of(req.match["repo"], req.match["snap"])

    def delete_snapshot(self, req: Request) -> Response:
        self.repositories.delete_snapshot(req.match["repo"], req.match["snap"])
        return 200, {"acknowledged": True}

    def restore(self, req: Request) -> Response:
        result = self.repositories.restore(req.match["repo"], req.match["snap"], req.json())
        if req.params.get("wait_for_completion") == "true":
            return 200, {"snapshot": result}
        return 200, {"accepted": True}
