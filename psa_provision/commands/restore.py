"""`psa-provision restore PHASE --at TIME | --backup ID [--into VMID] [--force]` and `restore --drill`.

A restore makes NEW containers beside production (services/backup/restore.py derives them): each from
the newest vzdump of its original (Proxmox restore, new vmid, hostname and address, new MACs), its
firewall rules and its configuration's production addresses rewritten to the new ones and its services
restarted on them, then PostgreSQL put back by pgBackRest to the time (or a named restore point) and
Redis and RabbitMQ from the newest set finished before it, each artifact checked against the manifest
first; the app starts last, from its rewritten .env. An occupied vmid is refused unless --force (cli
asks on a terminal or wants --yes). The drill restores beside production, compares, reports and removes.
A phase whose stores run as clusters (phase 3) is restored into phase 1's layout
(services/backup/standalone.py): one standalone copy of each store and an app copy running every
service, each copy's configuration files rendered for that layout instead of rewritten.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from psa_provision import firewall, waves
from psa_provision.changes import ApiCall, PutFile
from psa_provision.errors import GuestError, InputError, ProvisionError
from psa_provision.facts import GuestFacts
from psa_provision.phases import ContainerSpec, Phase, load_all
from psa_provision.planner import plan_guest
from psa_provision.proxmox import ProxmoxClient, Write, connect
from psa_provision.services import pgbackrest as pgb
from psa_provision.services.app import pm2
from psa_provision.services.backup import put_back, standalone
from psa_provision.services.backup import restore as rs
from psa_provision.services.backup.manifest import Manifest, newest_set_before, parse_sums, problems, set_dir
from psa_provision.services.container.component import net0
from psa_provision.services.context import HostContext
from psa_provision.services.elasticsearch import snapshot as es_snapshot
from psa_provision.site import Site, forget_host_key, load_site, ssh_connection
from psa_provision.ssh import Connection, wait_for_ssh

from .backup import PGBACKREST, read_manifests, repository, where

HEALTH_WAIT_S = 900
GATEWAY_PORT = 3000


@dataclass
class Restored:
    """What a restore made: the new containers, the recovery target, the set used, and timings."""

    targets: list[rs.Target]
    target: str
    set_id: str | None
    volumes: dict[int, str] = field(default_factory=dict)
    seconds_to_health: float = 0.0

    def rows(self) -> list[list[str]]:
        return [[str(t.original.vmid), str(t.spec.vmid), t.spec.hostname, t.spec.ip, self.volumes.get(
            t.original.vmid, "-")] for t in self.targets]


COLUMNS = ["from", "vmid", "hostname", "address", "started from"]


def parse_backup(text: str | None) -> tuple[str | None, str | None]:
    """--backup: (set id, None) or (None, vzdump volid)."""
    if not text:
        return None, None
    if ":" in text:
        return None, rs.volume_of(text)
    set_dir(text)  # InputError unless it is a set id
    return text, None


def plan(site: Site, px: ProxmoxClient, *, kind: str, into: int | None, force: bool) -> list[rs.Target]:
    """The new containers; InputError for an occupied vmid unless force."""
    guests = px.cluster_guests()
    phases = load_all(site.inventory.phases_dir)
    taken = [c.ip_cidr for p in phases for c in p.containers]
    taken += [c.vip for p in phases for c in p.containers if c.vip]
    taken += _guest_addresses(px, guests)
    targets = rs.where_now(rs.derive(site.phase, kind=kind, into=into, taken_addresses=taken), guests)
    busy = rs.occupied(targets, guests)
    if busy and not force:
        names = ", ".join(f"{v} (on {n})" for v, n in busy)
        raise InputError(f"refusing to restore into container(s) {names}: the vmid is in use, and a restore "
                         "never overwrites a container without --force", hint="choose free ids with --into "
                         "VMID, or remove them; --force replaces them (asks first)")
    return targets


def _guest_addresses(px: ProxmoxClient, guests: list[dict[str, object]]) -> list[str]:
    """net0 addresses of the cluster's containers (an earlier restore's too); those we may not read are
    skipped (the phase files' addresses are taken anyway)."""
    out = []
    for g in guests:
        if g.get("type") != "lxc":
            continue
        try:
            config = px.container_config(str(g.get("node")), int(str(g.get("vmid"))))
        except ProvisionError:
            continue
        out += rs.net_addresses(config)
    return out


def run(inventory_path: Path, phase: str, *, at: datetime | None, backup: str | None, into: int | None,
        force: bool, note: Callable[[str], None], kind: str = "restore", point: str | None = None
        ) -> Restored:
    """`restore PHASE ...` (the cli confirms --force first)."""
    site = load_site(inventory_path, phase)
    return restore(site, connect(site.inventory), at=at, backup=backup, into=into, force=force, note=note,
                   kind=kind, point=point)


def restore(site: Site, px: ProxmoxClient, *, at: datetime | None, backup: str | None, into: int | None,
            force: bool, note: Callable[[str], None], kind: str = "restore", point: str | None = None
            ) -> Restored:
    t0 = time.monotonic()
    repo_spec = repository(site)
    set_id, volid = parse_backup(backup)
    if volid is not None and standalone.applies(site.phase):
        raise InputError(f"restore {site.phase.name} --backup takes a set id here, not a vzdump volume: a "
                         "phase of clusters is restored into standalone copies, whose stores come from a set",
                         hint="`psa-provision backups list` shows the sets")
    targets = plan(site, px, kind=kind, into=into, force=force)
    repo = ssh_connection(site.inventory, repo_spec)
    try:
        manifest = _choose_set(site, repo, set_id, at)
        _set_for_standalone(site, manifest, at)
        if manifest is not None:
            _check_set(repo, manifest, repo_spec.hostname)
        if volid is None and ("postgresql" in {c for t in targets for c in t.original.components}):
            note(f"postgresql: pgBackRest verify on {repo_spec.hostname} (checksums of backups and WAL)")
            repo.run(f"set -euo pipefail\n{PGBACKREST} verify >&2\n", timeout=6 * 3600)
        volumes = _volumes(site, px, targets, volid, at)
        goal = point or (at.isoformat() if at else "latest")
        done = Restored(targets, goal, manifest.id if manifest else None, volumes)
        mapping = rs.address_map(targets)
        copy = rs.restored_phase(site.phase, targets)
        for t in targets:
            _container(site, px, t, volumes[t.original.vmid], mapping, copy, force, note)
        if volid is None:
            opened = _open_repository(px, repo_spec, repository_openings(site.phase, targets), note)
            try:
                for t in targets:
                    _stores(site, repo, t, manifest, at, point, note)
            finally:
                _close_repository(px, repo_spec, opened, note)
        for t in targets:
            if "app" in t.spec.components:
                _start_app(site, t.spec, note)
        done.seconds_to_health = round(time.monotonic() - t0, 1)
        return done
    finally:
        repo.close()


def _set_for_standalone(site: Site, manifest: Manifest | None, at: datetime | None) -> None:
    """InputError when the copies of a phase of clusters need what the set lacks (standalone.py)."""
    if not standalone.applies(site.phase):
        return
    lacking = standalone.missing_from_set(site.phase, None if manifest is None else {
        a.store for a in manifest.artifacts})
    if lacking:
        which = f"set {manifest.id} has no {', '.join(lacking)}" if manifest else "there is no complete set"
        raise InputError(f"restore {site.phase.name}: {which} (by {at or 'now'}): its standalone RabbitMQ "
                         "copy is a new node that gets its users and queues from a set",
                         hint=f"run `psa-provision backup {site.phase.name}` (every store) first")


def repository_openings(phase: Phase, targets: list[rs.Target]) -> list[firewall.Rule]:
    """SSH rules the repository host needs while the copies restore: pgBackRest on a copy's database
    fetches from it over SSH, and from phase 1 on its firewall accepts production's database only."""
    if not firewall.enabled(phase):
        return []
    return [firewall.Rule(22, t.spec.ip, f"pgbackrest ssh (restored copy {t.spec.vmid}, for the restore)")
            for t in targets if pgb.COMPONENT in t.spec.components]


def _open_repository(px: ProxmoxClient, repo: ContainerSpec, rules: list[firewall.Rule],
                     note: Callable[[str], None]) -> list[firewall.Rule]:
    node = px.find_vmid(repo.vmid) or repo.node
    for rule in rules:
        note(f"{repo.hostname}: accept SSH from {rule.source} while the copy restores")
        px.perform(Write("firewall-rule-add", node, repo.vmid, rule.params()))
    return rules


def _close_repository(px: ProxmoxClient, repo: ContainerSpec, rules: list[firewall.Rule],
                      note: Callable[[str], None]) -> None:
    """The rules _open_repository added, removed (highest position first; `up` would remove them too:
    they carry the tool's tag and no phase wants them)."""
    if not rules:
        return
    node = px.find_vmid(repo.vmid) or repo.node
    comments = {str(r.params()["comment"]) for r in rules}
    added = [r for r in px.firewall_rules(node, repo.vmid) if str(r.get("comment", "")) in comments]
    for r in sorted(added, key=lambda r: -int(r.get("pos", 0))):
        px.perform(Write("firewall-rule-delete", node, repo.vmid, {"pos": int(r.get("pos", 0))}))
    note(f"{repo.hostname}: the copies' SSH rules removed")


def _choose_set(site: Site, repo: Connection, set_id: str | None, at: datetime | None) -> Manifest | None:
    manifests = read_manifests(repo)
    if set_id is not None:
        found = [m for m in manifests if m.id == set_id]
        if not found:
            raise InputError(f"backup set {set_id} is not in the repository (or has no manifest: incomplete)",
                             hint="`psa-provision backups list` shows the complete sets")
        return found[0]
    return newest_set_before(manifests, at or datetime.now(UTC))


def _check_set(repo: Connection, manifest: Manifest, host: str) -> None:
    """Every artifact as the manifest says (size, sha256), before anything is touched."""
    d = shlex.quote(set_dir(manifest.id))
    out = repo.run(f"cd {d} && find . -type f ! -name manifest.json ! -name '.*' -printf '%P\\n' | sort | "
                   "while read -r f; do printf '%s %s %s\\n' \"$(stat -c %s \"$f\")\" "
                   "\"$(sha256sum \"$f\" | cut -d' ' -f1)\" \"$f\"; done\n").stdout
    bad = problems(manifest, parse_sums(out))
    if bad:
        raise GuestError(f"backup set {manifest.id} on {host} is damaged: {'; '.join(bad)}",
                         hint="nothing was restored; restore another set (`psa-provision backups list`)")


def _volumes(site: Site, px: ProxmoxClient, targets: list[rs.Target], volid: str | None,
             at: datetime | None) -> dict[int, str]:
    out = {}
    for t in targets:
        if volid is not None and f"-{t.original.vmid}-" in volid:
            out[t.original.vmid] = volid
            continue
        # the copy's node is its original's now (where_now): its vzdumps were made there
        listed = px.backup_volumes(t.spec.node, site.inventory.storage.backups, t.original.vmid)
        out[t.original.vmid] = str(rs.choose_volume(listed, t.original.vmid, at)["volid"])
    return out


def _container(site: Site, px: ProxmoxClient, t: rs.Target, volid: str, mapping: dict[str, str],
               copy: Phase, force: bool, note: Callable[[str], None]) -> None:
    spec = t.spec
    if force and px.find_vmid(spec.vmid) == spec.node and px.status(spec.node, spec.vmid).get(
            "status") == "running":
        note(f"container {spec.vmid}: stopping it (--force: it is replaced)")
        px.stop(spec.node, spec.vmid)
    note(f"container {spec.vmid} ({spec.hostname}, {spec.ip}): Proxmox restore of {volid}")
    px.restore(spec.node, spec.vmid, volid, spec.rootfs_storage, force=force, hostname=spec.hostname,
               net0=net0(spec), onboot=0)
    config = px.container_config(spec.node, spec.vmid)
    have = str(config.get("net0", ""))
    if f"ip={spec.ip_cidr}" not in have.split(","):
        raise GuestError(f"container {spec.vmid} was restored with net0 {have!r}, not {spec.ip_cidr}: "
                         "left stopped, so that it cannot take its original's address",
                         hint=f"pct set {spec.vmid} --net0 ... , or remove it: pct destroy {spec.vmid}")
    walls = [c for c in waves.firewall_changes(px, copy, spec, config) if isinstance(c, ApiCall)]
    if walls:
        note(f"container {spec.vmid}: firewall for the restored copy's addresses ({len(walls)} changes)")
    for change in walls:
        px.perform(Write(change.action, change.node, change.vmid, dict(change.params)))
    px.start(spec.node, spec.vmid)
    forget_host_key(site.inventory, spec)
    conn = ssh_connection(site.inventory, spec)
    try:
        wait_for_ssh(conn, 300)
        if standalone.applies(site.phase):
            _standalone(site, conn, t, copy, note)
        else:
            note(f"container {spec.vmid}: its production addresses rewritten, its services restarted")
            conn.run(rs.copy_script(t, mapping))
    finally:
        conn.close()


def _standalone(site: Site, conn: Connection, t: rs.Target, copy: Phase, note: Callable[[str], None]) -> None:
    """A cluster member's copy made a standalone store (or the app copy), its files rendered for `copy`."""
    before, after = rs.standalone_scripts(t)
    files = copy_files(site, copy, t.spec)
    note(f"container {t.spec.vmid}: made standalone ({', '.join(f.path for f in files)} as `up` renders "
         "them for the copies), its services restarted")
    conn.run(before)
    for f in files:
        conn.put(f.path, f.content, mode=f.mode, owner=f.owner, group=f.group)
    conn.run(after)


def copy_files(site: Site, copy: Phase, spec: ContainerSpec) -> list[PutFile]:
    """The configuration files (standalone.FILES) `up` would write on `spec` in the copies' phase: the
    planner's own PutFiles for a guest with no facts. No pgBackRest keys in the context: the copy's
    PostgreSQL never archives (pgBackRest's restore also sets archive_mode off)."""
    ctx = HostContext(site.inventory, copy, spec, site.secrets)
    return [c for c in plan_guest(ctx, GuestFacts()).changes
            if isinstance(c, PutFile) and c.path in standalone.FILES]


def _stores(site: Site, repo: Connection, t: rs.Target, manifest: Manifest | None, at: datetime | None,
            point: str | None, note: Callable[[str], None]) -> None:
    spec = t.spec
    conn = ssh_connection(site.inventory, spec)
    try:
        if pgb.COMPONENT in spec.components:
            goal = point or (at.isoformat() if at else "the end of the archive")
            note(f"postgresql on {spec.hostname}: pgBackRest restore to {goal}")
            conn.run(rs.pgbackrest_restore(at=at, point=point), timeout=6 * 3600)
        if manifest is None:
            return
        # Elasticsearch's parts only into a standalone copy (phase 3's, which starts empty); a copy from
        # the container's own vzdump holds its indices already
        wanted = ("redis", "rabbitmq", *(["elasticsearch"] if standalone.applies(site.phase) else []))
        es_parts: list[str] = []
        for art in manifest.artifacts:
            host = where(site, art.store)
            if host is None or host.vmid != t.original.vmid or art.store not in wanted:
                continue
            path = put_back.arrival(art.store, Path(art.path).name)
            note(f"{art.store} on {spec.hostname}: {art.path} of set {manifest.id}")
            repo.stream_to(f"cat {shlex.quote(set_dir(manifest.id) + '/' + art.path)}", conn,
                           put_back.receive(path))
            conn.run(put_back.arrived(path, art.sha256, art.bytes))
            if art.store == "elasticsearch":
                es_parts.append(path)
            elif art.store == "redis":
                script, password = put_back.redis(path, site.secrets.get("redis.password").value)
                conn.run(script, stdin=password)
            elif standalone.applies(site.phase):  # the copy's queues classic, as phase 1 declares them
                definitions = conn.run(f"cat {shlex.quote(path)}").stdout
                conn.run(put_back.rabbitmq_stdin(), stdin=put_back.classic_queues(definitions))
            else:
                conn.run(put_back.rabbitmq(path))
        if es_parts:
            indices = next((list(a.detail.get("indices", [])) for a in manifest.artifacts
                            if a.store == "elasticsearch" and a.detail), [])
            parts = f"{len(es_parts)} part{'s' if len(es_parts) > 1 else ''}"
            note(f"elasticsearch on {spec.hostname}: snapshot {es_snapshot.name(manifest.id)} from {parts} "
                 f"({', '.join(indices) or 'no index'})")
            es_snapshot.put_back(conn, manifest.id, es_parts, indices)
        conn.run(put_back.clean())
    finally:
        conn.close()


def _start_app(site: Site, spec: ContainerSpec, note: Callable[[str], None]) -> None:
    note(f"app on {spec.hostname}: start from ecosystem.config.js (the copy's .env), wait for GET "
         f":{GATEWAY_PORT}/health")
    conn = ssh_connection(site.inventory, spec)
    url = f"http://{spec.ip}:{GATEWAY_PORT}/health"
    try:
        conn.run("set -euo pipefail\n" + pm2.start_from_ecosystem()
                 + f"for _ in $(seq 1 {HEALTH_WAIT_S}); do\n"
                 f"  curl -fsS -m 2 {shlex.quote(url)} >/dev/null && exit 0\n  sleep 1\ndone\n"
                 f"echo 'the restored app did not answer {url} in {HEALTH_WAIT_S} s' >&2\nexit 1\n",
                 timeout=HEALTH_WAIT_S + 60)
    finally:
        conn.close()


def remove(site: Site, px: ProxmoxClient, targets: list[rs.Target], note: Callable[[str], None]) -> None:
    """Stop and delete the containers a drill made (only those: their vmids come from the drill's plan)."""
    for t in targets:
        if px.find_vmid(t.spec.vmid) != t.spec.node:
            continue
        note(f"container {t.spec.vmid} ({t.spec.hostname}): removed")
        if px.status(t.spec.node, t.spec.vmid).get("status") == "running":
            px.stop(t.spec.node, t.spec.vmid)
        px.delete(t.spec.node, t.spec.vmid)
        forget_host_key(site.inventory, t.spec)
