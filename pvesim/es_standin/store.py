"""Indices and documents of the stand-in, kept in memory and persisted under path.data (fsync'd JSON)."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

JsonDict = dict[str, Any]
_BAD_INDEX_CHARS = re.compile(r'[\\/*?"<>| ,#:]')


class EsError(Exception):
    """An error answered in Elasticsearch's JSON shape with its HTTP status."""

    def __init__(self, status: int, kind: str, reason: str, **extra: Any) -> None:
        super().__init__(reason)
        self.status, self.kind, self.reason, self.extra = status, kind, reason, extra

    def body(self) -> JsonDict:
        """`{"error": {"root_cause": [...], "type", "reason", ...}, "status": N}` as ES answers."""
        cause = {"type": self.kind, "reason": self.reason, **self.extra}
        return {"error": {"root_cause": [cause], **cause}, "status": self.status}


def index_not_found(name: str) -> EsError:
    return EsError(
        404,
        "index_not_found_exception",
        f"no such index [{name}]",
        **{"resource.type": "index_or_alias", "resource.id": name, "index_uuid": "_na_", "index": name},
    )


def new_id() -> str:
    """An auto-generated document id in Elasticsearch's 20-character URL-safe style."""
    return uuid.uuid4().hex[:20]


def write_json(path: Path, data: Any) -> None:
    """Write atomically and durably: temp file, fsync, rename, fsync the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def validate_index_name(name: str) -> None:
    """Elasticsearch's index name rules (lowercase, no leading _-+, no special characters)."""
    reason = ""
    if name != name.lower():
        reason = "must be lowercase"
    elif name[:1] in ("_", "-", "+") or name in (".", ".."):
        reason = "must not start with '_', '-', or '+'"
    elif _BAD_INDEX_CHARS.search(name):
        reason = 'must not contain the following characters [ , ", *, \\, <, |, ,, >, /, ?, #, :]'
    if reason:
        raise EsError(
            400,
            "invalid_index_name_exception",
            f"Invalid index name [{name}], {reason}",
            index=name,
            index_uuid="_na_",
        )


@dataclass
class Doc:
    source: JsonDict
    version: int
    seq_no: int


@dataclass
class Index:
    name: str
    uuid: str
    created: int
    mappings: JsonDict = field(default_factory=dict)
    settings: JsonDict = field(default_factory=dict)
    closed: bool = False
    seq_no: int = -1
    docs: dict[str, Doc] = field(default_factory=dict)

    def meta(self) -> JsonDict:
        return {
            "name": self.name,
            "uuid": self.uuid,
            "created": self.created,
            "mappings": self.mappings,
            "settings": self.settings,
            "closed": self.closed,
            "seq_no": self.seq_no,
        }

    def export(self) -> JsonDict:
        """Everything needed to restore the index (used by snapshots)."""
        docs = {
            i: {"source": d.source, "version": d.version, "seq_no": d.seq_no} for i, d in self.docs.items()
        }
        return {"meta": self.meta(), "docs": docs}


def resolve_names(expression: str, known: Iterable[str]) -> list[str]:
    """`a,b`, `logs-*`, `_all`, `*` -> names among `known`; a missing concrete name is a 404."""
    names: list[str] = []
    every = sorted(known)
    for part in expression.split(","):
        if part in ("_all", "*", ""):
            names += every
        elif "*" in part or "?" in part:
            names += [n for n in every if fnmatch.fnmatchcase(n, part)]
        elif part in every:
            names.append(part)
        else:
            raise index_not_found(part)
    return list(dict.fromkeys(names))


def _doc_file(directory: Path, doc_id: str) -> Path:
    return directory / "docs" / (doc_id.encode().hex() + ".json")


class Store:
    """All indices; every change is on disk (fsync'd) before the call returns.

    `listener(index, doc_id, doc or None)` hears of each document write (the cluster replicates it).
    """

    def __init__(self, root: Path) -> None:
        self.root = root / "indices"
        self.lock = threading.RLock()
        self.indices: dict[str, Index] = {}
        self.listener: Callable[[str, str, Doc | None], None] | None = None
        self.root.mkdir(parents=True, exist_ok=True)
        self._load()

    def _load(self) -> None:
        for meta_file in sorted(self.root.glob("*/meta.json")):
            meta = json.loads(meta_file.read_text())
            index = Index(
                meta["name"],
                meta["uuid"],
                meta["created"],
                meta["mappings"],
                meta["settings"],
                meta["closed"],
                meta["seq_no"],
            )
            for doc_file in sorted((meta_file.parent / "docs").glob("*.json")):
                data = json.loads(doc_file.read_text())
                index.docs[data["id"]] = Doc(data["source"], data["version"], data["seq_no"])
            self.indices[index.name] = index

    def _dir(self, name: str) -> Path:
        return self.root / name

    def _save_meta(self, index: Index) -> None:
        write_json(self._dir(index.name) / "meta.json", index.meta())

    def create_index(self, name: str, body: JsonDict | None = None, index_uuid: str | None = None) -> Index:
        """PUT /{index}; mappings and settings are kept but not enforced (a copy keeps the index's uuid)."""
        validate_index_name(name)
        with self.lock:
            if name in self.indices:
                existing = self.indices[name]
                raise EsError(
                    400,
                    "resource_already_exists_exception",
                    f"index [{name}/{existing.uuid}] already exists",
                    index=name,
                    index_uuid=existing.uuid,
                )
            body = body or {}
            index = Index(
                name,
                index_uuid or uuid.uuid4().hex[:22],
                int(time.time() * 1000),
                body.get("mappings", {}),
                body.get("settings", {}),
            )
            self._save_meta(index)
            self.indices[name] = index
            return index

    def delete_index(self, name: str) -> None:
        with self.lock:
            for index_name in self.resolve(name):
                shutil.rmtree(self._dir(index_name), ignore_errors=True)
                del self.indices[index_name]

    def get(self, name: str, *, open_only: bool = True) -> Index:
        """The index or 404 index_not_found_exception; 400 index_closed_exception if closed."""
        index = self.indices.get(name)
        if index is None:
            raise index_not_found(name)
        if open_only and index.closed:
            raise EsError(400, "index_closed_exception", "closed", index=name, index_uuid=index.uuid)
        return index

    def resolve(self, expression: str) -> list[str]:
        """`a,b`, `logs-*`, `_all`, `*` -> concrete index names; a missing concrete name is a 404."""
        return resolve_names(expression, self.indices)

    def set_closed(self, name: str, closed: bool) -> None:
        with self.lock:
            for index_name in self.resolve(name):
                index = self.indices[index_name]
                index.closed = closed
                self._save_meta(index)

    def update_mappings(self, name: str, properties: JsonDict) -> None:
        """PUT /{index}/_mapping: kept (advisory only, nothing is enforced)."""
        with self.lock:
            index = self.get(name, open_only=False)
            index.mappings.setdefault("properties", {}).update(properties)
            self._save_meta(index)

    def put_doc(
        self, name: str, doc_id: str, source: JsonDict, *, create_only: bool = False
    ) -> tuple[Doc, str]:
        """Index a document (creating the index like auto_create_index); returns (doc, result)."""
        with self.lock:
            if name not in self.indices:
                self.create_index(name)
            index = self.get(name)
            old = index.docs.get(doc_id)
            if old is not None and create_only:
                raise EsError(
                    409,
                    "version_conflict_engine_exception",
                    f"[{doc_id}]: version conflict, document already exists "
                    f"(current version [{old.version}])",
                    index=name,
                    index_uuid=index.uuid,
                    shard="0",
                )
            index.seq_no += 1
            doc = Doc(source, (old.version + 1) if old else 1, index.seq_no)
            write_json(
                _doc_file(self._dir(name), doc_id),
                {"id": doc_id, "source": source, "version": doc.version, "seq_no": doc.seq_no},
            )
            index.docs[doc_id] = doc
            self._save_meta(index)
            if self.listener is not None:
                self.listener(name, doc_id, doc)
            return doc, "updated" if old else "created"

    def delete_doc(self, name: str, doc_id: str) -> Doc | None:
        """Remove a document; None when it did not exist."""
        with self.lock:
            index = self.get(name)
            doc = index.docs.pop(doc_id, None)
            if doc is None:
                return None
            _doc_file(self._dir(name), doc_id).unlink(missing_ok=True)
            index.seq_no += 1
            self._save_meta(index)
            if self.listener is not None:
                self.listener(name, doc_id, None)
            return Doc(doc.source, doc.version + 1, index.seq_no)

    def apply_doc(self, name: str, doc_id: str, doc: Doc | None, seq_no: int) -> None:
        """A replica applies the primary's write as the primary numbered it (None: a delete)."""
        with self.lock:
            index = self.get(name, open_only=False)
            if doc is None:
                index.docs.pop(doc_id, None)
                _doc_file(self._dir(name), doc_id).unlink(missing_ok=True)
            else:
                write_json(
                    _doc_file(self._dir(name), doc_id),
                    {"id": doc_id, "source": doc.source, "version": doc.version, "seq_no": doc.seq_no},
                )
                index.docs[doc_id] = doc
            index.seq_no = max(index.seq_no, seq_no)
            self._save_meta(index)

    def import_index(self, data: JsonDict, name: str, *, keep_uuid: bool = False) -> Index:
        """Replace (or create) index `name` from an export (snapshot restore; a replica's recovery
        keeps the primary's uuid)."""
        with self.lock:
            if name in self.indices:
                self.delete_index(name)
            meta = data["meta"]
            index = Index(
                name,
                meta["uuid"] if keep_uuid else uuid.uuid4().hex[:22],
                meta["created"],
                meta["mappings"],
                meta["settings"],
                False,
                meta["seq_no"],
            )
            self._save_meta(index)
            for doc_id, doc in data["docs"].items():
                write_json(_doc_file(self._dir(name), doc_id), {"id": doc_id, **doc})
                index.docs[doc_id] = Doc(doc["source"], doc["version"], doc["seq_no"])
            self.indices[name] = index
            return index
