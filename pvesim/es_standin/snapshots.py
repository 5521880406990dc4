"""Snapshot repositories (type fs, honouring path.repo), snapshots and restore, in Elasticsearch's shapes.

A snapshot is a directory <location>/<snapshot>/ holding snapshot.json and one JSON file per index;
the location also gets an `index.latest` list like Elasticsearch's repository metadata.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .config import ES_VERSION
from .store import EsError, JsonDict, Store, write_json

VERSION_ID = 8_15_00_99


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _names(value: Any) -> list[str]:
    """`"a,b"` or `["a", "b"]` -> ['a', 'b'] (empty when unset)."""
    if not value:
        return []
    items = value.split(",") if isinstance(value, str) else value
    return [str(i).strip() for i in items if str(i).strip()]


class Snapshots:
    """Registered repositories (persisted under path.data) and the snapshots in their locations."""

    def __init__(self, data_dir: Path, path_repo: list[Path], store: Store) -> None:
        self.file = data_dir / "repositories.json"
        self.path_repo = [p.resolve() for p in path_repo]
        self.store = store
        self.lock = threading.RLock()
        self.repos: dict[str, JsonDict] = json.loads(self.file.read_text()) if self.file.is_file() else {}

    def _location(self, name: str, location: str) -> Path:
        """Resolve a location against path.repo like Elasticsearch (relative -> under the first)."""
        if not self.path_repo:
            raise EsError(
                500,
                "repository_exception",
                f"[{name}] location [{location}] doesn't match any of the locations specified "
                "by path.repo because this setting is empty",
            )
        path = Path(location)
        path = (path if path.is_absolute() else self.path_repo[0] / path).resolve()
        if not any(path == root or root in path.parents for root in self.path_repo):
            roots = ", ".join(str(r) for r in self.path_repo)
            raise EsError(
                500,
                "repository_exception",
                f"[{name}] location [{location}] doesn't match any of the locations specified "
                f"by path.repo: [{roots}]",
            )
        return path

    def put_repository(self, name: str, body: JsonDict) -> None:
        """PUT /_snapshot/{repo}: type fs with settings.location under path.repo; verified writable."""
        kind = body.get("type")
        if kind != "fs":
            raise EsError(500, "repository_exception", f"[{name}] repository type [{kind}] does not exist")
        location = str(body.get("settings", {}).get("location", ""))
        if not location:
            raise EsError(500, "repository_exception", f"[{name}] missing location")
        path = self._location(name, location)
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / f"tests-{uuid.uuid4().hex[:8]}"
            probe.write_text("verify")
            probe.unlink()
        except OSError as err:
            raise EsError(
                500, "repository_verification_exception", f"[{name}] cannot write to location [{path}]: {err}"
            ) from err
        with self.lock:
            self.repos[name] = {"type": "fs", "settings": {**body.get("settings", {}), "location": location}}
            write_json(self.file, self.repos)

    def get_repositories(self, name: str | None) -> JsonDict:
        if name in (None, "_all", "*"):
            return dict(self.repos)
        return {n: self._repo(n) for n in _names(name)}

    def delete_repository(self, name: str) -> None:
        with self.lock:
            self._repo(name)
            del self.repos[name]
            write_json(self.file, self.repos)

    def _repo(self, name: str) -> JsonDict:
        if name not in self.repos:
            raise EsError(404, "repository_missing_exception", f"[{name}] missing")
        return self.repos[name]

    def _repo_path(self, name: str) -> Path:
        return self._location(name, self._repo(name)["settings"]["location"])

    def _read(self, repo: str, snapshot: str) -> JsonDict:
        info = self._repo_path(repo) / snapshot / "snapshot.json"
        if not info.is_file():
            raise EsError(404, "snapshot_missing_exception", f"[{repo}:{snapshot}] is missing")
        data: JsonDict = json.loads(info.read_text())
        return data

    def _list(self, repo: str) -> list[str]:
        root = self._repo_path(repo)
        found = [p.parent for p in root.glob("*/snapshot.json")]
        return [
            p.name
            for p in sorted(
                found, key=lambda p: json.loads((p / "snapshot.json").read_text())["start_time_in_millis"]
            )
        ]

    def create(self, repo: str, snapshot: str, body: JsonDict) -> JsonDict:
        """PUT /_snapshot/{repo}/{snap}: copy the chosen (default: all open) indices to the location."""
        if not re.fullmatch(r"[a-z0-9][^\\/*?\"<>| ,#A-Z]*", snapshot):
            raise EsError(
                400,
                "invalid_snapshot_name_exception",
                f"[{repo}:{snapshot}] Invalid snapshot name [{snapshot}], must be lowercase",
            )
        with self.lock, self.store.lock:
            target = self._repo_path(repo) / snapshot
            if (target / "snapshot.json").is_file():
                raise EsError(
                    400,
                    "invalid_snapshot_name_exception",
                    f"[{repo}:{snapshot}] Invalid snapshot name [{snapshot}], "
                    "snapshot with the same name already exists",
                )
            wanted = _names(body.get("indices")) or ["_all"]
            indices = [n for w in wanted for n in self.store.resolve(w)]
            start = int(time.time() * 1000)
            for name in indices:
                write_json(
                    target / "indices" / f"{name}.json", self.store.get(name, open_only=False).export()
                )
            end = int(time.time() * 1000)
            info = {
                "snapshot": snapshot,
                "uuid": uuid.uuid4().hex[:22],
                "repository": repo,
                "version_id": VERSION_ID,
                "version": ES_VERSION,
                "indices": indices,
                "data_streams": [],
                "include_global_state": bool(body.get("include_global_state", True)),
                "metadata": body.get("metadata", {}),
                "state": "SUCCESS",
                "start_time": _iso(start),
                "start_time_in_millis": start,
                "end_time": _iso(end),
                "end_time_in_millis": end,
                "duration_in_millis": end - start,
                "failures": [],
                "shards": {"total": len(indices), "failed": 0, "successful": len(indices)},
                "feature_states": [],
            }
            write_json(target / "snapshot.json", info)
            write_json(target.parent / "index.latest", {"snapshots": self._list(repo)})
            return info

    def get(self, repo: str, snapshot: str) -> JsonDict:
        """GET /_snapshot/{repo}/{snap|_all|a,b}."""
        names = self._list(repo) if snapshot in ("_all", "*") else _names(snapshot)
        snaps = [self._read(repo, n) for n in names]
        return {"snapshots": snaps, "total": len(snaps), "remaining": 0}

    def delete(self, repo: str, snapshot: str) -> None:
        with self.lock:
            self._read(repo, snapshot)
            shutil.rmtree(self._repo_path(repo) / snapshot)
            write_json(self._repo_path(repo) / "index.latest", {"snapshots": self._list(repo)})

    def restore(self, repo: str, snapshot: str, body: JsonDict) -> JsonDict:
        """POST .../_restore: fails if an open index of the same name exists, as Elasticsearch does."""
        with self.lock, self.store.lock:
            info = self._read(repo, snapshot)
            wanted = _names(body.get("indices")) or info["indices"]
            chosen = [
                n for n in info["indices"] if any(re.fullmatch(w.replace("*", ".*"), n) for w in wanted)
            ]
            missing = [w for w in wanted if "*" not in w and w not in info["indices"]]
            if missing:
                raise EsError(
                    404,
                    "snapshot_restore_exception",
                    f"[{repo}:{snapshot}/{info['uuid']}] index [{missing[0]}] not found in snapshot",
                )
            pattern, replacement = body.get("rename_pattern"), body.get("rename_replacement", "")
            renamed = {
                n: re.sub(pattern, replacement.replace("$", "\\"), n) if pattern else n for n in chosen
            }
            for target in renamed.values():
                existing = self.store.indices.get(target)
                if existing is not None and not existing.closed:
                    raise EsError(
                        500,
                        "snapshot_restore_exception",
                        f"[{repo}:{snapshot}/{info['uuid']}] cannot restore index [{target}] because "
                        "an open index with same name already exists in the cluster. Either close "
                        "or delete the existing index or restore the index under a different name "
                        "by providing a rename pattern and replacement name",
                    )
            root = self._repo_path(repo) / snapshot / "indices"
            for source, target in renamed.items():
                self.store.import_index(json.loads((root / f"{source}.json").read_text()), target)
            count = len(renamed)
            return {
                "snapshot": snapshot,
                "indices": list(renamed.values()),
                "shards": {"total": count, "failed": 0, "successful": count},
            }
