"""Snapshot repositories across the cluster: a STAND-IN model of Elasticsearch 8's, not its code.

- Registration (PUT /_snapshot/{repo}) runs on the master and goes into the cluster state, so every
  member lists the repository and a DELETE on any member removes it everywhere. A single node is the
  master of its own one-node cluster: the same path.
- Verification (on registration unless `?verify=false`, and POST /_snapshot/{repo}/_verify): the
  master writes tests-<seed>/master.dat into its location; every live master/data node, asked over
  the transport (`repo_verify`), writes tests-<seed>/data-<node id>.dat into ITS OWN location and
  must read the master's file there. Node-local directories fail this with Elasticsearch's
  repository_verification_exception (500), one entry per node that could not.
- Snapshot (PUT /_snapshot/{repo}/{snap}, handed to the master by any member): each index's data is
  written by the node holding its primary into that node's location (`snapshot_index`); the
  snapshot's info and index.latest by the master into the master's. With non-shared locations each
  node holds only part of the repository.
- Listing, deleting and restoring (handed to the master) see the master's location. A restore
  places each index on a data node as allocation would (the least loaded), and that node reads the
  index from its own location (`restore_index`): a file it does not have fails the restore (500).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from . import cluster
from .cluster import Member
from .node import ClusterNode
from .snapshots import (
    Snapshots,
    names_of,
    read_only,
    repository_entry,
    restore_conflict,
    restore_plan,
    snapshot_info,
    validate_snapshot_name,
)
from .store import EsError, JsonDict, resolve_names
from .transport import TransportError, call

VERIFY_ACTION = "internal:admin/repository/verify"
TRANSFER_TIMEOUT_S = 60.0


def describe(member: Member) -> str:
    """A node as Elasticsearch prints a DiscoveryNode: {name}{id}{ip}{ip:port}."""
    address = member.transport or member.http
    return f"{{{member.name}}}{{{member.node_id}}}{{{address.rsplit(':', 1)[0]}}}{{{address}}}"


def java_name(kind: str) -> str:
    """repository_verification_exception -> RepositoryVerificationException."""
    return "".join(part.capitalize() for part in kind.split("_"))


def verification_cause(err: EsError, member: Member, remote: bool) -> str:
    """How Elasticsearch renders one node's verification failure (a remote one arrives wrapped), as in
    Elasticsearch 7's error bodies; 8 may word the wrapper differently, the node's cause is the same."""
    cause = f"{java_name(err.kind)}[{err.reason}]"
    if not remote:
        return cause
    return f"RemoteTransportException[[{member.name}][{member.transport}][{VERIFY_ACTION}]]; nested: {cause};"


def verification_failed(repo: str, failures: list[tuple[str, str]]) -> EsError:
    """Every node's failure, (node id, cause), in one error as Elasticsearch reports them."""
    listed = ", ".join(f"[{node}, '{cause}']" for node, cause in failures)
    return EsError(500, "repository_verification_exception", f"[{repo}] [{listed}]")


def shard_failure(index: str, node: str | None, reason: str) -> JsonDict:
    return {"index": index, "index_uuid": index, "shard_id": 0, "reason": reason, "node_id": node,
            "status": "INTERNAL_SERVER_ERROR"}


class Repositories:
    """The cluster's repositories (from the cluster state) and the snapshot operations over them."""

    def __init__(self, node: ClusterNode, snapshots: Snapshots) -> None:
        self.node, self.snapshots = node, snapshots
        self.lock = threading.Lock()  # one repository operation at a time on the master

    # -- registry (every member) -------------------------------------------------------------------
    def registered(self) -> dict[str, JsonDict]:
        with self.node.lock:
            return dict(self.node.state.get("repositories", {}))

    def get(self, name: str | None) -> dict[str, JsonDict]:
        """GET /_snapshot[/{repo|_all|a,b}]."""
        repos = self.registered()
        if name in (None, "_all", "*"):
            return repos
        return {n: self._entry(n, repos) for n in names_of(name)}

    def _entry(self, name: str, repos: dict[str, JsonDict] | None = None) -> JsonDict:
        repos = self.registered() if repos is None else repos
        if name not in repos:
            raise EsError(404, "repository_missing_exception", f"[{name}] missing")
        return repos[name]

    # -- registration (on the master) ---------------------------------------------------------------
    def put(self, name: str, body: JsonDict, *, verify: bool = True) -> None:
        """PUT /_snapshot/{repo}: the location must be under the master's path.repo; verified on every
        master/data node unless `verify` is off or the repository is read-only."""
        entry = repository_entry(name, body)
        self.snapshots.location(name, entry)
        with self.lock:
            if verify and not read_only(entry):
                self._verify(name, entry)
            self.node.master_call("put_repository", {"name": name, "repository": entry})

    def delete(self, name: str) -> None:
        with self.lock:
            self._entry(name)
            self.node.master_call("delete_repository", {"name": name})

    def verify(self, name: str) -> JsonDict:
        """POST /_snapshot/{repo}/_verify: the nodes that verified it."""
        entry = self._entry(name)
        with self.lock:
            nodes = {} if read_only(entry) else self._verify(name, entry)
        return {"nodes": {node_id: {"name": node_name} for node_id, node_name in nodes.items()}}

    def _verify(self, name: str, entry: JsonDict) -> dict[str, str]:
        root = self.snapshots.location(name, entry)
        seed = self.snapshots.start_verification(name, root)
        members = sorted((m for m in self.node.live().values() if m.master_eligible or m.data),
                         key=lambda m: m.name)
        failures: list[tuple[str, str]] = []
        try:
            for member in members:
                body = {"repository": name, "entry": entry, "seed": seed}
                try:
                    self._on(member, "repo_verify", body, self.on_verify)
                except EsError as err:
                    failures.append((member.node_id, verification_cause(err, member, remote=False)))
                except TransportError as err:
                    cause = verification_cause(err.as_es_error(), member, remote=True)
                    failures.append((member.node_id, cause))
        finally:
            self.snapshots.end_verification(root, seed)
        if failures:
            raise verification_failed(name, failures)
        return {m.node_id: m.name for m in members}

    def on_verify(self, body: JsonDict) -> JsonDict:
        """Transport `repo_verify` (every master/data node): the master's probe in this node's location."""
        name, me = body["repository"], self.node.me
        root = self.snapshots.location(name, body["entry"])
        self.snapshots.verify(name, root, body["seed"], me.node_id, describe(me))
        return {}

    # -- snapshots (on the master) -------------------------------------------------------------------
    def create(self, repo: str, snapshot: str, body: JsonDict) -> JsonDict:
        """PUT /_snapshot/{repo}/{snap}: the chosen (default: all) indices, each written by its primary's
        node into that node's location; the info by the master into its own."""
        validate_snapshot_name(repo, snapshot)
        entry = self._entry(repo)
        root = self.snapshots.location(repo, entry)
        with self.lock:
            if self.snapshots.exists(root, snapshot):
                raise EsError(
                    400,
                    "invalid_snapshot_name_exception",
                    f"[{repo}:{snapshot}] Invalid snapshot name [{snapshot}], "
                    "snapshot with the same name already exists",
                )
            with self.node.lock:
                metas = dict(self.node.state["indices"])
                live = self.node.live()
            wanted = names_of(body.get("indices")) or ["_all"]
            indices = list(dict.fromkeys(n for w in wanted for n in resolve_names(w, metas)))
            primaries = {n: cluster.primary(metas[n], live) for n in indices}
            missing = [n for n, node in primaries.items() if node is None]
            if missing and not body.get("partial"):
                raise EsError(500, "snapshot_exception",
                              f"[{repo}:{snapshot}] Indices don't have primary shards {missing}")
            start = int(time.time() * 1000)
            failures = [shard_failure(n, None, "primary shard is not allocated") for n in missing]
            for name, node_id in primaries.items():
                if node_id is not None:
                    failure = self._snapshot_index(live[node_id], repo, entry, snapshot, name)
                    failures += [failure] if failure else []
            end = int(time.time() * 1000)
            info = snapshot_info(repo, snapshot, body, indices, start, end, failures)
            self.snapshots.write_info(root, info)
            return info

    def _snapshot_index(self, member: Member, repo: str, entry: JsonDict, snapshot: str,
                        index: str) -> JsonDict | None:
        """Have the primary's node write the index; its failure, or None."""
        body = {"repository": repo, "entry": entry, "snapshot": snapshot, "index": index}
        try:
            self._on(member, "snapshot_index", body, self.on_snapshot_index)
        except EsError as err:
            return shard_failure(index, member.node_id, err.reason)
        except TransportError as err:
            return shard_failure(index, member.node_id, err.as_es_error().reason)
        return None

    def on_snapshot_index(self, body: JsonDict) -> JsonDict:
        """Transport `snapshot_index` (on the primary's node): this copy into this node's location."""
        name = body["index"]
        root = self.snapshots.location(body["repository"], body["entry"])
        with self.node.index_lock(name), self.node.store.lock:
            export = self.node.store.get(name, open_only=False).export()
        self.snapshots.write_index(root, body["snapshot"], name, export)
        return {}

    def snapshots_of(self, repo: str, snapshot: str) -> JsonDict:
        """GET /_snapshot/{repo}/{snap|_all|a,b}: from the master's location."""
        root = self.snapshots.location(repo, self._entry(repo))
        names = self.snapshots.names(root) if snapshot in ("_all", "*") else names_of(snapshot)
        snaps = [self.snapshots.read_info(repo, root, n) for n in names]
        return {"snapshots": snaps, "total": len(snaps), "remaining": 0}

    def delete_snapshot(self, repo: str, snapshot: str) -> None:
        """DELETE /_snapshot/{repo}/{snap}: what the master's location holds of it."""
        root = self.snapshots.location(repo, self._entry(repo))
        with self.lock:
            self.snapshots.delete(repo, root, snapshot)

    def restore(self, repo: str, snapshot: str, body: JsonDict) -> JsonDict:
        """POST .../_restore: fails if an open index of the same name exists, as Elasticsearch does;
        each index is restored on the data node allocation picks, from that node's location."""
        entry = self._entry(repo)
        root = self.snapshots.location(repo, entry)
        with self.lock:
            info = self.snapshots.read_info(repo, root, snapshot)
            plan = restore_plan(info, body)
            with self.node.lock:
                metas = dict(self.node.state["indices"])
            for target in plan.values():
                if target in metas and not metas[target]["closed"]:
                    raise restore_conflict(info, target)
            for source, target in plan.items():
                self._restore_index(repo, entry, info, source, target)
            count = len(plan)
            return {"snapshot": snapshot, "indices": list(plan.values()),
                    "shards": {"total": count, "failed": 0, "successful": count}}

    def _restore_index(self, repo: str, entry: JsonDict, info: JsonDict, source: str, target: str) -> None:
        with self.node.lock:
            metas = {n: m for n, m in self.node.state["indices"].items() if n != target}
            data_nodes = self.node.data_nodes()
            live = self.node.live()
        chosen = cluster.allocate_new(metas, 0, data_nodes)
        if not chosen:
            raise EsError(500, "snapshot_restore_exception",
                          f"[{repo}:{info['snapshot']}/{info['uuid']}] no data node to restore [{target}] on")
        member = live[chosen[0]]
        body = {"repository": repo, "entry": entry, "info": info, "index": source, "target": target}
        try:
            self._on(member, "restore_index", body, self.on_restore_index)
        except TransportError as err:
            raise err.as_es_error() from err

    def _on(self, member: Member, op: str, body: JsonDict, here: Callable[[JsonDict], JsonDict]) -> None:
        """Transport operation `op` on `member`: this node's own handler when the member is this node."""
        if member.node_id == self.node.me.node_id:
            here(body)
        else:
            call(member.transport, op, body, timeout=TRANSFER_TIMEOUT_S)

    def on_restore_index(self, body: JsonDict) -> JsonDict:
        """Transport `restore_index` (on the node the master chose): the index from this node's location."""
        root = self.snapshots.location(body["repository"], body["entry"])
        data = self.snapshots.read_index(body["info"], root, body["index"], self.node.me.name)
        self.node.restore_copy(body["target"], data)
        return {}

    # -- transport operations this module answers ------------------------------------------------------
    def transport_ops(self) -> dict[str, Any]:
        return {"repo_verify": self.on_verify, "snapshot_index": self.on_snapshot_index,
                "restore_index": self.on_restore_index}
