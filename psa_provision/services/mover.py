"""What every data mover shares (services/<store>/mover.py; `migrate phase1` runs them): the Mover protocol.

Each mover works on two ssh.Connections (source and target container) and reaches its store on
127.0.0.1 inside each. PostgreSQL, RabbitMQ and Elasticsearch stream their data between them through
the tool host (Connection.stream_to): nothing in argv, nothing left at rest on the tool host. Redis
replicates: the target follows the source while the writers still write, and is promoted once they
are quiesced. The orchestration (migrate.py) calls prepare, quiesces the writers, calls move, then
verify, and discard when it rolls a step back. Shared here: comparing the
two sides' facts (compare, tab_lines) and HTTP to a store's API on a guest's loopback (http).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from psa_provision.errors import GuestError

if TYPE_CHECKING:
    from psa_provision.secrets import Secrets
    from psa_provision.ssh import Connection


@dataclass(frozen=True)
class Check:
    """One verified fact: the value found on the source and on the target (e.g. rows+md5 of a table)."""

    what: str
    source: str
    target: str

    @property
    def passed(self) -> bool:
        return self.source == self.target


class Mover(Protocol):
    """Moves one component's data; prepare/move/verify/discard are safe to re-run."""

    component: str

    def prepare(self, src: Connection, dst: Connection, secrets: Secrets, log: Callable[[str], None],
                *, source_ip: str) -> None:
        """Before the writers are quiesced: what can move while they still write (dst reaches src's
        store at source_ip), e.g. a replica's initial sync. Nothing for a mover that copies."""
        ...

    def move(self, src: Connection, dst: Connection, secrets: Secrets, log: Callable[[str], None]) -> None:
        """Copy the app's data from src's store to dst's, replacing what dst holds (writers quiesced)."""
        ...

    def verify(self, src: Connection, dst: Connection, secrets: Secrets) -> list[Check]:
        """What the source and the target hold, fact by fact (all passed = the move is complete)."""
        ...

    def discard(self, dst: Connection, secrets: Secrets, log: Callable[[str], None]) -> None:
        """Rollback: return dst's app data to empty (database, users and extensions stay)."""
        ...


class CopyMover:
    """A mover that copies with the writers quiesced: nothing to prepare while they still write."""

    def prepare(self, src: Connection, dst: Connection, secrets: Secrets, log: Callable[[str], None],
                *, source_ip: str) -> None:
        return None


def compare(what: str, source: dict[str, str], target: dict[str, str]) -> list[Check]:
    """One Check per name found on either side (ABSENT where a side lacks it), sorted by name."""
    return [Check(f"{what} {name}", source.get(name, ABSENT), target.get(name, ABSENT))
            for name in sorted(source.keys() | target.keys())]


def tab_lines(text: str, kind: str) -> dict[str, str]:
    """name -> value from `KIND<TAB>NAME<TAB>VALUE` lines of a probe's output (other kinds skipped)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[0] == kind:
            out[parts[1]] = parts[2]
    return out


ABSENT = "(absent)"
Request = tuple[str, str, Any]  # (method, path, JSON body or None)
MARK = "@@psa-http "
WRITE_OUT = "\n" + MARK + "%{http_code}\n"  # after each response body: the marker and the HTTP code


def curl_quote(value: str) -> str:
    """A double-quoted curl config value (backslash, quote and line breaks escaped, as curl reads them)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t") + '"'


def curl_config(base: str, requests: Iterable[Request], auth: tuple[str, str] | None = None) -> str:
    """One curl config running every request in turn (`next`), credentials inside (it goes on stdin)."""
    blocks = []
    for method, path, body in requests:
        lines = [f"url = {curl_quote(base + path)}", f"request = {method}",
                 f"write-out = {curl_quote(WRITE_OUT)}"]
        if auth is not None:
            lines.insert(0, f"user = {curl_quote(f'{auth[0]}:{auth[1]}')}")
        if body is not None:
            lines += ['header = "content-type: application/json"',
                      f"data-binary = {curl_quote(json.dumps(body))}"]
        blocks.append("\n".join(lines) + "\n")
    return "next\n".join(blocks)


def parse_responses(text: str) -> list[tuple[int, str]]:
    """(HTTP code, body) per request: BODY1 MARK CODE1 NL BODY2 MARK CODE2 NL ..."""
    parts = text.split("\n" + MARK)
    out = []
    body = parts[0]
    for part in parts[1:]:
        code, _, rest = part.partition("\n")
        out.append((int(code) if code.isdigit() else 0, body))
        body = rest
    return out


def http(conn: Connection, base: str, requests: list[Request], *, auth: tuple[str, str] | None = None,
         timeout: float = 600.0) -> list[tuple[int, str]]:
    """HTTP requests to a store's API on conn's loopback with one `curl -K -` (config, password included,
    on stdin: never argv); (code, body) each. GuestError when curl fails or answers are missing."""
    if not requests:
        return []
    result = conn.run(f"curl -sS --max-time {timeout:.0f} -K -\n", stdin=curl_config(base, requests, auth))
    responses = parse_responses(result.stdout)
    if len(responses) != len(requests):
        raise GuestError(f"{conn.host}: {len(requests)} requests to {base}, {len(responses)} answers")
    return responses


@dataclass(frozen=True)
class HaStep:
    """One step of turning a standalone store into its phase-3 cluster, as data: on which container,
    what it does, how it is verified, and how it is undone (migrate's journal runs them in order)."""

    name: str
    host: str
    does: str
    verify: str
    rollback: str
