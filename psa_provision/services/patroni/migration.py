"""`migrate phase3` for PostgreSQL, as data: the standalone server becomes the Patroni leader, the new
members bootstrap from it as replicas. Pure: `steps(...)` returns what to run where; the migration
machinery runs each step's `run`, then its `check`, and on a failed check its `rollback`.

Patroni takes over an existing data directory when it starts on the node holding it while the cluster
is not yet initialised in etcd: it writes the initialize key with the server's system identifier and
becomes leader without initdb. It does not create its users then (it does so only when it runs initdb),
so `roles` creates them first. The stock unit stops with a fast shutdown (every acknowledged commit is
on disk) and Patroni starts the same data directory seconds later at the same address: the apps see
connections refused for those seconds and lose no acknowledged write. New members hold no `main`
cluster (createcluster.d), so Patroni clones them from the leader (pg_clonecluster: pg_basebackup).

Order: etcd healthy -> roles -> takeover -> each replica -> synchronous standby. Every step's check is
also what a resumed migration asks first: a step whose check already holds is done.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ...changes import Sensitive
from ...phases import ContainerSpec, Phase
from ..etcd import health as etcd_health
from ..etcd.component import members as etcd_members
from ..mover import HaStep
from ..postgresql.component import PSQL
from . import CONFIG, CONFIG_DIR, REST_PORT, SCOPE, START_CONF, STOCK_UNIT, UNIT, members
from . import health as patroni_health
from .component import WRITE_START_CONF, roles_sql

Judge = Callable[[int, str], list[str]]  # (exit code, stdout) -> problems; [] when the step's effect holds
HBA_BACKUP = f"{CONFIG_DIR}/pg_hba.conf.psa-before-patroni"
CONF_BACKUP = f"{CONFIG_DIR}/postgresql.conf.psa-before-patroni"


@dataclass(frozen=True)
class Probe:
    """A read-only command on the guest and the judgement of its answer."""

    script: str
    judge: Judge


@dataclass(frozen=True)
class Step:
    """One migration step on one container: run, check (a Probe), rollback (bash; "" when nothing to undo)."""

    name: str
    vmid: int
    hostname: str
    summary: str
    run: str
    check: Probe
    rollback: str
    stdin: Sensitive | None = None


def _exit_ok(what: str) -> Judge:
    def judge(code: int, out: str) -> list[str]:
        return [] if code == 0 else [f"{what} (exit {code}): {out.strip()[:200]}"]
    return judge


def _etcd_judge(expected: list[str]) -> Judge:
    def judge(code: int, out: str) -> list[str]:
        if code != 0:
            return [f"etcd did not answer (exit {code})"]
        members_json, _, health_json = out.partition("\n---\n")
        try:
            return etcd_health.problems(expected, etcd_health.parse_members(members_json),
                                        etcd_health.parse_health(health_json))
        except ValueError as exc:
            return [f"etcdctl answered no JSON: {exc}"]
    return judge


def _cluster_judge(expected: list[str], *, sync_required: bool, leader: str | None = None) -> Judge:
    def judge(code: int, out: str) -> list[str]:
        if code != 0:
            return [f"patronictl list failed (exit {code}): {out.strip()[:200]}"]
        try:
            found = patroni_health.parse_list(out)
        except ValueError as exc:
            return [f"patronictl list answered no JSON: {exc}"]
        problems = patroni_health.problems(found, expected, sync_required=sync_required)
        head = patroni_health.leader(found)
        if leader is not None and (head is None or head.name != leader):
            problems.append(f"the leader is {head.name if head else 'nobody'}, want {leader}")
        return problems
    return judge


def _roles_judge(code: int, out: str) -> list[str]:
    if code == 0 and out.strip() == "3":
        return []
    return [f"Patroni's users: {out.strip() or 'none'} of 3 present"]


def source_of(old: Phase, new: Phase) -> ContainerSpec:
    """The member of `new`'s cluster that ran PostgreSQL in `old` (same vmid): it holds the data."""
    before = {c.vmid for c in old.with_component("postgresql")}
    found = [m for m in members(new) if m.vmid in before]
    if len(found) != 1:
        raise ValueError(f"{new.name}: {len(found)} Patroni members ran PostgreSQL in {old.name}, "
                         "want exactly one")
    return found[0]


# S608: module constants only, no input reaches this SQL
ROLES_CHECK = (f"cd / && {PSQL} -At -d postgres -c \"SELECT count(*) FROM pg_roles WHERE rolname IN "  # noqa: S608
               "('postgres', 'replicator', 'rewind_user') AND rolcanlogin\"\n")
ROLES_UNDO = (f"cd / && {PSQL} -d postgres -c "
              "'DROP ROLE IF EXISTS replicator; DROP ROLE IF EXISTS rewind_user'\n")
ETCD_CHECK = f"{etcd_health.MEMBERS}\necho ---\n{etcd_health.HEALTH}\n"
LIST = f"patronictl -c {CONFIG} list -f json\n"
# fast shutdown of the stock server, then Patroni on the same data directory; wait for its leader key
TAKEOVER = f"""cp -a {CONFIG_DIR}/pg_hba.conf {HBA_BACKUP}
cp -a {CONFIG_DIR}/postgresql.conf {CONF_BACKUP}
systemctl stop {STOCK_UNIT}
{WRITE_START_CONF}systemctl mask {STOCK_UNIT}
systemctl enable --now {UNIT}
for _ in $(seq 60); do
  [ "$(curl -s -o /dev/null -w '%{{{{http_code}}}}' http://{{ip}}:{REST_PORT}/leader)" = 200 ] && exit 0
  sleep 2
done
exit 1
"""
# Patroni stopped, its cluster key removed from etcd, the stock server back on its own files
# (`patronictl remove` asks for the cluster name, a confirmation, and the leader if one holds the key)
TAKEOVER_UNDO = f"""systemctl stop {UNIT}
systemctl disable {UNIT}
printf '%s\\n' {SCOPE} 'Yes I am aware' {{hostname}} | patronictl -c {CONFIG} remove {SCOPE}
if [ -f {CONF_BACKUP} ]; then mv {CONF_BACKUP} {CONFIG_DIR}/postgresql.conf; fi
rm -f {CONFIG_DIR}/postgresql.base.conf
if [ -f {HBA_BACKUP} ]; then mv {HBA_BACKUP} {CONFIG_DIR}/pg_hba.conf; fi
printf 'auto\\n' > {START_CONF}
systemctl unmask {STOCK_UNIT}
systemctl start {STOCK_UNIT}
"""
# the replica's copy goes (the leader keeps the data); a rerun clones it afresh
REPLICA_UNDO = (f"systemctl stop {UNIT}\nsystemctl disable {UNIT}\n"
                "pg_dropcluster 15 main 2>/dev/null || true\n")


def steps(old: Phase, new: Phase, passwords: dict[str, str]) -> list[Step]:
    """The steps from `old`'s standalone server to `new`'s Patroni cluster (passwords: user_passwords())."""
    source = source_of(old, new)
    here = (source.vmid, source.hostname)
    etcd = etcd_members(new)
    if not etcd:
        raise ValueError(f"{new.name}: no container runs etcd, the store Patroni needs")
    etcd_names = [m.hostname for m in etcd]
    out = [
        Step("etcd", etcd[0].vmid, etcd[0].hostname, "etcd has the phase's members and a quorum", "",
             Probe(ETCD_CHECK, _etcd_judge(etcd_names)), ""),
        Step("roles", *here, "the replication and rewind users on the standalone server",
             f"cd / && {PSQL} -d postgres\n", Probe(ROLES_CHECK, _roles_judge), ROLES_UNDO,
             stdin=Sensitive(roles_sql(passwords), list(passwords.values()))),
        Step("takeover", *here, f"Patroni takes over {source.hostname}'s data directory as the leader",
             TAKEOVER.format(ip=source.ip),
             Probe(LIST, _cluster_judge([source.hostname], sync_required=False, leader=source.hostname)),
             TAKEOVER_UNDO.format(hostname=source.hostname)),
    ]
    joined = [source.hostname]
    for member in (m for m in members(new) if m.vmid != source.vmid):
        joined.append(member.hostname)
        judge = _cluster_judge(list(joined), sync_required=False, leader=source.hostname)
        out.append(Step(f"replica {member.hostname}", member.vmid, member.hostname,
                        f"{member.hostname} clones the leader and streams from it",
                        f"systemctl enable --now {UNIT}\n", Probe(LIST, judge), REPLICA_UNDO))
    everyone = [m.hostname for m in members(new)]
    out.append(Step("synchronous", *here, "a synchronous standby acknowledges every commit", "",
                    Probe(LIST, _cluster_judge(everyone, sync_required=True)), ""))
    return out


def described(steps_: list[Step]) -> list[HaStep]:
    """The steps as the other stores' migrations describe theirs (`migrate --plan`): what, where, undo."""
    return [HaStep(f"postgresql: {s.name}", s.hostname, s.summary, s.check.script.strip().splitlines()[0],
                   s.rollback.strip().splitlines()[0] if s.rollback.strip() else "(nothing: checks only)")
            for s in steps_]
