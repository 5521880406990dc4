"""A backup set's Elasticsearch snapshot: taken into a location of its own under path.repo, packed from
every member, put back on a restored single node.

Each set's snapshot goes to a new location (`sets/<set id>` under path.repo) in a repository registered
for it, so nothing in it depends on an earlier snapshot, and the location is removed once packed (the
set in the backup repository is the copy that stays).

In a cluster every member has its own path.repo: containers share no filesystem. Elasticsearch's
repository verification checks exactly that the location is shared, so the repository is registered
with `verify=false`; each data node then writes the shards whose primary it holds into its own
directory and the master writes the snapshot's metadata into its own. The set keeps each member's
directory as one part, and the restore unpacks every part into one directory: their union is what a
filesystem shared by the members would hold (Elastic's supported layout for an `fs` repository), and
a single node restores from it.

Elasticsearch listens on loopback without security (as provisioned): the API needs no credentials.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from psa_provision.services.elasticsearch import BACKUP_DIR
from psa_provision.services.elasticsearch.mover import API, call, restored, snapshot_state
from psa_provision.services.mover import Request, http
from psa_provision.ssh import Connection

REPO = "psa-set"  # the sets' repository (backup-psa.sh keeps its own, psa_backup)
RESTORE_REPO = "psa-set-restore"
SETS_DIR = f"{BACKUP_DIR}/sets"
RESTORE_DIR = f"{BACKUP_DIR}/restore"
READY_S = 300  # a restored copy's Elasticsearch answering before the put back gives up


def location(set_id: str) -> str:
    return f"{SETS_DIR}/{set_id.lower()}"


def restore_location(set_id: str) -> str:
    """Where a restored node unpacks the set's parts (under path.repo)."""
    return f"{RESTORE_DIR}/{set_id.lower()}"


def name(set_id: str) -> str:
    """The snapshot's name (Elasticsearch's are lowercase)."""
    return f"psa-{set_id.lower()}"


def part_name(hostname: str, members: int) -> str:
    """The set's file of one member's part: `repository.tar` for a single node."""
    return "repository.tar" if members == 1 else f"repository-{hostname}.tar"


def take_requests(set_id: str, members: int) -> list[Request]:
    """Register the set's location (verify=false in a cluster: see the module docstring) and snapshot
    every index into it, waiting for the end."""
    verify = "" if members == 1 else "?verify=false"
    return [("PUT", f"/_snapshot/{REPO}{verify}", {"type": "fs", "settings": {"location": location(set_id)}}),
            ("PUT", f"/_snapshot/{REPO}/{name(set_id)}?wait_for_completion=true",
             {"include_global_state": False})]


def take(conn: Connection, set_id: str, members: int) -> dict[str, Any]:
    """The snapshot, through `conn`'s member (the master coordinates it); its summary for the manifest."""
    answers = call(conn, take_requests(set_id, members), "snapshot")
    return summary(conn.host, answers[-1][1], members)


def summary(host: str, body: str, members: int) -> dict[str, Any]:
    """The manifest's detail of a finished snapshot; GuestError unless it is SUCCESS with no failed
    shard (mover.snapshot_state: PARTIAL is no backup)."""
    snapshot_state(host, body)
    info = json.loads(body).get("snapshot", {})
    return {"snapshot": info.get("snapshot"), "indices": sorted(info.get("indices", [])),
            "shards": info.get("shards", {}).get("successful", 0), "members": members}


def pack(set_id: str, path: str) -> str:
    """Bash: this member's part of the set's location as a tar at `path` (empty when the member wrote
    nothing: a data node with no primary, say)."""
    loc, out = shlex.quote(location(set_id)), shlex.quote(path)
    return (f"set -euo pipefail\nif [ -d {loc} ]; then tar -C {loc} -cf {out} .\n"
            f"else tar -cf {out} -T /dev/null; fi\n")


def forget(conn: Connection, set_id: str, registered: bool) -> None:
    """The set's location removed on this member, and the repository unregistered through the member
    that registered it (the files are gone: Elasticsearch must not keep it)."""
    if registered:
        http(conn, API, [("DELETE", f"/_snapshot/{REPO}", None)])
    conn.run(f"rm -rf {shlex.quote(location(set_id))}\n", check=False)


def unpack(set_id: str, parts: list[str]) -> str:
    """Bash on the restored node: every part into one directory under path.repo, owned by the service
    user, once Elasticsearch answers."""
    loc = shlex.quote(restore_location(set_id))
    lines = ["set -euo pipefail", f"rm -rf {loc}",
             f"install -d -m 0750 -o elasticsearch -g elasticsearch {shlex.quote(RESTORE_DIR)} {loc}"]
    lines += [f"tar -C {loc} -xf {shlex.quote(p)} --no-same-owner" for p in parts]
    lines += [f"chown -R elasticsearch:elasticsearch {loc}",
              f"for _ in $(seq 1 {READY_S}); do curl -fsS -o /dev/null {API}/_cluster/health && exit 0; "
              "sleep 1; done",
              f"echo 'Elasticsearch did not answer on {API} in {READY_S} s' >&2", "exit 1"]
    return "\n".join(lines) + "\n"


def restore_requests(set_id: str) -> list[Request]:
    """Register the unpacked set read-only (another cluster wrote it) and restore its indices, waiting."""
    settings = {"location": restore_location(set_id), "readonly": True}
    return [("PUT", f"/_snapshot/{RESTORE_REPO}", {"type": "fs", "settings": settings}),
            ("POST", f"/_snapshot/{RESTORE_REPO}/{name(set_id)}/_restore?wait_for_completion=true",
             {"include_global_state": False})]


def put_back(conn: Connection, set_id: str, parts: list[str], indices: list[str]) -> list[str]:
    """The set's snapshot restored on `conn`'s node from its parts (already arrived and checked); the
    restored indices. GuestError unless every index of the snapshot came back with no failed shard.
    The unpacked copy and its registration are removed afterwards."""
    conn.run(unpack(set_id, parts))
    try:
        answers = call(conn, restore_requests(set_id), "restore") if indices else []
        done = restored(conn.host, answers[-1][1], indices) if answers else []
    finally:
        http(conn, API, [("DELETE", f"/_snapshot/{RESTORE_REPO}", None)])
        conn.run(f"rm -rf {shlex.quote(restore_location(set_id))}\n", check=False)
    return done
