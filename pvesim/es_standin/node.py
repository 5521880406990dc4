"""The stand-in's cluster runtime: heartbeats, the cluster state, replication and recovery.

Not Elasticsearch's transport protocol: the stand-ins talk JSON over HTTP on `transport.port`
(POST /_standin/<op>). Each node pings the seed hosts and every member it learnt of every
HEARTBEAT_S; a ping answers with the receiver's member list and, when newer, its cluster state.
The elected master (cluster.elect) owns the cluster state: index metadata and where each index's
copies are (cluster.reconcile). It publishes every change to the live members before answering.

Writes go to the primary's node, which applies them and then sends each to every in-sync replica
and every recovering copy before answering: an acknowledged write is on two nodes when
number_of_replicas is 1. A replica that does not answer is reported to the master, which drops it
from the in-sync set (the write is not acknowledged if the master cannot be told). A new replica
recovers the whole index from the primary, then tells the master it is started.

The cluster state also holds the registered snapshot repositories (repositories.py): every member
knows them, the master changes them.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import cluster
from .cluster import Member, State
from .config import Settings
from .store import Doc, EsError, Store, write_json
from .transport import TransportError, call

HEARTBEAT_S = 0.5
log = logging.getLogger("o.e.c.c.Coordinator")


def no_master() -> EsError:
    return EsError(503, "master_not_discovered_exception", "no master is elected (STAND-IN: no quorum of "
                   "the voting configuration among the live members)")


class ClusterNode:
    """This node's view of the cluster, and the transport operations it answers."""

    def __init__(self, settings: Settings, store: Store, me: Member, cluster_uuid: str,
                 data_dir: Path) -> None:
        self.settings, self.store, self.me = settings, store, me
        self.lock = threading.RLock()
        self.members: dict[str, Member] = {me.node_id: me}
        self.last_seen: dict[str, float] = {}
        port = settings.transport_port
        self.peers = {h if ":" in h else f"{h}:{port}" for h in settings.seed_hosts} - {me.transport}
        self.state_file = data_dir / "cluster_state.json"
        self.state: State = (json.loads(self.state_file.read_text()) if self.state_file.is_file()
                             else cluster.empty_state(cluster_uuid))
        self.index_locks: dict[str, threading.Lock] = {}
        self.tracking: dict[str, set[str]] = {}  # index -> nodes recovering from this primary
        self.recovering: dict[str, list[dict[str, Any]]] = {}  # index -> writes buffered meanwhile
        self.restoring: set[str] = set()  # indices restored here that the state does not name yet
        self.pending = threading.local()
        self.stopped = threading.Event()
        store.listener = self._heard_write
        if settings.single_node:
            with self.lock:
                self._become_master([me.node_id])

    # -- membership ---------------------------------------------------------------------------
    def live(self) -> dict[str, Member]:
        """Members heard from within cluster.LIVENESS_S, and this node."""
        alive = cluster.live_ids(self.last_seen, time.monotonic()) | {self.me.node_id}
        return {n: m for n, m in self.members.items() if n in alive}

    def master(self) -> Member | None:
        return cluster.elect(self.state["voting"], self.live().values())

    def is_master(self) -> bool:
        elected = self.master()
        return elected is not None and elected.node_id == self.me.node_id == self.state["master"]

    def _same_cluster(self, peer_state: dict[str, Any]) -> bool:
        bootstrapped = self.state["term"] > 0 and peer_state.get("term", 0) > 0
        return not bootstrapped or peer_state.get("cluster_uuid") == self.state["cluster_uuid"]

    def heard(self, member: Member, peer_state: dict[str, Any]) -> None:
        """A ping (or its answer) from `member`: it is alive, and its state may be newer than ours."""
        if member.node_id == self.me.node_id:
            return
        with self.lock:
            if not self._same_cluster(peer_state):
                log.warning("ignoring [%s]: it belongs to cluster [%s], this node to [%s]", member.name,
                            peer_state.get("cluster_uuid"), self.state["cluster_uuid"])
                return
            if member.node_id not in self.last_seen:
                log.info("node-join: [%s] joined (transport %s)", member.name, member.transport)
            self.members[member.node_id] = member
            self.last_seen[member.node_id] = time.monotonic()
            self.peers.add(member.transport)
            adopted = "indices" in peer_state and self.adopt(peer_state)
        if adopted:
            threading.Thread(target=self._sync_local, daemon=True).start()

    def ping_payload(self) -> dict[str, Any]:
        with self.lock:
            return {"cluster_name": self.settings.cluster_name, "member": self.me.to_json(),
                    "state": self.state, "members": [m.to_json() for m in self.live().values()]}

    def on_ping(self, body: dict[str, Any]) -> dict[str, Any]:
        """Transport `ping`: remember the sender, answer with what this node knows."""
        if body.get("cluster_name") != self.settings.cluster_name:
            raise EsError(400, "illegal_state_exception", f"cluster name [{body.get('cluster_name')}] "
                          f"differs from [{self.settings.cluster_name}]")
        self.heard(Member.from_json(body["member"]), body.get("state", {}))
        return self.ping_payload()

    def heartbeat(self) -> None:
        """Ping every known transport address once; learn members and newer states from the answers."""
        payload = self.ping_payload()
        for address in sorted(self.peers):
            try:
                answer = call(address, "ping", payload, timeout=1.0)
            except TransportError:
                continue
            if answer.get("cluster_name") != self.settings.cluster_name:
                continue
            self.heard(Member.from_json(answer["member"]), answer.get("state", {}))
            for data in answer.get("members", []):
                if data["node_id"] != self.me.node_id:
                    self.peers.add(str(data["transport"]))

    def run(self) -> None:
        """Heartbeat and master duties until stop() (a daemon thread of the server)."""
        while not self.stopped.wait(HEARTBEAT_S):
            try:
                self.heartbeat()
                self.tick()
            except Exception:  # one bad round must not end the heartbeats
                log.exception("cluster coordination round failed")

    def stop(self) -> None:
        self.stopped.set()

    # -- cluster state -------------------------------------------------------------------------
    def tick(self) -> None:
        """Bootstrap, take over as master, or (as master) reallocate after membership changed."""
        with self.lock:
            live = self.live()
            if not self.state["voting"] and self.state["term"] == 0:
                voting = cluster.bootstrap_voting(self.settings.initial_master_nodes, live.values())
                elected = cluster.elect(voting or [], live.values())
                if voting and elected is not None and elected.node_id == self.me.node_id:
                    log.info("cluster bootstrapped with voting configuration %s", voting)
                    self._become_master(voting)
            else:
                elected = self.master()
                if elected is not None and elected.node_id == self.me.node_id:
                    if self.state["master"] != self.me.node_id:
                        self._become_master(self.state["voting"])
                    else:
                        self._reallocate()
        self._sync_local()  # outside the lock: a write holds its index's lock, then takes this one

    def _become_master(self, voting: list[str]) -> None:
        log.info("elected-as-master ([%s] term [%s])", self.me.name, self.state["term"] + 1)
        state = dict(self.state)
        state.update(term=state["term"] + 1, master=self.me.node_id, voting=voting)
        if state["version"] == 0:  # a new cluster: the indices on this node's disk are its indices
            state["indices"] = {name: self.meta_of_local(name) for name in sorted(self.store.indices)}
        if "repositories" not in state:  # a new cluster, or a state from before: this node's own file
            legacy = self.state_file.parent / "repositories.json"
            state["repositories"] = json.loads(legacy.read_text()) if legacy.is_file() else {}
        self._publish(state)
        self._reallocate()

    def meta_of_local(self, name: str) -> dict[str, Any]:
        """The cluster state's entry for this node's copy of an index (as its only in-sync copy)."""
        index = self.store.indices[name]
        return {"uuid": index.uuid, "created": index.created, "settings": index.settings,
                "mappings": index.mappings, "closed": index.closed, "in_sync": [self.me.node_id],
                "initializing": []}

    def data_nodes(self) -> dict[str, str]:
        return {n: m.name for n, m in self.live().items() if m.data}

    def _reallocate(self) -> None:
        """As master: voting configuration and shard routing for the current members."""
        live = self.live()
        voting = cluster.adjust_voting(self.state["voting"], live.values())
        indices = cluster.reconcile(self.state["indices"], self.data_nodes())
        nodes = {n: m.to_json() for n, m in live.items()}
        if (voting, indices, nodes) != (self.state["voting"], self.state["indices"], self.state["nodes"]):
            self._publish({**self.state, "voting": voting, "indices": indices, "nodes": nodes})

    def _publish(self, state: State) -> None:
        """Adopt a new state version and send it to every live member (they catch up by ping if not)."""
        state = {**state, "version": self.state["version"] + 1, "nodes": {
            n: m.to_json() for n, m in self.live().items()}}
        self.adopt(state, force=True)
        for member in self.live().values():
            if member.node_id != self.me.node_id:
                try:
                    call(member.transport, "state", state)
                except TransportError as err:
                    log.warning("publishing cluster state version [%s] to [%s] failed: %s",
                                state["version"], member.name, err)

    def adopt(self, state: State, *, force: bool = False) -> bool:
        """Take a state that is newer (term, version) than ours; persist it."""
        with self.lock:
            if not force and (state["term"], state["version"]) <= (self.state["term"], self.state["version"]):
                return False
            if not force and not self._same_cluster(state):
                return False
            self.state = state
            write_json(self.state_file, state)
        return True

    def on_state(self, state: State) -> dict[str, Any]:
        """Transport `state`: the master publishes; this node's copies follow before it answers."""
        if self.adopt(state):
            self._sync_local()
        return {"version": self.state["version"]}

    # -- master operations (transport `master`, or local on the master) ----------------------------
    def master_call(self, op: str, body: dict[str, Any]) -> Any:
        """Run a state change on the master (here when this node is master)."""
        elected = self.master()
        if elected is None:
            raise no_master()
        if elected.node_id == self.me.node_id:
            return self.on_master(op, body)
        try:
            return call(elected.transport, "master", {"op": op, **body}, timeout=10.0)
        except TransportError as err:
            raise (err.as_es_error() if err.status else no_master()) from err

    def on_master(self, op: str, body: dict[str, Any]) -> Any:
        with self.lock:
            if not self.is_master():
                raise no_master()
            indices = dict(self.state["indices"])
            repositories = dict(self.state.get("repositories", {}))
            name = body.get("index", "")
            if op == "create_index":
                if name not in indices:
                    replicas = cluster.replicas_of(body.get("body", {}))
                    copies = cluster.allocate_new(indices, replicas, self.data_nodes())
                    body_ = body.get("body", {})
                    indices[name] = {"uuid": body["uuid"], "created": int(time.time() * 1000),
                                     "settings": body_.get("settings", {}),
                                     "mappings": body_.get("mappings", {}),
                                     "closed": False, "in_sync": copies, "initializing": []}
            elif op == "delete_index":
                indices.pop(name, None)
            elif op == "update_index":
                indices[name] = {**indices[name], **body["changes"]}
            elif op == "restored":  # a snapshot restored on body["node"]: its copy is the index now
                indices[name] = {**body["meta"], "in_sync": [body["node"]], "initializing": []}
            elif op == "started" and body["node"] in indices.get(name, {}).get("initializing", []):
                meta = indices[name]
                indices[name] = {**meta, "in_sync": [*meta["in_sync"], body["node"]],
                                 "initializing": [n for n in meta["initializing"] if n != body["node"]]}
            elif op == "shard_failed" and name in indices:
                meta = indices[name]
                keep = [n for n in meta["in_sync"] if n != body["node"]]
                indices[name] = {**meta, "in_sync": keep or meta["in_sync"],
                                 "initializing": [n for n in meta["initializing"] if n != body["node"]]}
            elif op == "put_repository":
                repositories[body["name"]] = body["repository"]
            elif op == "delete_repository":
                repositories.pop(body["name"], None)
            if (indices, repositories) != (self.state["indices"], self.state.get("repositories", {})):
                self._publish({**self.state, "indices": cluster.reconcile(indices, self.data_nodes()),
                               "repositories": repositories})
        self._sync_local()
        return {"acknowledged": True}

    # -- copies on this node ----------------------------------------------------------------------
    def index_lock(self, name: str) -> threading.Lock:
        with self.lock:
            return self.index_locks.setdefault(name, threading.Lock())

    def _sync_local(self) -> None:
        """Make this node's copies match the state: create, drop, recover, apply metadata."""
        with self.lock:
            state = self.state
        if state["master"] is None:
            return
        me = self.me.node_id
        for name in list(self.store.indices):
            with self.lock:  # the newest state: an index restored here meanwhile is named by it
                meta = self.state["indices"].get(name)
                restoring = name in self.restoring
            if not restoring and (meta is None or me not in [*meta["in_sync"], *meta["initializing"]]):
                with self.index_lock(name):
                    self.store.delete_index(name)
        for name, meta in state["indices"].items():
            local = self.store.indices.get(name)
            if me in meta["in_sync"] and local is None:
                self.store.create_index(name, {"settings": meta["settings"], "mappings": meta["mappings"]},
                                        meta["uuid"])
            elif me in meta["initializing"] and name not in self.recovering:
                with self.lock:
                    self.recovering[name] = []
                threading.Thread(target=self._recover, args=(name,), daemon=True).start()
            local = self.store.indices.get(name)
            if local is not None and me in meta["in_sync"]:
                local.mappings, local.closed = meta["mappings"], meta["closed"]

    def _recover(self, name: str) -> None:
        """Copy the index from its primary, replay the writes buffered meanwhile, report started."""
        try:
            holder = self.holder(name, write=True)
            export = call(holder.transport, "recover", {"index": name, "node": self.me.node_id}, timeout=60)
            with self.index_lock(name):
                self.store.import_index(export, name, keep_uuid=True)
                with self.lock:
                    buffered = self.recovering.pop(name, [])
                for op in buffered:
                    if op["seq_no"] > export["meta"]["seq_no"]:
                        self._apply(op)
            self.master_call("started", {"index": name, "node": self.me.node_id})
            log.info("recovered [%s] from [%s]", name, holder.name)
        except (TransportError, EsError) as err:
            log.warning("recovery of [%s] failed, will retry: %s", name, err)
            with self.lock:
                self.recovering.pop(name, None)

    def on_recover(self, body: dict[str, Any]) -> dict[str, Any]:
        """Transport `recover` (on the primary): from now on send this node every write; the export."""
        name = body["index"]
        with self.index_lock(name), self.store.lock:
            self.tracking.setdefault(name, set()).add(body["node"])
            return self.store.get(name, open_only=False).export()

    def restore_copy(self, name: str, export: dict[str, Any]) -> None:
        """Import a snapshot's index as this node's copy; the master then makes it the index's only
        in-sync copy (the primary). Until the state says so, _sync_local leaves the copy alone."""
        with self.lock:
            self.restoring.add(name)
        try:
            with self.index_lock(name):
                self.store.import_index(export, name)
            self.master_call("restored", {"index": name, "node": self.me.node_id,
                                          "meta": self.meta_of_local(name)})
        finally:
            with self.lock:
                self.restoring.discard(name)

    def on_docs(self, body: dict[str, Any]) -> dict[str, Any]:
        """Transport `docs`: an index's documents, for a search coordinated on another node."""
        with self.store.lock:
            return {i: d.source for i, d in self.store.get(body["index"]).docs.items()}

    def on_apply(self, body: dict[str, Any]) -> dict[str, Any]:
        """Transport `apply` (on a replica): one write, numbered by the primary."""
        with self.lock:
            if body["index"] in self.recovering:
                self.recovering[body["index"]].append(body)
                return {"buffered": True}
        self._apply(body)
        return {"applied": True}

    def _apply(self, op: dict[str, Any]) -> None:
        data = op["doc"]
        doc = None if data is None else Doc(data["source"], data["version"], data["seq_no"])
        listener, self.store.listener = self.store.listener, None
        try:
            self.store.apply_doc(op["index"], op["id"], doc, op["seq_no"])
        finally:
            self.store.listener = listener

    # -- routing (used by the REST API) -------------------------------------------------------------
    def holder(self, name: str, *, write: bool) -> Member:
        """The node to send an operation on `name` to: the primary for a write, else this node if it
        holds an in-sync copy, else the primary. 404 when no such index, 503 when it has no copy."""
        with self.lock:
            meta = self.state["indices"].get(name)
            live = self.live()
        if meta is None:
            raise EsError(404, "index_not_found_exception", f"no such index [{name}]", index=name)
        if not write and self.me.node_id in meta["in_sync"] and name in self.store.indices:
            return self.me
        primary = cluster.primary(meta, live)
        if primary is None:
            raise EsError(503, "unavailable_shards_exception", f"[{name}][0] primary shard is not active "
                          "(STAND-IN: no live node holds a copy)")
        return live[primary]

    def begin_write(self) -> None:
        self.pending.ops = []

    def _heard_write(self, name: str, doc_id: str, doc: Doc | None) -> None:
        ops = getattr(self.pending, "ops", None)
        if ops is not None:
            seq_no = self.store.indices[name].seq_no
            ops.append({"index": name, "id": doc_id, "seq_no": seq_no, "doc": None if doc is None else
                        {"source": doc.source, "version": doc.version, "seq_no": doc.seq_no}})

    def replicate(self) -> None:
        """Send the writes this request made to every other copy; a silent copy is failed first."""
        ops: list[dict[str, Any]] = getattr(self.pending, "ops", None) or []
        self.pending.ops = None
        for op in ops:
            with self.lock:
                meta = self.state["indices"].get(op["index"], {})
                targets = {*meta.get("in_sync", []), *self.tracking.get(op["index"], set())} - {
                    self.me.node_id}
                members = dict(self.members)
            for node in sorted(targets):
                member = members.get(node)
                try:
                    if member is None:
                        raise TransportError(f"unknown node {node}")
                    call(member.transport, "apply", op)
                except TransportError as err:
                    log.warning("replica [%s] of [%s] failed: %s", node, op["index"], err)
                    with self.lock:
                        self.tracking.get(op["index"], set()).discard(node)
                    self.master_call("shard_failed", {"index": op["index"], "node": node})

    def write_locked(self, name: str, handler: Callable[[], Any]) -> Any:
        """Run a write on the primary under the index's lock, then replicate it."""
        if name not in self.store.indices:  # the state naming this node arrived, its copy not made yet
            self._sync_local()
        with self.index_lock(name):
            self.begin_write()
            try:
                result = handler()
            except BaseException:
                self.pending.ops = None
                raise
            self.replicate()
            return result
