"""Phases that share store containers: the old app container keeps its access while the new one comes up.

Phase 2 keeps phase 1's PostgreSQL, Redis, RabbitMQ and Elasticsearch containers; `up phase2` rewrites
their firewall rules and pg_hba for phase 2's app containers, which would cut phase 1's app container
(230) off the stores while it still serves every request. So, until `migrate phase2` has finished, `up`
keeps the old app container a client: a grants file (journal.migration_grants: pg_hba line) and a
temporary firewall rule per store (comment GRANT_TAG, which `up` leaves alone). `migrate`'s finish
removes both.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from psa_provision import firewall
from psa_provision.journal import migration_grants, write_migration_grants
from psa_provision.migration.record import migration_finished
from psa_provision.phases import ContainerSpec, Phase, around
from psa_provision.proxmox import ProxmoxClient

GRANT_TAG = "psa-migrate:"  # = migrate.GRANT_TAG: rules `up` does not manage


def shared_stores(old: Phase, new: Phase) -> list[tuple[str, ContainerSpec]]:
    """(component, new spec) of each store container `new` takes over from `old` (same vmid, same store)."""
    out = []
    for spec in new.containers:
        before = next((c for c in old.containers if c.vmid == spec.vmid), None)
        for component in firewall.STORE_PORTS:
            if before is not None and component in before.components and component in spec.components:
                out.append((component, spec))
    return out


def old_apps(old: Phase, new: Phase) -> list[ContainerSpec]:
    """The app containers of `old` that `new` drops, when `new` takes over their stores (else none:
    the new stores are other containers, the old app keeps its own until its data moves)."""
    if not shared_stores(old, new):
        return []
    mine = {c.vmid for c in new.containers}
    return [c for c in old.with_component("app") if c.vmid not in mine]


def previous(new: Phase, phases_dir: Path) -> Phase | None:
    """The phase before `new` in the phase files, None for the first."""
    before, _ = around(new.name, phases_dir)
    return before[-1] if before else None


def grant_comment(client: ContainerSpec, phase: str) -> str:
    return f"{GRANT_TAG} {client.hostname} during migrate {phase}"


def grant(px: ProxmoxClient, target: ContainerSpec, port: int, client: ContainerSpec, phase: str,
          note: Callable[[str], None]) -> None:
    """A temporary ACCEPT rule on `target` for tcp/port from `client`, below every other rule.

    POST puts a rule first whatever `pos` says (pve-firewall API2/Firewall/Rules.pm register_create_rule
    unshifts); `up` expects its own rules on top, so the new rule is then moved to the end (PUT
    .../rules/0 moveto=N: update_rule appends when moveto >= the number of rules).
    """
    rules = px.firewall_rules(target.node, target.vmid)
    comment = grant_comment(client, phase)
    if any(str(r.get("comment", "")) == comment and str(r.get("dport")) == str(port) for r in rules):
        return
    note(f"firewall of {target.vmid}: allow tcp/{port} from {client.ip} ({client.hostname}) until "
         f"migrate {phase} finishes")
    px.add_firewall_rule(target.node, target.vmid, {"type": "in", "action": "ACCEPT", "proto": "tcp",
                                                    "dport": str(port), "source": client.ip, "enable": 1,
                                                    "comment": comment})
    if rules:
        px.move_firewall_rule(target.node, target.vmid, 0, len(rules) + 1)


def revoke(px: ProxmoxClient, target: ContainerSpec, note: Callable[[str], None]) -> int:
    """Delete every temporary (GRANT_TAG) rule of `target`, last first; how many."""
    rules = px.firewall_rules(target.node, target.vmid)
    gone = 0
    for rule in sorted(rules, key=lambda r: -int(r.get("pos", 0))):
        if str(rule.get("comment", "")).startswith(GRANT_TAG):
            note(f"firewall of {target.vmid}: remove temporary rule {rule.get('pos')} "
                 f"({rule.get('comment')})")
            px.delete_firewall_rule(target.node, target.vmid, int(rule.get("pos", 0)))
            gone += 1
    return gone


def keep_old_clients(px: ProxmoxClient, inventory_path: Path, old: Phase, new: Phase,
                     note: Callable[[str], None]) -> list[ContainerSpec]:
    """Before `up new` touches stores it shares with `old`: the old app containers that still run stay
    clients (grants file + temporary firewall rules) until `migrate new` finishes; those kept."""
    if migration_finished(inventory_path, new.name):
        return []
    olds = old_apps(old, new)
    guests = {int(g.get("vmid", -1)) for g in px.cluster_guests()} if olds else set()  # one read for all
    alive = [c for c in olds
             if c.vmid in guests and str(px.status(c.node, c.vmid).get("status")) == "running"]
    if not alive:
        return []
    grants = migration_grants(inventory_path, new.name)
    clients = sorted({*map(str, grants.get("clients", ())), *(c.ip for c in alive)})
    if clients != grants.get("clients"):
        write_migration_grants(inventory_path, new.name, {**grants, "clients": clients})
    for component, spec in shared_stores(old, new):
        if spec.vmid not in guests:
            continue
        for client in alive:
            grant(px, spec, firewall.STORE_PORTS[component], client, new.name, note)
    for client in alive:
        note(f"{client.hostname} ({client.ip}, {old.name}) keeps using the stores until "
             f"`psa-provision migrate {new.name}` moves its services")
    return alive


def before_up(px: ProxmoxClient, inventory_path: Path, phases_dir: Path, new: Phase,
              note: Callable[[str], None]) -> None:
    """`up`'s hook: keep_old_clients for the phase before `new`, if any."""
    old = previous(new, phases_dir)
    if old is not None:
        keep_old_clients(px, inventory_path, old, new, note)
