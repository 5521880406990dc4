"""`psa-provision backup [PHASE] [--only ...]` and `backups list`.

PostgreSQL: a pgBackRest backup run on the repository host (stanza-create first: it creates the stanza
once, then only checks it); under Patroni (phase 3) pgBackRest takes it from whichever member is the
primary (the repository names all three). The other stores: services/backup/stores.py, shipped into a
set on the same host. The manifest goes last, atomically. A backup holds the phase's lock, so it waits
for no one and no migration starts under it; while a migration into or out of the phase is under way it
refuses.
"""

from __future__ import annotations

import dataclasses
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from psa_provision import __version__
from psa_provision.errors import GuestError, InputError, LockHeld
from psa_provision.journal import PhaseLock
from psa_provision.migration import record as migration_record
from psa_provision.packaged import BACKUP_CONTAINER_EXAMPLE
from psa_provision.phases import ContainerSpec, Phase, around
from psa_provision.proxmox import ProxmoxClient, connect
from psa_provision.services import backup as backup_service
from psa_provision.services import pgbackrest
from psa_provision.services.backup import standalone, stores
from psa_provision.services.backup.manifest import (
    Artifact,
    Manifest,
    new_id,
    pg_backups,
    set_dir,
    write_script,
)
from psa_provision.services.backup.restore import restored
from psa_provision.services.elasticsearch import snapshot as es_snapshot
from psa_provision.services.pgbackrest.component import repository_host
from psa_provision.site import Site, load_site, ssh_connection
from psa_provision.ssh import Connection

STORES = ("postgresql", "redis", "rabbitmq", "elasticsearch", "app")
PGBACKREST = f"cd / && runuser -u {pgbackrest.REPO_USER} -- pgbackrest --stanza={pgbackrest.STANZA}"


COLUMNS = ["store", "artifact", "bytes", "sha256"]
LIST_COLUMNS = ["id", "phase", "finished", "stores", "size", "state"]
LIST_WHOLE = ("id", "finished")  # copied into `restore --backup` / read as one time: never wrapped


def when(moment: float | str) -> str:
    """A finish time as a table shows it: UTC to the second, 20 characters.

    >>> when(0)
    '1970-01-01 00:00:00Z'
    >>> when("2026-12-02T17:34:05.123456+00:00")
    '2026-12-02 17:34:05Z'
    """
    at = (datetime.fromisoformat(moment) if isinstance(moment, str)
          else datetime.fromtimestamp(moment, UTC)).astimezone(UTC)
    return at.strftime("%Y-%m-%d %H:%M:%SZ")


@dataclass
class BackupResult:
    manifest: Manifest
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        return f"backup {self.manifest.id} ({self.manifest.phase})"

    def rows(self) -> list[list[str]]:
        """One row per artifact; pgBackRest's backup first."""
        m = self.manifest
        rows = [[a.store, a.path, str(a.bytes), a.sha256[:16]] for a in m.artifacts]
        rows += [["container", volid, "-", "-"] for volid in m.containers.values()]
        if m.postgresql:
            rows.insert(0, ["postgresql", f"pgBackRest {m.postgresql.get('label')}", "-", "-"])
        return rows

    def summary(self) -> str:
        return f"backup {self.manifest.id} complete in {self.seconds:.1f} s"


def run(inventory_path: Path, phase: str, only: str | None, *, full: bool, containers: bool = False,
        note: Callable[[str], None]) -> BackupResult:
    """`backup PHASE [--only ...] [--full] [--containers]`."""
    return backup(load_site(inventory_path, phase), parse_only(only), note, kind="full" if full else "diff",
                  containers=containers)


def list_all(inventory_path: Path, phase: str) -> list[list[str]]:
    """`backups list PHASE`: rows under LIST_COLUMNS (sets, pgBackRest backups, vzdump volumes)."""
    site = load_site(inventory_path, phase)
    repository(site)
    return list_sets(site) + vzdump_rows(site, connect(site.inventory))


def vzdump_rows(site: Site, px: ProxmoxClient) -> list[list[str]]:
    """One row per vzdump volume of the phase's containers on the backup storage (of the node each
    runs on now)."""
    rows = []
    nodes = current_nodes(px)
    for spec in site.phase.containers:
        node = nodes.get(spec.vmid, spec.node)
        for v in px.backup_volumes(node, site.inventory.storage.backups, spec.vmid):
            rows.append([str(v.get("volid")), site.phase.name, when(int(v.get("ctime") or 0)),
                         f"container {spec.vmid}",
                         f"{int(v.get('size') or 0) / 2**20:.1f} MiB", "vzdump"])
    return rows


def current_nodes(px: ProxmoxClient) -> dict[int, str]:
    """vmid -> the node it runs on now (one /cluster/resources read): the HA manager moves phase 3's
    containers, and a node's vzdump reaches only the guests on it (PVE skips the others silently)."""
    return {int(g.get("vmid", -1)): str(g.get("node")) for g in px.cluster_guests() if g.get("node")}


def dumped(phase: Phase) -> list[ContainerSpec]:
    """The containers `backup --containers` dumps: every one of the phase's; in a phase of clusters the
    ones a restore starts from (restore.restored: one member of each store's cluster and the gateway's
    container; the other members hold the same data and code)."""
    return restored(phase) if standalone.applies(phase) else list(phase.containers)


def vzdump_all(site: Site, px: ProxmoxClient, set_id: str, note: Callable[[str], None]) -> dict[str, str]:
    """A snapshot-mode vzdump of each container `dumped` names, on the node it runs on now; vmid -> the
    new volume's volid."""
    storage = site.inventory.storage.backups
    out = {}
    nodes = current_nodes(px)
    for spec in dumped(site.phase):
        node = nodes.get(spec.vmid, spec.node)
        before = {v.get("volid") for v in px.backup_volumes(node, storage, spec.vmid)}
        note(f"container {spec.vmid}: vzdump (snapshot, zstd) into {storage} on {node}")
        px.vzdump(node, spec.vmid, storage, notes=f"psa-provision {site.phase.name} {set_id}")
        made = [v for v in px.backup_volumes(node, storage, spec.vmid) if v.get("volid") not in before]
        if not made:
            raise GuestError(f"vzdump of container {spec.vmid} ended but no new volume is on {storage}",
                             hint=f"the vzdump task log on {node}")
        out[str(spec.vmid)] = str(made[-1]["volid"])
    return out


def parse_only(text: str | None) -> tuple[str, ...]:
    """--only postgresql,redis -> ('postgresql', 'redis'); None -> every store."""
    if not text:
        return STORES
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in STORES]
    if unknown or not names:
        raise InputError(f"--only {text}: unknown store(s) {', '.join(unknown) or '(none given)'}",
                         hint=f"choose from {', '.join(STORES)}")
    return names


def migration_in_progress(site: Site) -> str | None:
    """Why a backup of this phase would catch data half moved: a migration into the phase, or out of
    it into the next, has started and not finished. None when there is none."""
    _, after = around(site.phase.name, site.inventory.phases_dir)
    for new in [site.phase, *after[:1]]:
        journal = migration_record.journal_for(site.inventory_path, new.name)
        states = migration_record.read_states(journal.entries())
        started = [n for n, st in states.items() if st.done]
        if started and not states.get("finish", migration_record.StepState()).finished:
            return (f"the migration into {new.name} is under way ({', '.join(started)} started): its stores "
                    "are half moved")
    return None


def repository(site: Site) -> ContainerSpec:
    """The phase's backup container; InputError naming the phase file and the lines to add without one."""
    repo = repository_host(site.phase)
    if repo is None:
        path = site.inventory.phases_dir / f"{site.phase.name}.yml"
        raise InputError(f"{path}: phase {site.phase.name} has no backup container (a container with "
                         "component backup); backup and restore need one",
                         hint=f"add the lines {BACKUP_CONTAINER_EXAMPLE} shows (a second node, pgbackrest "
                              "after postgresql, container 250; README \"Backup and restore\"), then "
                              f"`psa-provision init` and `up {site.phase.name}`")
    return repo


def where(site: Site, component: str) -> ContainerSpec | None:
    hosts = site.phase.with_component(component)
    return hosts[0] if hosts else None


def backup(site: Site, only: tuple[str, ...], note: Callable[[str], None], *,
           kind: str = "diff", containers: bool = False) -> BackupResult:
    """One set of the phase: refuses during a migration, holds the phase's lock while it runs."""
    repository(site)  # refused first in a phase without a backup container
    why = migration_in_progress(site)
    if why:
        raise InputError(f"refusing `backup {site.phase.name}`: {why}",
                         hint="let `psa-provision migrate` finish (`migrate --plan` shows where it is), then "
                              "back up")
    lock = PhaseLock.for_phase(site.inventory_path, site.phase.name)
    try:
        lock.acquire()
    except LockHeld as exc:
        raise LockHeld(f"refusing `backup {site.phase.name}`: another run (up, migrate, destroy or a backup) "
                       f"is changing the phase: {exc.message}", hint=exc.hint) from None
    try:
        return _run(site, only, note, kind, containers)
    finally:
        lock.release()


def _run(site: Site, only: tuple[str, ...], note: Callable[[str], None], kind: str,
         containers: bool) -> BackupResult:
    started, t0 = datetime.now(UTC), time.monotonic()
    set_id = new_id(started)
    repo_spec = repository(site)
    conns: dict[str, Connection] = {}

    def conn(spec: ContainerSpec) -> Connection:
        if spec.hostname not in conns:
            conns[spec.hostname] = ssh_connection(site.inventory, spec)
        return conns[spec.hostname]

    repo = conn(repo_spec)
    artifacts: list[Artifact] = []
    pg: dict[str, object] = {}
    notes: list[str] = []
    try:
        repo.run(f"install -d -m 0700 {shlex.quote(set_dir(set_id))}")
        if "postgresql" in only:
            note(f"postgresql: pgBackRest {kind} backup on {repo_spec.hostname}")
            pg = postgresql(repo, kind)
        producers = {
            "redis": lambda: stores.redis(site.secrets.get("redis.password").value),
            "rabbitmq": stores.rabbitmq,
            "app": stores.app_and_config,
        }
        for store in ("redis", "rabbitmq", "elasticsearch", "app"):
            spec = where(site, "app" if store == "app" else store)
            if store not in only or spec is None:
                continue
            if store == "elasticsearch":
                artifacts += elasticsearch(site, conn, repo, set_id, note)
                continue
            note(f"{store}: from {spec.hostname} into {repo_spec.hostname}:{set_dir(set_id)}")
            artifacts.append(stores.ship(conn(spec), producers[store](), repo, set_id))
        volumes = vzdump_all(site, connect(site.inventory), set_id, note) if containers else {}
        finished = datetime.now(UTC).isoformat(timespec="seconds")
        manifest = Manifest(set_id, site.phase.name, started.isoformat(timespec="seconds"), finished,
                            __version__, tuple(artifacts), pg, volumes)
        repo.run(write_script(set_id), stdin=manifest.to_json())
    except GuestError as exc:
        if "No space left on device" in exc.message:
            repo.run(f"rm -rf {shlex.quote(set_dir(set_id))}", check=False)
            raise GuestError(f"the backup repository on {repo_spec.hostname} is full: set {set_id} was not "
                             "written (its partial files were removed; no manifest)",
                             hint=f"free space in {backup_service.ROOT} or {pgbackrest.REPO_PATH} "
                                  f"(retention: {pgbackrest.RETENTION_FULL} full backups), or grow the "
                                  "container's disk") from exc
        raise
    finally:
        for c in conns.values():
            c.close()
    return BackupResult(manifest, round(time.monotonic() - t0, 1), notes)


def elasticsearch(site: Site, conn: Callable[[ContainerSpec], Connection], repo: Connection, set_id: str,
                  note: Callable[[str], None]) -> list[Artifact]:
    """The set's snapshot through the first member, then every member's part of it shipped (one part
    alone holds only that member's shards: es_snapshot's docstring); the parts' locations removed."""
    members = site.phase.with_component("elasticsearch")
    first = members[0]
    note(f"elasticsearch: snapshot through {first.hostname} ({len(members)} "
         f"member{'s' if len(members) > 1 else ''}), each member's part into {repo.host}:{set_dir(set_id)}")
    out: list[Artifact] = []
    try:
        detail = es_snapshot.take(conn(first), set_id, len(members))
        for m in members:
            shipped = stores.ship(conn(m), stores.elasticsearch_part(set_id, m.hostname, len(members)), repo,
                                  set_id)
            out.append(dataclasses.replace(shipped, detail=detail if m is first else {}))
    finally:
        for m in members:
            es_snapshot.forget(conn(m), set_id, registered=m is first)
    return out


def postgresql(repo: Connection, kind: str) -> dict[str, object]:
    """stanza-create (idempotent), the backup, then the newest backup's label and times from `info`."""
    script = (f"set -euo pipefail\n{PGBACKREST} stanza-create >&2\n"
              f"{PGBACKREST} --type={shlex.quote(kind)} backup >&2\n{PGBACKREST} info --output=json\n")
    out = repo.run(script, timeout=6 * 3600).stdout
    backups = pg_backups(out)
    if not backups:
        raise GuestError(f"{repo.host}: pgBackRest lists no backup after `backup`", hint="pgbackrest info")
    b = backups[-1]
    return {"stanza": pgbackrest.STANZA, "label": b.label, "type": b.kind, "start": b.start, "stop": b.stop,
            "backups": len(backups)}


def read_manifests(repo: Connection) -> list[Manifest]:
    """The complete sets in the repository (a set without a manifest is left out), oldest first."""
    return [m for _, m in _read_sets(repo, "") if m is not None]


def _read_sets(repo: Connection, pg_tail: str) -> list[tuple[str, Manifest | None]]:
    """(name, manifest or None for an incomplete set) of each set directory; pg_tail appends `@@pg`
    and pgBackRest's info to the same call."""
    sets = shlex.quote(backup_service.SETS_DIR)
    out = repo.run(f"cd {sets} 2>/dev/null || exit 0\nfor d in */; do d=${{d%/}}; "
                   f"if [ -f \"$d/{backup_service.MANIFEST}\" ]; then echo \"@@ $d\"; "
                   f"cat \"$d/{backup_service.MANIFEST}\"; else echo \"@@ $d incomplete\"; fi; done\n"
                   + pg_tail).stdout
    found: list[tuple[str, Manifest | None]] = []
    for chunk in out.split("@@")[1:]:
        head, _, body = chunk.partition("\n")
        name = head.strip()
        if name == "pg":
            found.append(("pg " + body, None))
        elif name.endswith(" incomplete"):
            found.append((name.split()[0], None))
        else:
            found.append((name, Manifest.from_json(body, f"{repo.host}:{backup_service.SETS_DIR}/{name}")))
    return found


def list_sets(site: Site) -> list[list[str]]:
    """Rows: set id, phase, finished, stores, size, state (complete: a manifest; else incomplete)."""
    repo_spec = repository(site)
    repo = ssh_connection(site.inventory, repo_spec)
    try:
        found = _read_sets(repo, f"echo '@@pg'; {PGBACKREST} info --output=json 2>/dev/null || true\n")
    finally:
        repo.close()
    rows: list[list[str]] = []
    for name, m in found:
        if name.startswith("pg "):
            for b in pg_backups(name[3:]):
                rows.append([b.label, site.phase.name, when(b.stop),
                             f"postgresql ({b.kind})", "-", "pgBackRest"])
        elif m is None:
            rows.append([name, "-", "-", "-", "-", "incomplete (no manifest)"])
        else:
            size = sum(a.bytes for a in m.artifacts)
            stores_ = ", ".join(([f"postgresql {m.postgresql.get('label')}"] if m.postgresql else [])
                                + [a.store for a in m.artifacts])
            rows.append([m.id, m.phase, when(m.finished_at), stores_, f"{size / 2**20:.1f} MiB", "complete"])
    return rows
