"""Index and document endpoints over the cluster: any member answers, as in Elasticsearch.

Index metadata comes from the cluster state (changed through the master). A document write runs on
the node holding the index's primary (forwarded there over REST when that is another member) and is
replicated before the answer; a read runs on this node when it holds an in-sync copy, else on the
primary's node. A search gathers each index's documents from a node holding it.
"""

from __future__ import annotations

import base64
import uuid
from typing import Any
from urllib.parse import quote

from . import cluster
from .cluster import Member
from .documents import DocumentApi
from .node import ClusterNode
from .request import SHARDS, Handler, Request, Response
from .store import EsError, JsonDict, resolve_names, validate_index_name
from .transport import TransportError, call


class ClusterApi(DocumentApi):
    """Document and index endpoints, routed to the member that holds the data."""

    cluster: ClusterNode

    # -- helpers ------------------------------------------------------------------------------------
    def _is_me(self, node_id: str) -> bool:
        return node_id == self.cluster.me.node_id

    def _indices(self) -> dict[str, Any]:
        indices: dict[str, Any] = self.cluster.state["indices"]
        return indices

    def resolve(self, expression: str) -> list[str]:
        return resolve_names(expression or "_all", self._indices())

    def _meta(self, name: str) -> dict[str, Any]:
        meta = self._indices().get(name)
        if meta is None:
            raise EsError(404, "index_not_found_exception", f"no such index [{name}]",
                          **{"resource.type": "index_or_alias", "resource.id": name, "index_uuid": "_na_",
                             "index": name})
        return dict(meta)

    def _forward(self, member: Member, req: Request) -> Response:
        """Hand the request to another member (over the transport, as members talk); its answer is ours."""
        if req.forwarded:  # the routing moved while the request travelled: the client retries
            raise EsError(503, "no_shard_available_action_exception", "STAND-IN: routing changed, retry")
        rest = {"method": req.method, "path": req.path, "params": req.params,
                "body": base64.b64encode(req.body).decode()}
        try:
            answer = call(member.transport, "rest", rest, timeout=30)
        except TransportError as err:
            raise err.as_es_error() from err
        return int(answer["status"]), answer["body"]

    def _ensure_index(self, name: str) -> None:
        """A write to a missing index creates it (action.auto_create_index), through the master."""
        if name not in self._indices():
            validate_index_name(name)
            new = {"index": name, "uuid": uuid.uuid4().hex[:22], "body": {}}
            self.cluster.master_call("create_index", new)

    def _write(self, req: Request, handler: Handler, *, create: bool = True) -> Response:
        name = req.match["index"]
        if create:
            self._ensure_index(name)
        holder = self.cluster.holder(name, write=True)
        if self._is_me(holder.node_id):
            result: Response = self.cluster.write_locked(name, lambda: handler(req))
            return result
        return self._forward(holder, req)

    def _read(self, req: Request, handler: Handler) -> Response:
        holder = self.cluster.holder(req.match["index"], write=False)
        if self._is_me(holder.node_id):
            return handler(req)
        return self._forward(holder, req)

    # -- documents ----------------------------------------------------------------------------------
    def put_doc(self, req: Request) -> Response:
        return self._write(req, super().put_doc)

    def create_doc(self, req: Request) -> Response:
        return self._write(req, super().create_doc)

    def post_doc(self, req: Request) -> Response:
        return self._write(req, super().post_doc)

    def delete_doc(self, req: Request) -> Response:
        self._meta(req.match["index"])
        return self._write(req, super().delete_doc, create=False)

    def update_doc(self, req: Request) -> Response:
        return self._write(req, super().update_doc)

    def get_doc(self, req: Request) -> Response:
        return self._read(req, super().get_doc)

    def delete_by_query(self, req: Request) -> Response:
        deleted = 0
        for name in self.resolve(req.match["index"]):
            sub = Request(req.method, f"/{quote(name, safe='')}/_delete_by_query", req.params, req.body,
                          {"index": name}, req.forwarded)
            status, body = self._write(sub, super().delete_by_query, create=False)
            if status != 200:
                return status, body
            deleted += int(body["deleted"])
        return 200, {"took": 1, "timed_out": False, "total": deleted, "deleted": deleted, "batches": 1,
                     "version_conflicts": 0, "noops": 0, "failures": []}

    def _docs(self, expression: str) -> list[tuple[str, str, JsonDict]]:
        out: list[tuple[str, str, JsonDict]] = []
        for name in self.resolve(expression):
            holder = self.cluster.holder(name, write=False)
            if self._is_me(holder.node_id):
                with self.store.lock:
                    out += [(name, i, d.source) for i, d in self.store.get(name).docs.items()]
                continue
            try:
                docs = call(holder.transport, "docs", {"index": name}, timeout=30)
            except TransportError as err:
                raise err.as_es_error() from err
            out += [(name, i, source) for i, source in docs.items()]
        return out

    def doc_count(self, name: str) -> int:
        """Documents in an index, from a node holding it (0 when no copy is live)."""
        try:
            return len([d for d in self._docs(name) if d[0] == name])
        except EsError:
            return 0

    # -- indices ------------------------------------------------------------------------------------
    def create_index(self, req: Request) -> Response:
        name = req.match["index"]
        validate_index_name(name)
        if name in self._indices():
            existing = self._indices()[name]["uuid"]
            raise EsError(400, "resource_already_exists_exception",
                          f"index [{name}/{existing}] already exists", index=name, index_uuid=existing)
        self.cluster.master_call("create_index", {"index": name, "uuid": uuid.uuid4().hex[:22],
                                                  "body": req.json()})
        return 200, {"acknowledged": True, "shards_acknowledged": True, "index": name}

    def delete_index(self, req: Request) -> Response:
        for name in self.resolve(req.match["index"]):
            self.cluster.master_call("delete_index", {"index": name})
        return 200, {"acknowledged": True}

    def head_index(self, req: Request) -> Response:
        return (200 if req.match["index"] in self._indices() else 404), None

    def get_index(self, req: Request) -> Response:
        result = {}
        for name in self.resolve(req.match["index"]):
            meta = self._meta(name)
            replicas = str(cluster.replicas_of(meta))
            settings = {"index": {"number_of_shards": "1", "number_of_replicas": replicas,
                                  "uuid": meta["uuid"], "provided_name": name,
                                  "creation_date": str(meta["created"])}}
            result[name] = {"aliases": {}, "mappings": meta["mappings"], "settings": settings}
        return 200, result

    def open_close(self, req: Request) -> Response:
        for name in self.resolve(req.match["index"]):
            self.cluster.master_call("update_index", {"index": name, "changes": {
                "closed": req.match["action"] == "close"}})
        return 200, {"acknowledged": True, "shards_acknowledged": True}

    def get_mapping(self, req: Request) -> Response:
        return 200, {n: {"mappings": self._meta(n)["mappings"]} for n in self.resolve(req.match["index"])}

    def put_mapping(self, req: Request) -> Response:
        for name in self.resolve(req.match["index"]):
            mappings = dict(self._meta(name)["mappings"])
            mappings["properties"] = {**mappings.get("properties", {}), **req.json().get("properties", {})}
            self.cluster.master_call("update_index", {"index": name, "changes": {"mappings": mappings}})
        return 200, {"acknowledged": True}

    def refresh(self, req: Request) -> Response:
        if req.match.get("index"):
            self.resolve(req.match["index"])
        return 200, {"_shards": SHARDS}
