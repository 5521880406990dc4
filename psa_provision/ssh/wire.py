"""How a script and its stdin travel over an SSH channel, what comes back, and what was counted.

Scripts travel on stdin (to a temp file) or, when stdin carries data for the script (a secret), as a
quoted `bash -c` argument: secrets never reach argv. A Sensitive value is unwrapped here, by wire_bytes.
"""

from __future__ import annotations

import shlex
import threading
from dataclasses import dataclass, field

from psa_provision.sensitive import Sensitive

DEFAULT_TIMEOUT = 1800.0


@dataclass
class SshCounter:
    """SSH connections opened, commands run and files sent in this process (the cost of a run)."""

    connections: int = 0
    commands: int = 0
    transfers: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count(self, what: str) -> None:
        """Add one to `connections`, `commands` or `transfers` (hosts are served from threads)."""
        with self._lock:
            setattr(self, what, getattr(self, what) + 1)


COUNTER = SshCounter()


@dataclass(frozen=True)
class Result:
    """What a remote command did."""

    stdout: str
    stderr: str
    exit_code: int

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def tail(self, lines: int = 20) -> str:
        """The last lines of stderr+stdout, for error messages."""
        text = "\n".join(p for p in (self.stdout.rstrip(), self.stderr.rstrip()) if p)
        return "\n".join(text.splitlines()[-lines:])


def wire_bytes(data: Sensitive | str | bytes) -> bytes:
    """The bytes that go onto the channel or into the file: the one place a Sensitive is unwrapped."""
    if isinstance(data, Sensitive):
        return data.reveal().encode()
    return data.encode() if isinstance(data, str) else data


def as_user(command: str, user: str, login_user: str) -> str:
    """Wrap `command` to run as `user` (runuser when logged in as root, else sudo -n)."""
    if user == login_user:
        return command
    if login_user == "root":
        return f"runuser -l {shlex.quote(user)} -s /bin/bash -c {shlex.quote(command)}"
    return f"sudo -n -H -u {shlex.quote(user)} bash -c {shlex.quote(command)}"


RUN_FROM_STDIN = 'f=$(mktemp) && cat > "$f" && bash "$f" </dev/null; rc=$?; rm -f "$f"; exit $rc'


def command_for(script: str, *, has_stdin: bool, cwd: str | None = None) -> tuple[str, bytes]:
    """(argv command, stdin bytes): the script rides stdin unless stdin carries the script's data."""
    body = f"cd {shlex.quote(cwd)} || exit 1\n{script}" if cwd else script
    if has_stdin:
        return f"bash -c {shlex.quote(body)}", b""
    return f"bash -c {shlex.quote(RUN_FROM_STDIN)}", body.encode()
