"""Guest facts in one SSH round trip (with a /health probe when asked), gathered ahead of the API calls."""

from __future__ import annotations

import threading
from concurrent.futures import Future

from psa_provision import facts as facts_mod
from psa_provision.errors import ProvisionError
from psa_provision.phases import ContainerSpec, Phase
from psa_provision.preflight import ContainerState
from psa_provision.secrets import Secrets
from psa_provision.services.app.facts import processes
from psa_provision.services.app.health import health_script
from psa_provision.site import Site, known_hosts, ssh_connection
from psa_provision.ssh import Connection, pinned_hosts

HEALTH_MARK = "@@psa-provision-health@@"
# facts gathered at once: each is one SSH connection; through a jump host, sshd's MaxStartups (10 by
# default) drops new connections at random once 10 are still authenticating
FACTS_AT_ONCE = 8


def gather_facts(conn: Connection, spec: ContainerSpec, secrets: Secrets,
                 phase: Phase | None = None) -> facts_mod.GuestFacts:
    """ONE ssh command: the facts script (for the PM2 processes `phase` runs there), parsed."""
    result = conn.run(_script(phase, spec), stdin=facts_mod.gather_input(secrets))
    return facts_mod.parse_guest_facts(result.stdout)


def _script(phase: Phase | None, spec: ContainerSpec) -> str:
    """The facts script of `spec`, told the PM2 processes `phase` runs there (none: the daemon is asked)."""
    apps = processes(phase.services_on(spec.vmid)) if phase is not None else None
    return facts_mod.gather_script(spec, apps=apps)


def gather_facts_and_health(conn: Connection, phase: Phase, spec: ContainerSpec,
                            secrets: Secrets) -> tuple[facts_mod.GuestFacts, bool]:
    """ONE ssh command: the facts script, then one /health probe of the container's services.

    Returns (facts, every service answered 200): a converged `up` then needs no second round trip.
    """
    services = phase.services_on(spec.vmid)
    script = _script(phase, spec)
    if services:
        script += f"\necho {HEALTH_MARK}\n" + health_script(phase, spec)
    out = conn.run(script, stdin=facts_mod.gather_input(secrets)).stdout
    head, _, tail = out.partition(f"{HEALTH_MARK}\n")
    codes = dict(line.split() for line in tail.splitlines() if len(line.split()) == 2)
    healthy = bool(services) and all(codes.get(str(s.port)) == "200" for s in services.values())
    return facts_mod.parse_guest_facts(head), healthy


class FactsAhead:
    """The facts of running containers, gathered while Proxmox is still being asked.

    The facts script is the one guest round trip of a converged run, and most of its time is the
    guest's own probes, so it runs alongside the API calls, on a connection of its own. It starts at
    once for a container whose host key is pinned in our known_hosts (we provisioned it; a host key
    check refuses anything else at that address), otherwise as soon as preflight has seen the
    container running and ours. The result is used only when preflight found the container running
    and nothing touched it in between (no open task of a killed run waited for, no change to the
    container): then its connection serves the rest of the run. Otherwise it is dropped without
    waiting (a stopped container's address takes seconds to fail) and its connection closed, and the
    facts are gathered again where they always were. At most FACTS_AT_ONCE are gathered at once (each
    thread takes a turn before it connects); the others wait for one.
    """

    def __init__(self, site: Site, conns: dict[str, Connection], *, health: bool,
                 at_once: int = FACTS_AT_ONCE) -> None:
        self._site, self._conns, self._health = site, conns, health
        self._futures: dict[str, Future[tuple[facts_mod.GuestFacts, bool, Connection]]] = {}
        self._turns = threading.BoundedSemaphore(at_once)

    def __enter__(self) -> FactsAhead:
        return self

    def __exit__(self, *_: object) -> None:
        self.drop_all()

    def start_known(self) -> None:
        specs = self._site.phase.containers
        pinned = pinned_hosts(known_hosts(self._site.inventory), (c.ip for c in specs))
        for spec in specs:
            if spec.ip in pinned:
                self._start(spec)

    def start(self, state: ContainerState) -> None:
        if state.running and state.spec.hostname not in self._futures:
            self._start(state.spec)

    def _start(self, spec: ContainerSpec) -> None:
        future: Future[tuple[facts_mod.GuestFacts, bool, Connection]] = Future()
        self._futures[spec.hostname] = future
        threading.Thread(target=self._gather, args=(spec, future), name=f"facts-{spec.hostname}",
                         daemon=True).start()  # daemon: a dropped one never holds up the exit

    def _gather(self, spec: ContainerSpec, future: Future[tuple[facts_mod.GuestFacts, bool, Connection]],
                ) -> None:
        conn = ssh_connection(self._site.inventory, spec)
        try:
            with self._turns:
                facts, healthy = self._gather_on(conn, spec)
        except Exception as exc:  # handed to take(), which decides
            conn.close()
            future.set_exception(exc)
        else:
            future.set_result((facts, healthy, conn))

    def _gather_on(self, conn: Connection, spec: ContainerSpec) -> tuple[facts_mod.GuestFacts, bool]:
        if self._health:
            return gather_facts_and_health(conn, self._site.phase, spec, self._site.secrets)
        return gather_facts(conn, spec, self._site.secrets, self._site.phase), False

    def take(self, hostname: str, *, usable: bool) -> tuple[facts_mod.GuestFacts, bool] | None:
        """(facts, healthy) gathered ahead, if `usable` and they were; else None, without waiting."""
        future = self._futures.pop(hostname, None)
        if future is None:
            return None
        if not usable:
            future.add_done_callback(_close_connection)
            return None
        try:
            facts, healthy, conn = future.result()
        except (ProvisionError, OSError):  # gathered again the usual way, which reports it
            return None
        self._conns[hostname].close()
        self._conns[hostname] = conn  # closed with the others when the run ends
        return facts, healthy

    def drop_all(self) -> None:
        for hostname in list(self._futures):
            self.take(hostname, usable=False)


def _close_connection(future: Future[tuple[facts_mod.GuestFacts, bool, Connection]]) -> None:
    if not future.exception():
        future.result()[2].close()
