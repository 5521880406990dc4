"""Elasticsearch mover: a snapshot of the app's indices into an fs repository under path.repo on the
source, the repository directory streamed (tar) into the same place on the target, restored there.

Elasticsearch listens on loopback without security (xpack.security.enabled: false, as provisioned),
so the API needs no credentials. The app's indices are the ones not starting with "." (system
indices stay). The repository is registered read-only on the target, as Elastic advises for a
repository another cluster wrote; once restored, the snapshot is deleted on the source and the
copy removed on the target; the repository directories go on both sides, so no second copy of the
data stays behind.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from typing import Any

from psa_provision.errors import GuestError
from psa_provision.secrets import Secrets
from psa_provision.services.elasticsearch import BACKUP_DIR as ES_BACKUP_DIR
from psa_provision.services.mover import Check, CopyMover, Request, compare, http
from psa_provision.ssh import Connection

API = "http://127.0.0.1:9200"
REPO = "psa-migrate"
SNAPSHOT = "psa-migrate"
LOCATION = f"{ES_BACKUP_DIR}/{REPO}"
PACK = f"set -o pipefail\ntar -C {shlex.quote(LOCATION)} -cf - .\n"
# the target's copy: emptied first (a re-run), owned by the service user like the rest of path.repo
UNPACK = (f"set -e\nrm -rf {shlex.quote(LOCATION)}\n"
          f"install -d -m 0750 -o elasticsearch -g elasticsearch {shlex.quote(LOCATION)}\n"
          f"tar -C {shlex.quote(LOCATION)} -xf - --no-same-owner\n"
          f"chown -R elasticsearch:elasticsearch {shlex.quote(LOCATION)}\n")
REMOVE_COPY = f"rm -rf {shlex.quote(LOCATION)}\n"
CAT_INDICES = "/_cat/indices?format=json&h=index&expand_wildcards=all"


class ElasticsearchMover(CopyMover):
    """Moves the app's Elasticsearch indices by snapshot and restore (see the module docstring)."""

    component = "elasticsearch"

    def move(self, src: Connection, dst: Connection, secrets: Secrets, log: Callable[[str], None]) -> None:
        """Snapshot on src, stream the repository to dst, delete dst's app indices, restore them."""
        indices = app_indices(src)
        self.discard(dst, secrets, log)
        if not indices:
            log(f"elasticsearch: no app index on {src.host}, nothing to move")
            return
        log(f"elasticsearch: snapshot of {', '.join(indices)} on {src.host}")
        answers = call(src, snapshot_requests(indices), "snapshot")
        snapshot_state(src.host, answers[-1][1])
        try:
            streamed = src.stream_to(PACK, dst, UNPACK)
            log(f"elasticsearch: {streamed.bytes} bytes of repository streamed to {dst.host}")
            answers = call(dst, restore_requests(indices), "restore")
            restored(dst.host, answers[-1][1], indices)
            log(f"elasticsearch: restored {len(indices)} indices on {dst.host}")
        finally:
            call(src, cleanup_requests(), "delete the snapshot")
            src.run(REMOVE_COPY)  # the repository's own metadata files
            call(dst, [("DELETE", f"/_snapshot/{REPO}", None)], "unregister the copy")
            dst.run(REMOVE_COPY)

    def verify(self, src: Connection, dst: Connection, secrets: Secrets) -> list[Check]:
        """Documents per app index (after a refresh, top-level documents as _count gives them)."""
        return compare("elasticsearch index", counts(src), counts(dst))

    def discard(self, dst: Connection, secrets: Secrets, log: Callable[[str], None]) -> None:
        """Delete dst's app indices by name (Elasticsearch 8 refuses wildcard deletes by default)."""
        names = app_indices(dst)
        if names:
            log(f"elasticsearch: deleting indices {', '.join(names)} on {dst.host}")
            call(dst, [("DELETE", f"/{n}", None) for n in names], "delete indices")


def app_indices(conn: Connection) -> list[str]:
    """The app's index names (system indices, starting with ".", excluded)."""
    [(code, body)] = http(conn, API, [("GET", CAT_INDICES, None)])
    if code != 200:
        raise GuestError(f"{conn.host}: Elasticsearch _cat/indices answered HTTP {code}: {body[:300]}")
    return index_names(json.loads(body))


def index_names(rows: list[dict[str, Any]]) -> list[str]:
    """Sorted app index names from _cat/indices rows."""
    return sorted(str(r["index"]) for r in rows if not str(r["index"]).startswith("."))


def snapshot_requests(indices: list[str]) -> list[Request]:
    """Register the fs repository, drop a snapshot a killed run left, snapshot the indices and wait."""
    return [("PUT", f"/_snapshot/{REPO}", {"type": "fs", "settings": {"location": LOCATION}}),
            ("DELETE", f"/_snapshot/{REPO}/{SNAPSHOT}", None),
            ("PUT", f"/_snapshot/{REPO}/{SNAPSHOT}?wait_for_completion=true",
             {"indices": ",".join(indices), "include_global_state": False})]


def restore_requests(indices: list[str]) -> list[Request]:
    """Register the streamed copy read-only and restore the indices from it, waiting."""
    settings = {"location": LOCATION, "readonly": True}
    return [("PUT", f"/_snapshot/{REPO}", {"type": "fs", "settings": settings}),
            ("POST", f"/_snapshot/{REPO}/{SNAPSHOT}/_restore?wait_for_completion=true",
             {"indices": ",".join(indices), "include_global_state": False})]


def cleanup_requests() -> list[Request]:
    """Delete the source's snapshot and unregister its repository."""
    return [("DELETE", f"/_snapshot/{REPO}/{SNAPSHOT}", None), ("DELETE", f"/_snapshot/{REPO}", None)]


def counts(conn: Connection) -> dict[str, str]:
    """index -> `N documents` for the app's indices, after a refresh."""
    names = app_indices(conn)
    if not names:
        return {}
    requests: list[Request] = [("POST", f"/{','.join(names)}/_refresh", None)]
    requests += [("GET", f"/{n}/_count", None) for n in names]
    answers = call(conn, requests, "count documents")
    return {name: f"{json.loads(body)['count']} documents"
            for name, (_, body) in zip(names, answers[1:], strict=True)}


def call(conn: Connection, requests: list[Request], what: str) -> list[tuple[int, str]]:
    """The requests' answers; GuestError naming the first that failed (a DELETE may find nothing: 404)."""
    answers = http(conn, API, requests)
    for (method, path, _), (code, body) in zip(requests, answers, strict=True):
        if code >= 300 and not (code == 404 and method == "DELETE"):
            raise GuestError(f"{conn.host}: Elasticsearch: {what}: {method} {path} answered HTTP {code}: "
                             f"{body[:400]}")
    return answers


def snapshot_state(host: str, body: str) -> None:
    """GuestError unless the snapshot finished SUCCESS with no failed shard (PARTIAL is not a copy)."""
    info = json.loads(body).get("snapshot", {})
    if info.get("state") != "SUCCESS" or info.get("shards", {}).get("failed", 0):
        raise GuestError(f"{host}: Elasticsearch snapshot did not succeed: {body[:400]}")


def restored(host: str, body: str, indices: list[str]) -> list[str]:
    """The restore answer's indices; GuestError unless they are `indices` and no shard failed."""
    result = json.loads(body).get("snapshot", {})
    got = sorted(result.get("indices", []))
    if got != sorted(indices) or result.get("shards", {}).get("failed", 1):
        raise GuestError(f"{host}: Elasticsearch restore incomplete (expected {', '.join(sorted(indices))}): "
                         f"{body[:400]}")
    return got


MOVER = ElasticsearchMover()
