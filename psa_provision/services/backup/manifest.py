"""A backup set's manifest (what, when, sizes, sha256, tool version), its checks, and the time rules.

Pure: the commands read the files' sizes and checksums on the repository host and hand them in here.
The manifest is written last and atomically (temp file, fsync, rename), so a set that ran out of disk
has no manifest at all and is listed as incomplete, never half-described.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from ...errors import InputError
from . import MANIFEST, SETS_DIR

FORMAT = 1
_ID = re.compile(r"^\d{8}T\d{6}Z$")


@dataclass(frozen=True)
class Artifact:
    """One file of a set, relative to the set's directory."""

    store: str
    path: str
    bytes: int
    sha256: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Manifest:
    id: str
    phase: str
    started_at: str
    finished_at: str
    tool_version: str
    artifacts: tuple[Artifact, ...] = ()
    postgresql: dict[str, Any] = field(default_factory=dict)  # pgBackRest's label, start/stop, WAL range
    containers: dict[str, str] = field(default_factory=dict)  # vmid -> vzdump volid (backup --containers)

    def to_json(self) -> str:
        data = asdict(self)
        data["format"] = FORMAT
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str) -> Manifest:
        try:
            data = json.loads(text)
            arts = tuple(Artifact(**a) for a in data["artifacts"])
            return cls(data["id"], data["phase"], data["started_at"], data["finished_at"],
                       data["tool_version"], arts, dict(data.get("postgresql") or {}),
                       {str(k): str(v) for k, v in dict(data.get("containers") or {}).items()})
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{where}: not a backup manifest ({type(exc).__name__}: {exc})",
                             hint="the set is damaged: restore another one "
                                  "(`psa-provision backups list`)") from None


def new_id(now: datetime) -> str:
    """A set's id: its start in UTC, e.g. 20261203T101500Z (sorts by time)."""
    return now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def set_dir(set_id: str) -> str:
    if not _ID.match(set_id):
        raise InputError(f"backup id '{set_id}' is not of the form 20261203T101500Z",
                         hint="`psa-provision backups list` shows the ids")
    return f"{SETS_DIR}/{set_id}"


def write_script(set_id: str) -> str:
    """Bash writing the manifest from stdin atomically: a full disk leaves no manifest, not half of one."""
    final = shlex.quote(f"{set_dir(set_id)}/{MANIFEST}")
    tmp = shlex.quote(f"{set_dir(set_id)}/.{MANIFEST}.tmp")
    return (f"set -euo pipefail\ntrap 'rm -f {tmp}' ERR\ncat > {tmp}\nsync {tmp}\nmv -f {tmp} {final}\n"
            f"sync {shlex.quote(set_dir(set_id))}\n")


def problems(manifest: Manifest, observed: dict[str, tuple[int, str]]) -> list[str]:
    """What differs between the manifest and the files found (path -> (bytes, sha256)): missing,
    truncated, corrupt. Empty: every artifact is as it was written."""
    out = []
    for art in manifest.artifacts:
        have = observed.get(art.path)
        if have is None:
            out.append(f"{art.path} is missing")
        elif have[0] != art.bytes:
            what = "truncated" if have[0] < art.bytes else "longer than written"
            out.append(f"{art.path} is {what}: {have[0]} bytes, the manifest says {art.bytes}")
        elif have[1] != art.sha256:
            out.append(f"{art.path} is corrupt: sha256 {have[1][:12]}..., the manifest says "
                       f"{art.sha256[:12]}...")
    return out


def parse_sums(text: str) -> dict[str, tuple[int, str]]:
    """`<bytes> <sha256> <path>` lines (the repository host's listing) -> path -> (bytes, sha256)."""
    out: dict[str, tuple[int, str]] = {}
    for line in text.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[0].isdigit():
            out[parts[2]] = (int(parts[0]), parts[1])
    return out


def parse_at(text: str, now: datetime) -> datetime:
    """--at TIME: ISO 8601 with an offset (2026-12-03T10:15:00+01:00, ...Z); without one it is UTC.
    A time in the future is refused: nothing was written there yet."""
    raw = text.strip()
    if raw.endswith(("Z", "z")):
        raw = raw[:-1] + "+00:00"
    try:
        at = datetime.fromisoformat(raw.replace(" ", "T", 1))
    except ValueError:
        raise InputError(f"--at '{text}' is not a time", hint="write e.g. 2026-12-03T10:15:00Z "
                         "(ISO 8601; no offset means UTC)") from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    if at > now:
        raise InputError(f"--at {at.isoformat()} is in the future (now {now.astimezone(UTC).isoformat()})",
                         hint="give a time that has passed")
    return at


@dataclass(frozen=True)
class PgBackup:
    """One pgBackRest backup as `pgbackrest info --output=json` lists it."""

    label: str
    kind: str
    start: float
    stop: float


def pg_backups(info_json: str) -> list[PgBackup]:
    """The stanza's backups, oldest first, from `pgbackrest info --output=json`."""
    try:
        stanzas = json.loads(info_json)
    except ValueError:
        return []
    out = []
    for stanza in stanzas if isinstance(stanzas, list) else []:
        for b in stanza.get("backup", []):
            ts = b.get("timestamp", {})
            out.append(PgBackup(str(b.get("label")), str(b.get("type")), float(ts.get("start", 0)),
                                float(ts.get("stop", 0))))
    return sorted(out, key=lambda b: b.stop)


def recovery_base(at: datetime, backups: list[PgBackup]) -> PgBackup:
    """The newest backup that finished at or before `at` (point-in-time recovery replays WAL from
    there); InputError when `at` is older than every backup within retention."""
    t = at.timestamp()
    usable = [b for b in backups if b.stop <= t]
    if not usable:
        oldest = (f"the oldest finished at {datetime.fromtimestamp(backups[0].stop, UTC).isoformat()}"
                  if backups else "there is none")
        raise InputError(f"no PostgreSQL backup finished before {at.isoformat()}: {oldest}",
                         hint="pick a later --at, or run `psa-provision backup` first")
    return usable[-1]


def newest_set_before(manifests: list[Manifest], at: datetime) -> Manifest | None:
    """The newest complete set that finished at or before `at` (the other stores' state to restore)."""
    done = [m for m in manifests if datetime.fromisoformat(m.finished_at) <= at]
    return max(done, key=lambda m: m.finished_at) if done else None
