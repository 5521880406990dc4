"""One guest's command output piped into another guest's command through the tool host, bounded tails kept."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from psa_provision.errors import GuestError
from psa_provision.ssh.wire import COUNTER, Result

if TYPE_CHECKING:
    from psa_provision.ssh.connection import Connection

STREAM_CHUNK = 1 << 20  # bytes in flight through the tool host while streaming between guests

STREAM_IDLE_TIMEOUT = 600.0  # a stream with no data for this long has stalled

TAIL_BYTES = 64 << 10  # stderr/stdout kept from a stream's commands


@dataclass(frozen=True)
class Streamed:
    """What a stream between two guests did: bytes carried and both commands' results."""

    bytes: int
    source: Result
    target: Result


class Tail:
    """The last `limit` bytes written to it (stderr/stdout of a long stream, bounded)."""

    def __init__(self, limit: int = TAIL_BYTES) -> None:
        self.limit = limit
        self._buf = bytearray()
        self.total = 0

    def write(self, data: bytes) -> None:
        self.total += len(data)
        self._buf += data
        if len(self._buf) > self.limit:
            del self._buf[:len(self._buf) - self.limit]

    def text(self) -> str:
        """The kept bytes; when some were dropped, "[...]" and whole lines only."""
        text = self._buf.decode(errors="replace")
        if self.total > len(self._buf):
            return "[...]\n" + (text.partition("\n")[2] if "\n" in text else text)
        return text


def pump(read: Any, write: Any, chunk: int = STREAM_CHUNK) -> int:
    """Copy read(chunk) into write(data) until read gives b"" (EOF); returns the byte count."""
    total = 0
    while data := read(chunk):
        write(data)
        total += len(data)
    return total


class StreamEnd:
    """One side of a stream: a channel running a command, its stderr (and stdout on the target)
    drained into bounded tails by threads."""

    def __init__(self, conn: Connection, command: str, stdin: bytes, idle_timeout: float,
                 *, keep_stdin: bool = False) -> None:
        self.host = conn.host
        self.channel = conn._transport().open_session()
        COUNTER.count("commands")
        self.channel.settimeout(idle_timeout)
        self.channel.exec_command(command)
        self.stderr = Tail()
        self.stdout = Tail()
        self._threads = [threading.Thread(target=_drain_into, args=(self.channel.recv_stderr, self.stderr),
                                          daemon=True)]
        if keep_stdin:  # the target: its stdout is small (a summary) and read here
            self._threads.append(threading.Thread(target=_drain_into, args=(self.channel.recv, self.stdout),
                                                  daemon=True))
        for thread in self._threads:
            thread.start()
        if stdin:
            self.channel.sendall(stdin)
        if not keep_stdin:
            self.channel.shutdown_write()

    def finish(self, deadline: float) -> Result:
        """Wait for the exit status (GuestError past the deadline); the output drained so far."""
        if not self.channel.status_event.wait(max(0.0, deadline - time.monotonic())):
            raise GuestError(f"{self.host}: stream command still running at its deadline")
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        code = self.channel.recv_exit_status()
        return Result(self.stdout.text(), self.stderr.text(), code)

    def close(self) -> None:
        self.channel.close()


def _drain_into(recv: Any, tail: Tail) -> None:
    """Read a channel's stderr/stdout into a tail until EOF; a quiet spell (timeout) is not the end."""
    while True:
        try:
            pump(recv, tail.write, 32 << 10)
            return
        except TimeoutError:
            continue
        except (OSError, EOFError):
            return  # the channel closed: the exit status and stderr say what happened


def stream_between(src: StreamEnd, sink: StreamEnd, script: str, dst_script: str, timeout: float) -> Streamed:
    """Pump src's stdout into sink's stdin, then collect both results; GuestError unless both exit 0."""
    deadline = time.monotonic() + timeout
    carried = 0
    problem = ""

    def write(data: bytes) -> None:
        nonlocal carried
        if time.monotonic() > deadline:
            raise TimeoutError(f"still streaming after {timeout:.0f} s")
        sink.channel.sendall(data)
        carried += len(data)

    try:
        pump(src.channel.recv, write)
        sink.channel.shutdown_write()
    except TimeoutError as exc:
        problem = str(exc) or "no data for the idle timeout"
    except OSError as exc:  # the target closed its end (it exited early): its result says why
        problem = f"the target stopped reading ({exc})"
    if problem:
        src.close()
        sink.channel.shutdown_write()
    source = src.finish(deadline + 30)
    target = sink.finish(deadline + 30)
    if problem or not (source.ok and target.ok):
        raise GuestError(stream_failure(src.host, script, source, sink.host, dst_script, target, problem))
    return Streamed(carried, source, target)


def stream_failure(src_host: str, script: str, source: Result, dst_host: str, dst_script: str,
                   target: Result, problem: str = "") -> str:
    """One message naming both ends, their exit codes and stderr tails."""
    def first(text: str) -> str:  # the script's first line that does something (not `set -o ...`)
        lines = [line for line in text.strip().splitlines() if not line.startswith("set ")]
        return (lines or text.strip().splitlines() or ["(empty script)"])[0][:80]

    def code(result: Result) -> str:
        return "nothing (channel closed)" if result.exit_code == -1 else str(result.exit_code)

    head = f"stream {src_host} -> {dst_host} failed" + (f": {problem}" if problem else "")
    parts = [head,
             f"  source {src_host} `{first(script)}` exited {code(source)}",
             *(f"    {line}" for line in source.tail(10).splitlines()),
             f"  target {dst_host} `{first(dst_script)}` exited {code(target)}",
             *(f"    {line}" for line in target.tail(10).splitlines())]
    return "\n".join(parts)
