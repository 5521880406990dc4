"""Document, search and bulk endpoints of the stand-in (Elasticsearch 8 shapes)."""

from __future__ import annotations

import json
from urllib.parse import quote

from . import query
from .request import SHARDS, Request, Response
from .store import EsError, JsonDict, Store, new_id


class DocumentApi:
    """PUT/POST/GET/DELETE /{index}/_doc, _create, _update, _delete_by_query, _search, _count, _bulk."""

    store: Store

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
        method, verb = {"delete": ("DELETE", "_doc"), "update": ("POST", "_update"),
                        "create": ("PUT", "_create")}.get(action, ("PUT", "_doc"))
        path = f"/{quote(index, safe='')}/{verb}/{quote(doc_id, safe='')}"
        sub = Request(method, path, {}, json.dumps(source).encode(), {"index": index, "id": doc_id})
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
