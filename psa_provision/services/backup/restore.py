"""A restore's pure parts: the new containers beside production, the backup volume each starts from,
pgBackRest's restore, the drill's restore point and its report.

Restores go into NEW containers by default: the phase's containers (the backup container aside) with
vmid + RESTORE_OFFSET (or from --into on), hostname + `-restored`, and an address IP_OFFSET above the
original in the same network (wrapping to the bottom of it), skipping every address a phase file uses
and the gateway. Each starts
from a vzdump of its original (packages, configuration, the app), then its stores are put back to the
chosen time: PostgreSQL by pgBackRest (WAL replayed to the second), the others from the newest set
finished at or before it. A phase whose stores run as clusters (phase 3) is restored into phase 1's
layout instead: one standalone copy of each store and one app copy (standalone.py).
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ...errors import InputError
from ...phases import ContainerSpec, Phase
from .. import catalog, pgbackrest, rabbitmq
from ..app import UNIT as APP_UNIT
from ..postgresql import DATABASE
from ..postgresql.mover import APP_OBJECT
from . import standalone

RESTORE_OFFSET = 500  # 200 -> 700
DRILL_OFFSET = 600  # 200 -> 800: a drill never lands on a restore's containers
IP_OFFSET = 100  # 10.0.20.100 -> 10.0.20.200 (the next free one above when taken)
SUFFIX = {"restore": "restored", "drill": "drill"}
DRILL_POINT_PREFIX = "psa-drill-"
PG_SERVICE = "postgresql@15-main"


@dataclass(frozen=True)
class Target:
    """One new container: the original it is restored from and its new spec (vmid, hostname, address)."""

    original: ContainerSpec
    spec: ContainerSpec


def restored(phase: Phase) -> list[ContainerSpec]:
    """The containers a restore brings back: all of the phase's but the backup container; in a phase of
    clusters the first container of each store and the gateway's (standalone.originals)."""
    if standalone.applies(phase):
        return standalone.originals(phase)
    return [c for c in phase.containers if "backup" not in c.components]


def derive(phase: Phase, *, kind: str = "restore", into: int | None = None,
           taken_addresses: Iterable[str] = ()) -> list[Target]:
    """The new containers of a restore (kind `restore`) or a drill (`drill`); `into` is the first one's
    vmid (the others keep their distance from it). Addresses in `taken_addresses` (every phase file's)
    and the gateways are skipped; InputError when a network has no free address left above."""
    specs = restored(phase)
    if not specs:
        raise InputError(f"phase {phase.name} has no container to restore")
    first = specs[0].vmid
    offset = (into - first) if into is not None else (DRILL_OFFSET if kind == "drill" else RESTORE_OFFSET)
    taken = {str(ipaddress.IPv4Interface(a).ip) if "/" in a else a for a in taken_addresses}
    taken |= {c.ip for c in phase.containers} | {c.gateway for c in phase.containers}
    taken |= {str(ipaddress.IPv4Interface(c.vip).ip) for c in phase.containers if c.vip}
    out = []
    for spec in specs:
        ip = _free_address(spec, taken)
        taken.add(ip)
        prefix = ipaddress.IPv4Interface(spec.ip_cidr).network.prefixlen
        suffix = SUFFIX.get(kind, kind)
        hostname = f"{spec.hostname[:62 - len(suffix)]}-{suffix}"
        new = spec.model_copy(update={"vmid": spec.vmid + offset, "hostname": hostname,
                                      "ip_cidr": f"{ip}/{prefix}", "onboot": False})
        out.append(Target(spec, standalone.as_copy(phase, new) if standalone.applies(phase) else new))
    return out


def _free_address(spec: ContainerSpec, taken: set[str]) -> str:
    iface = ipaddress.IPv4Interface(spec.ip_cidr)
    net = iface.network
    first, end = int(net.network_address) + 1, int(net.broadcast_address)
    start = min(int(iface.ip) + IP_OFFSET, end)
    for candidate in (*range(start, end), *range(first, start)):  # above first, then from the bottom
        ip = str(ipaddress.IPv4Address(candidate))
        if ip not in taken:
            return ip
    raise InputError(f"no free address in {net} for the restored {spec.hostname}: every one is a phase "
                     "file's or a gateway", hint="free an address in that network")


def where_now(targets: list[Target], guests: Iterable[dict[str, Any]]) -> list[Target]:
    """Each copy on the node its original runs on now (/cluster/resources rows): the HA manager may have
    moved a phase-3 member off its phase-file node, and its vzdump is made, and found, there."""
    nodes = {int(g.get("vmid", -1)): str(g.get("node")) for g in guests if g.get("node")}
    return [Target(t.original, t.spec.model_copy(update={"node": nodes.get(t.original.vmid, t.spec.node)}))
            for t in targets]


def database_copy(targets: list[Target]) -> ContainerSpec | None:
    """The copy whose PostgreSQL pgBackRest restores (in phase 3 not the leader's copy: any member's)."""
    return next((t.spec for t in targets if pgbackrest.COMPONENT in t.spec.components), None)


def occupied(targets: list[Target], guests: Iterable[dict[str, Any]]) -> list[tuple[int, str]]:
    """(vmid, node) of the targets' vmids already in use in the cluster (/cluster/resources rows)."""
    where = {int(g.get("vmid", -1)): str(g.get("node")) for g in guests}
    return [(t.spec.vmid, where[t.spec.vmid]) for t in targets if t.spec.vmid in where]


def net_addresses(config: dict[str, Any]) -> list[str]:
    """The static addresses (ip=a.b.c.d/n) of a container config's netN keys."""
    return [m.group(1) for k, v in config.items() if re.fullmatch(r"net\d+", str(k))
            for m in [re.search(r"(?:^|,)ip=([\d.]+/\d+)", str(v))] if m]


def address_map(targets: list[Target]) -> dict[str, str]:
    """Original address -> new address of each restored container."""
    return {t.original.ip: t.spec.ip for t in targets}


def rewrite_addresses(text: str, mapping: dict[str, str]) -> str:
    """Every original address in `text` replaced by its new one (10.0.20.10 never matches inside
    10.0.20.100): the restored apps talk to the restored stores, never to production's."""
    if not mapping:
        return text
    pattern = re.compile(r"(?<![\d.])(" + "|".join(re.escape(a) for a in sorted(mapping, key=len,
                                                                             reverse=True)) + r")(?![\d])")
    return pattern.sub(lambda m: mapping[m.group(1)], text)


def rewrite_script(paths: Iterable[str], mapping: dict[str, str]) -> str:
    """Bash: the address rewrite applied in place to those of `paths` that exist on the guest."""
    exprs = " ".join(f"-e {shlex.quote(sed_expression(old, new))}" for old, new in sorted(mapping.items()))
    if not exprs:
        return "true\n"
    return "".join(f"[ ! -f {shlex.quote(p)} ] || sed -E -i {exprs} {shlex.quote(p)}\n" for p in paths)


def _sed_addr(ip: str) -> str:
    # sed -E has no look-behind: anchor on what may surround an address in a config file
    return r"(^|[^0-9.])" + ip.replace(".", r"\.") + r"([^0-9]|$)"


def sed_expression(old: str, new: str) -> str:
    """The sed -E expression rewrite_script uses for one address (tested against rewrite_addresses)."""
    return f"s/{_sed_addr(old)}/\\1{new}\\2/g"


def copy_script(target: Target, mapping: dict[str, str]) -> str:
    """Bash for a copy just booted from its original's vzdump (its services started on production's
    configuration): the app stopped (PM2 resurrected it with production's environment), the managed
    files' production addresses rewritten (what the planner renders for the copy: restored_phase), a
    RabbitMQ node kept on its original's name, then each of the copy's other service units restarted
    on the rewritten files. At boot a store bound to production's address, which the copy lacks: Redis,
    RabbitMQ and Elasticsearch fail to start, PostgreSQL leaves the address out; nothing else restarts
    Elasticsearch, nor the others in a restore without a backup set."""
    spec, original = target.spec, target.original
    files = [f for f in catalog.managed_files(spec.components) if f not in catalog.OPAQUE_FILES]
    keep = (rabbitmq.keep_node_name(original.hostname)
            if rabbitmq.COMPONENT in spec.components and original.hostname != spec.hostname else "")
    units = [u for u in catalog.managed_services(spec.components) if u != APP_UNIT]
    return (f"set -euo pipefail\nsystemctl stop {APP_UNIT} 2>/dev/null || true\n"
            + rewrite_script(files, mapping) + keep + restart_script(units))


def standalone_scripts(target: Target) -> tuple[str, str]:
    """(before, after) the copy's files are written, for a copy in phase 1's layout (standalone.py): its
    clustered store made standalone first; then systemd reloaded and each service restarted on the new
    files (the app stays stopped: it starts last, from its .env)."""
    units = [u for u in catalog.managed_services(target.spec.components) if u != APP_UNIT]
    return (f"set -euo pipefail\n{standalone.before_files(target.original)}",
            f"set -euo pipefail\n{standalone.after_files(target.original)}{restart_script(units)}")


def restart_script(units: Iterable[str]) -> str:
    """Bash: each unit restarted; a unit that failed at boot may have hit systemd's start limit (Redis
    restarts itself on failure), which refuses a restart until reset-failed."""
    return "".join(f"systemctl reset-failed {shlex.quote(u)} 2>/dev/null || true\n"
                   f"systemctl restart {shlex.quote(u)}\n" for u in units)


def choose_volume(volumes: list[dict[str, Any]], vmid: int, at: datetime | None) -> dict[str, Any]:
    """The newest vzdump volume of `vmid` made at or before `at` (the newest of all when `at` is None,
    or when every one is newer: its stores are replaced by the restore anyway)."""
    mine = sorted((v for v in volumes if int(v.get("vmid", -1)) == vmid),
                  key=lambda v: int(v.get("ctime", 0)))
    if not mine:
        raise InputError(f"no vzdump backup of container {vmid} on the backup storage",
                         hint="take one: `psa-provision backup PHASE --containers` (a restore starts each "
                              "new container from its original's vzdump)")
    if at is not None:
        before = [v for v in mine if int(v.get("ctime", 0)) <= at.timestamp()]
        if before:
            return before[-1]
    return mine[-1]


def volume_of(text: str) -> str:
    """A vzdump volid as --backup takes it (`local:backup/vzdump-lxc-200-...tar.zst`), checked."""
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9._-]*:backup/vzdump-lxc-\d+-[\w.-]+", text):
        raise InputError(f"--backup {text} is neither a set id (20261203T101500Z) nor a vzdump volume "
                         "(local:backup/vzdump-lxc-200-2026_12_03-10_15_00.tar.zst)",
                         hint="`psa-provision backups list` shows both")
    return text


def pgbackrest_restore(*, at: datetime | None = None, point: str | None = None) -> str:
    """Bash for the restored database container: stop PostgreSQL, pgBackRest restore (delta) to the
    time or the named restore point, archiving off (the copy must not push WAL into production's
    stanza), promote at the target, start and wait until it accepts connections."""
    if point is not None:
        target = f"--type=name --target={shlex.quote(point)}"
    elif at is not None:
        stamp = at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S+00")
        target = f"--type=time --target={shlex.quote(stamp)} --target-exclusive=n"
    else:
        target = "--type=default"
    return (f"set -euo pipefail\nsystemctl stop {PG_SERVICE}\n"
            f"cd / && runuser -u postgres -- pgbackrest --stanza={pgbackrest.STANZA} --delta "
            f"{target} --target-action=promote --archive-mode=off restore\n"
            f"systemctl start {PG_SERVICE}\n"
            "for _ in $(seq 1 600); do\n"
            "  runuser -u postgres -- psql -XAtc 'SELECT NOT pg_is_in_recovery()' 2>/dev/null | grep -qx t"
            " && exit 0\n  sleep 1\ndone\necho 'PostgreSQL did not leave recovery in 600 s' >&2\nexit 1\n")


def restore_point_sql(name: str, verify_sql: str) -> str:
    """psql script on production: share-lock every app table (writers wait, readers do not), create
    the named restore point, print the time and the tables' checks as they are at that point (the
    restore to that name must show exactly these), commit, then switch WAL so the point is archived
    at once, not after archive_timeout."""
    return f"""BEGIN;
SELECT format('LOCK TABLE %s IN SHARE MODE', string_agg(c.oid::regclass::text, ', '))
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND {APP_OBJECT.format(catalog='pg_class', oid='c.oid')}
HAVING count(*) > 0 \\gexec
SELECT 'point' || E'\\t' || pg_create_restore_point({_literal(name)}) || E'\\t'
       || to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
SELECT 'newest' || E'\\t' || 'tickets' || E'\\t'
       || coalesce(to_char(max(created_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), 'none')
FROM tickets;
{verify_sql}
COMMIT;
SELECT 'wal' || E'\\t' || 'switched' || E'\\t' || pg_switch_wal();
"""  # noqa: S608 (module constants and a quoted literal only)


NEWEST_SQL = ("SELECT 'newest' || E'\\t' || 'tickets' || E'\\t' || coalesce(to_char(max(created_at) AT TIME "
              "ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), 'none') FROM tickets;\n")


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def drill_point(now: datetime) -> str:
    return DRILL_POINT_PREFIX + now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def psql(database: str = DATABASE) -> str:
    return f"cd /tmp && runuser -u postgres -- psql -X -q -A -t -v ON_ERROR_STOP=1 -d {database}"


def parse_time(text: str) -> datetime | None:
    if not text or text == "none":
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def rpo_seconds(newest_at_fault: datetime | None, newest_restored: datetime | None) -> float | None:
    """Seconds of acknowledged writes lost: from the newest write present in the restore to the newest
    production had at the time of the fault (0 when the restore holds it, or nothing was written).
    None when production had writes and the restore holds none of them."""
    if newest_at_fault is None:
        return 0.0
    if newest_restored is None:
        return None
    return max(0.0, (newest_at_fault - newest_restored).total_seconds())


def restored_phase(phase: Phase, targets: list[Target]) -> Phase:
    """The phase as its restored copy is: each original replaced by its target (vmid, hostname,
    address), the services on the targets' vmids; the rest (the backup container) as it is. What the
    copies' firewall rules are computed from: restored from vzdump they still name production's
    addresses, so the copies would not reach each other (and production's containers would reach them).
    A phase of clusters: the copies' own phase (standalone.copy_phase), their files rendered from it too."""
    if standalone.applies(phase):
        return standalone.copy_phase(phase, [t.spec for t in targets])
    new = {t.original.vmid: t.spec for t in targets}
    services = {name: s.model_copy(update={"container": new[s.container].vmid if s.container in new
                                           else s.container,
                                           "also_on": [new[v].vmid if v in new else v for v in s.also_on]})
                for name, s in phase.services.items()}
    return phase.model_copy(update={"containers": [new.get(c.vmid, c) for c in phase.containers],
                                    "services": services})
