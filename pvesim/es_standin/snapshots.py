"""One node's snapshot repository locations (type fs, honouring path.repo), in Elasticsearch's shapes.

STAND-IN model (not Elasticsearch's blob format): a registered repository is a name and a `location`
(repositories.py keeps it in the cluster state). Every node resolves that location against ITS OWN
path.repo on ITS OWN filesystem (each node of the sandbox is a container of its own), so unless the
directory is a shared filesystem a node sees only the files it wrote itself, as with Elasticsearch's
fs repository. A location holds:

    <snapshot>/snapshot.json          the snapshot's info, written by the master
    <snapshot>/indices/<index>.json   an index's documents, written by the node holding its primary
    index.latest                      the snapshots the master lists there, written by the master
    tests-<seed>/master.dat           verification probes: the master's, then one per node
    tests-<seed>/data-<node id>.dat   (removed once verification is over)

This module is the node-local part (files in this node's locations) and pure helpers; who writes what
is decided in repositories.py.
"""

from __future__ import annotations

import json
import re
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .config import ES_VERSION
from .store import EsError, JsonDict, write_json

VERSION_ID = 8_15_00_99


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def names_of(value: Any) -> list[str]:
    """`"a,b"` or `["a", "b"]` -> ['a', 'b'] (empty when unset)."""
    if not value:
        return []
    items = value.split(",") if isinstance(value, str) else value
    return [str(i).strip() for i in items if str(i).strip()]


# -- pure helpers ------------------------------------------------------------------------------------
def repository_entry(name: str, body: JsonDict) -> JsonDict:
    """The registration kept for PUT /_snapshot/{repo}: type fs with a settings.location."""
    kind = body.get("type")
    if kind != "fs":
        raise EsError(500, "repository_exception", f"[{name}] repository type [{kind}] does not exist")
    settings = body.get("settings", {})
    location = str(settings.get("location", ""))
    if not location:
        raise EsError(500, "repository_exception", f"[{name}] missing location")
    return {"type": "fs", "settings": {**settings, "location": location}}


def read_only(entry: JsonDict) -> bool:
    """`settings.readonly`: Elasticsearch neither writes nor verifies with probes into such a repository."""
    return str(entry["settings"].get("readonly", "false")).lower() == "true"


def validate_snapshot_name(repo: str, snapshot: str) -> None:
    if not re.fullmatch(r"[a-z0-9][^\\/*?\"<>| ,#A-Z]*", snapshot):
        raise EsError(
            400,
            "invalid_snapshot_name_exception",
            f"[{repo}:{snapshot}] Invalid snapshot name [{snapshot}], must be lowercase",
        )


def snapshot_info(repo: str, snapshot: str, body: JsonDict, indices: list[str], start: int, end: int,
                  failures: list[JsonDict]) -> JsonDict:
    """Elasticsearch's snapshot info: PARTIAL when a shard (one per index here) failed."""
    return {
        "snapshot": snapshot,
        "uuid": uuid.uuid4().hex[:22],
        "repository": repo,
        "version_id": VERSION_ID,
        "version": ES_VERSION,
        "indices": indices,
        "data_streams": [],
        "include_global_state": bool(body.get("include_global_state", True)),
        "metadata": body.get("metadata", {}),
        "state": "PARTIAL" if failures else "SUCCESS",
        "start_time": _iso(start),
        "start_time_in_millis": start,
        "end_time": _iso(end),
        "end_time_in_millis": end,
        "duration_in_millis": end - start,
        "failures": failures,
        "shards": {"total": len(indices), "failed": len(failures),
                   "successful": len(indices) - len(failures)},
        "feature_states": [],
    }


def restore_plan(info: JsonDict, body: JsonDict) -> dict[str, str]:
    """The indices of a snapshot a restore body picks (`indices`, default all), each with its target
    name (`rename_pattern`/`rename_replacement`); 404 for a named index not in the snapshot."""
    repo, snapshot = info["repository"], info["snapshot"]
    wanted = names_of(body.get("indices")) or info["indices"]
    missing = [w for w in wanted if "*" not in w and w not in info["indices"]]
    if missing:
        raise EsError(
            404,
            "snapshot_restore_exception",
            f"[{repo}:{snapshot}/{info['uuid']}] index [{missing[0]}] not found in snapshot",
        )
    chosen = [n for n in info["indices"] if any(re.fullmatch(w.replace("*", ".*"), n) for w in wanted)]
    pattern, replacement = body.get("rename_pattern"), body.get("rename_replacement", "")
    return {n: re.sub(pattern, replacement.replace("$", "\\"), n) if pattern else n for n in chosen}


def restore_conflict(info: JsonDict, target: str) -> EsError:
    return EsError(
        500,
        "snapshot_restore_exception",
        f"[{info['repository']}:{info['snapshot']}/{info['uuid']}] cannot restore index [{target}] because "
        "an open index with same name already exists in the cluster. Either close "
        "or delete the existing index or restore the index under a different name "
        "by providing a rename pattern and replacement name",
    )


def not_shared(repo: str, path: Path, node: str) -> EsError:
    """A node that cannot read the master's probe (Elasticsearch's BlobStoreRepository.verify wording);
    `node` describes the node like Elasticsearch's DiscoveryNode: {name}{id}{ip}{ip:port}."""
    return EsError(
        500,
        "repository_verification_exception",
        f"[{repo}] a file written by master to the store [{path}] cannot be accessed on the node [{node}]. "
        f"This might indicate that the store [{path}] is not shared between this node and the master "
        "node or that permissions on the store don't allow reading files written by the master node",
    )


# -- this node's locations -----------------------------------------------------------------------------
class Snapshots:
    """The snapshot files in this node's repository locations (under this node's path.repo)."""

    def __init__(self, path_repo: list[Path]) -> None:
        self.path_repo = [p.resolve() for p in path_repo]

    def location(self, name: str, entry: JsonDict) -> Path:
        """Resolve a repository's location against path.repo like Elasticsearch (relative -> under
        the first entry); 500 repository_exception outside every path.repo entry."""
        location = str(entry["settings"]["location"])
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

    # -- verification ---------------------------------------------------------------------------
    def start_verification(self, name: str, root: Path) -> str:
        """On the master: write tests-<seed>/master.dat into its location; the seed."""
        seed = uuid.uuid4().hex[:22]
        try:
            (root / f"tests-{seed}").mkdir(parents=True)
            (root / f"tests-{seed}" / "master.dat").write_text(seed)
        except OSError as err:
            raise EsError(
                500, "repository_verification_exception", f"[{name}] cannot write to location [{root}]: {err}"
            ) from err
        return seed

    def verify(self, name: str, root: Path, seed: str, node_id: str, node: str) -> None:
        """On every master/data node: write data-<node id>.dat next to the master's probe, then read
        the master's. A node that cannot see it removes its own probe (the master cleans up only the
        location it sees)."""
        probe = root / f"tests-{seed}"
        try:
            probe.mkdir(parents=True, exist_ok=True)
            (probe / f"data-{node_id}.dat").write_text(seed)
        except OSError as err:
            raise EsError(
                500,
                "repository_verification_exception",
                f"[{name}] store location [{root}] is not accessible on the node [{node}]",
            ) from err
        master = probe / "master.dat"
        if not master.is_file():
            shutil.rmtree(probe, ignore_errors=True)
            raise not_shared(name, root, node)
        read = master.read_text()
        if read != seed:
            raise EsError(
                500,
                "repository_verification_exception",
                f"[{name}] Seed read from master.dat was [{read}] but expected seed [{seed}]",
            )

    def end_verification(self, root: Path, seed: str) -> None:
        shutil.rmtree(root / f"tests-{seed}", ignore_errors=True)

    # -- snapshots ------------------------------------------------------------------------------
    def write_index(self, root: Path, snapshot: str, index: str, export: JsonDict) -> None:
        write_json(root / snapshot / "indices" / f"{index}.json", export)

    def write_info(self, root: Path, info: JsonDict) -> None:
        """snapshot.json, then index.latest listing the snapshots of this location."""
        write_json(root / info["snapshot"] / "snapshot.json", info)
        write_json(root / "index.latest", {"snapshots": self.names(root)})

    def exists(self, root: Path, snapshot: str) -> bool:
        return (root / snapshot / "snapshot.json").is_file()

    def read_info(self, repo: str, root: Path, snapshot: str) -> JsonDict:
        info = root / snapshot / "snapshot.json"
        if not info.is_file():
            raise EsError(404, "snapshot_missing_exception", f"[{repo}:{snapshot}] is missing")
        data: JsonDict = json.loads(info.read_text())
        return data

    def names(self, root: Path) -> list[str]:
        """The snapshots in this location, oldest first."""
        infos = [json.loads(p.read_text()) for p in root.glob("*/snapshot.json")]
        return [i["snapshot"] for i in sorted(infos, key=lambda i: i["start_time_in_millis"])]

    def delete(self, repo: str, root: Path, snapshot: str) -> None:
        """Remove the snapshot's directory from this location (what the master sees of it)."""
        self.read_info(repo, root, snapshot)
        shutil.rmtree(root / snapshot)
        write_json(root / "index.latest", {"snapshots": self.names(root)})

    def read_index(self, info: JsonDict, root: Path, index: str, node: str) -> JsonDict:
        """An index's documents from this location; 500 naming the missing file when this node's
        location does not hold it (another node wrote it into its own, not shared, location)."""
        path = root / info["snapshot"] / "indices" / f"{index}.json"
        if not path.is_file():
            raise EsError(
                500,
                "snapshot_restore_exception",
                f"[{info['repository']}:{info['snapshot']}/{info['uuid']}] failed to restore index [{index}] "
                f"on node [{node}]: missing blob [{path}]",
                caused_by={"type": "no_such_file_exception", "reason": str(path)},
            )
        data: JsonDict = json.loads(path.read_text())
        return data
