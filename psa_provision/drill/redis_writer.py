"""The drill's Redis writer: writes with and without WAIT to the primary the Sentinels name, from a
Redis member the fault spares, started before the fault and read back after healing.

It runs on a member of the replicated set because that is where redis-cli is (the app containers have
no redis-tools) and the members reach each other's Redis and Sentinel ports (phase 3's firewall), so
the tool needs no route to the data network, only SSH as for every other guest command. The bash is
services/redis/writes.py's; here it is started, stopped and its record turned into Attempts
(store redis-wait / redis-nowait) on the drill's clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from psa_provision.drill.measure import REDIS_STORES, Attempt
from psa_provision.errors import ProvisionError
from psa_provision.phases import ContainerSpec, Phase
from psa_provision.sensitive import Sensitive
from psa_provision.services.redis import COMPONENT, SECRET
from psa_provision.services.redis import writes as redis_writes
from psa_provision.site import Site, ssh_connection

STORES = dict(zip(redis_writes.STORES, REDIS_STORES, strict=True))  # writer's store -> Attempt.store


def writer_host(phase: Phase, lost: tuple[ContainerSpec, ...]) -> ContainerSpec | None:
    """The first member of the phase's replicated Redis set the fault does not take down (None: no
    replicated set, or the fault takes every member)."""
    members = [c for c in phase.with_component(COMPONENT) if c.cluster]
    gone = {c.vmid for c in lost}
    spared = [c for c in members if c.vmid not in gone]
    return spared[0] if len(members) > 1 and spared else None


def sentinels_from(phase: Phase, host: ContainerSpec) -> list[str]:
    """Every member's Sentinel (`ip:port`), the writer host's own first."""
    ips = [host.ip] + [c.ip for c in phase.with_component(COMPONENT) if c.cluster and c.ip != host.ip]
    return redis_writes.sentinel_addresses(ips)


def attempts_of(writes: list[redis_writes.Write], offset: float) -> list[Attempt]:
    """The writer's record as Attempts on the drill's clock (`offset`: the drill's time at its start)."""
    return [Attempt(w.key, offset + w.sent_us / 1e6, offset + w.answered_us / 1e6, w.acked, STORES[w.store])
            for w in writes]


@dataclass
class RedisRun:
    """What the Redis writer left: its attempts, the keys the healed primary holds (None: not read),
    and why something is missing (empty when nothing is)."""

    attempts: list[Attempt] = field(default_factory=list)
    held: set[str] | None = None
    problem: str = ""


class RedisWriter:
    """One writer on one member: start() before the fault, stop() when the drill ends (also on error),
    collect() after healing."""

    def __init__(self, site: Site, host: ContainerSpec, run: str, *, rate: float, max_seconds: float) -> None:
        self.site, self.host, self.run = site, host, run
        self.rate, self.max_seconds = rate, max_seconds
        self.sentinels = sentinels_from(site.phase, host)
        self.offset = 0.0
        self.started = False

    def _ssh(self, script: str, timeout: float) -> str:
        """The script's stdout on the writer's host, the Redis password as its stdin's first line."""
        password = Sensitive.join(self.site.secrets.get(SECRET), "\n")
        conn = ssh_connection(self.site.inventory, self.host)
        try:
            result = conn.run(script, stdin=password, check=False, timeout=timeout)
        finally:
            conn.close()
        if not result.ok:
            raise ProvisionError(f"{self.host.hostname}: {password.mask(result.tail(3))}")
        return result.stdout

    def start(self, at: float) -> str:
        """Start the writer detached (`at`: the drill's clock now); "" or why it did not start."""
        script = redis_writes.writer_script(self.run, self.sentinels, rate=self.rate,
                                            max_seconds=self.max_seconds,
                                            max_writes=int(self.rate * self.max_seconds) + 1)
        try:
            out = self._ssh(script, 30)
        except ProvisionError as exc:
            return f"the writer did not start on {self.host.hostname}: {exc}"
        if "started" not in out.split():
            return f"the writer did not start on {self.host.hostname}"
        self.offset, self.started = at, True
        return ""

    def stop(self) -> None:
        """Ask the writer to stop now (best effort: it stops by itself after max_seconds anyway)."""
        if not self.started:
            return
        try:
            conn = ssh_connection(self.site.inventory, self.host)
            try:
                conn.run(redis_writes.stop_script(self.run), check=False, timeout=30)
            finally:
                conn.close()
        except ProvisionError:
            pass

    def collect(self) -> RedisRun:
        """The writer's attempts and the drill's keys the current primary holds."""
        if not self.started:
            return RedisRun(problem="the writer did not run")
        try:
            out = self._ssh(redis_writes.collect_script(self.run, self.sentinels), 240)
        except ProvisionError as exc:
            return RedisRun(problem=f"the writer's record could not be read: {exc}")
        got = redis_writes.parse_collected(self.run, out)
        attempts = attempts_of(got.writes, self.offset)
        if got.held is None:
            why = "no Sentinel named a primary" if not got.primary else f"SCAN on {got.primary} failed"
            return RedisRun(attempts, None, f"the drill's keys could not be read ({why})")
        if not attempts:
            return RedisRun(attempts, got.held, "the writer recorded no write")
        return RedisRun(attempts, got.held)
