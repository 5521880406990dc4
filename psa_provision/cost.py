"""What a run cost: seconds, Proxmox API calls, SSH connections and guest commands (up, plan, bench)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from psa_provision.proxmox import ProxmoxClient
from psa_provision.ssh import COUNTER as SSH_COUNTER
from psa_provision.timing import WATCH, Stopwatch


@dataclass
class Cost:
    """What a run cost: wall seconds, Proxmox API calls, SSH connections opened, guest commands run,
    and seconds per category (timing.CATEGORIES). `up` and `plan` report it; bench/run reads it."""

    seconds: float = 0.0
    api_calls: int = 0
    ssh_connections: int = 0
    guest_commands: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def line(self) -> str:
        return (f"{self.seconds:.1f} s, {self.api_calls} Proxmox API calls, "
                f"{self.ssh_connections} SSH connections, {self.guest_commands} guest commands")

    def measure(self, started: float, px: ProxmoxClient, watch: Stopwatch = WATCH) -> None:
        """Fill in the figures of the run that started at `started` (time.monotonic())."""
        self.seconds = round(time.monotonic() - started, 1)
        self.api_calls = px.counter.total
        self.ssh_connections, self.guest_commands = SSH_COUNTER.connections, SSH_COUNTER.commands
        self.timings = watch.rounded()
