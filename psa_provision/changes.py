"""Changes and plans: what `up` would do, as data.

Planning is pure (components turn spec + facts into Changes, see components/); `plan` prints a
Plan, `up` applies the same Plan (apply.py). A Change never performs a side effect itself.

Every Change belongs to one host (a container's hostname) and one component, and carries a
human summary that is safe to print (secrets masked). A component that finds nothing to do
records a `Noop` with the reason instead, so the summary can say `N changed, M unchanged`.
What a step sends that may hold a secret (a Command's stdin, a PutFile's content) is `Sensitive`:
its repr, str and JSON show `***`, so no printed, logged or raised form of a Change carries it.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from psa_provision.proxmox import Action, Write
from psa_provision.sensitive import MASK as MASK
from psa_provision.sensitive import Secret as Secret
from psa_provision.sensitive import Sensitive as Sensitive
from psa_provision.sensitive import mask as mask

NO_TEXT = Sensitive()  # an empty file's content


def sha256(content: str | bytes) -> str:
    data = content.encode() if isinstance(content, str) else content
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Change:
    """One step of a plan on one host."""

    host: str
    component: str
    summary: str
    # needs the phase's other containers up and configured (PM2 apps connect to the stores as they
    # start): `up` applies such changes after every container's other changes, see waves
    needs_peers: bool = False

    @property
    def kind(self) -> str:
        return type(self).__name__


@dataclass(frozen=True)
class Noop(Change):
    """Nothing to do; summary says why (e.g. `postgresql.conf already up to date`)."""


Effect = Literal["live", "restart", "recreate", "create"]


@dataclass(frozen=True)
class ApiCall(Change):
    """A Proxmox API write: `action` on `node` (and container `vmid`) with PVE's parameters.

    `effect` says how a config change lands (live, restart, recreate); proxmox.Write knows the path.
    """

    action: Action = "config"
    node: str = ""
    vmid: int | None = None
    params: dict[str, object] = field(default_factory=dict)
    effect: Effect = "live"
    diff: dict[str, tuple[object, object]] = field(default_factory=dict)  # key -> (old, new)

    @property
    def write(self) -> Write:
        """The write as the Proxmox adapter sends it (Secrets still wrapped: apply unwraps them)."""
        return Write(self.action, self.node, self.vmid, self.params)

    @property
    def method(self) -> str:
        return self.write.method

    @property
    def path(self) -> str:
        return self.write.path


@dataclass(frozen=True)
class PutFile(Change):
    """Write a file atomically (temp + mv) with mode and owner. `diff` is masked text; `content` is
    Sensitive (shown as `***`, unwrapped by the SSH adapter only)."""

    path: str = ""
    content: Sensitive = NO_TEXT
    mode: int = 0o644
    owner: str = "root"
    group: str = "root"
    diff: str = ""

    @property
    def digest(self) -> str:
        return self.content.sha256


@dataclass(frozen=True)
class Package(Change):
    """apt packages to install (after any repository set-up Change of the same component)."""

    names: tuple[str, ...] = ()


@dataclass(frozen=True)
class Service(Change):
    """A systemd unit (or `pm2:<app>`) action."""

    name: str = ""
    action: Literal["start", "restart", "reload", "enable", "enable-now", "stop", "disable"] = "restart"


@dataclass(frozen=True)
class Command(Change):
    """A shell script run as `user`; secrets go in via `stdin` (never argv), Sensitive: shown as `***`."""

    script: str = ""
    user: str = "root"
    stdin: Sensitive | None = None
    cwd: str | None = None


@dataclass(frozen=True)
class PutTree(Change):
    """Ship a local directory tree (the app bundle) into `remote_dir`.

    Every file of local_dir except names/globs in `exclude` is copied in, overwriting; nothing else
    in remote_dir is deleted (.env, logs, node_modules live there). The copied paths are then
    chowned to owner:group. `checksum` is the source's content checksum (components/context.py).
    """

    local_dir: str = ""
    remote_dir: str = ""
    exclude: tuple[str, ...] = ()
    owner: str = "root"
    group: str = "root"
    checksum: str = ""


@dataclass
class Plan:
    """An ordered list of Changes (order = execution order)."""

    changes: list[Change] = field(default_factory=list)

    def add(self, changes: Iterable[Change]) -> None:
        self.changes.extend(changes)

    @property
    def actions(self) -> list[Change]:
        return [c for c in self.changes if not isinstance(c, Noop)]

    @property
    def noops(self) -> list[Change]:
        return [c for c in self.changes if isinstance(c, Noop)]

    @property
    def empty(self) -> bool:
        return not self.actions


def unified_diff(path: str, old: str | None, new: str, secrets: Sequence[str] = ()) -> str:
    """A unified diff of a rendered file against what the guest holds, secrets masked."""
    before = mask(old or "", secrets).splitlines(keepends=True)
    after = mask(new, secrets).splitlines(keepends=True)
    label = "/dev/null" if old is None else path
    return "".join(difflib.unified_diff(before, after, fromfile=label, tofile=path))
