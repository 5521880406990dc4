"""SSH to guests: the only importer of fabric and paramiko.

One Connection per host, opened lazily and reused. Scripts travel on stdin (to a temp file) or, when
stdin carries data for the script (a secret), as a quoted `bash -c` argument: secrets never reach
argv. Files are written atomically (temp name in the same directory, chmod/chown, mv).
A Sensitive stdin or file content (sensitive.py) is unwrapped here only, by `wire_bytes`.
"""

from __future__ import annotations

import io
import logging
import posixpath
import secrets as pysecrets
import shlex
import socket
import tarfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import paramiko
from fabric import Connection as FabricConnection

from psa_provision.errors import ConnectionFailed, GuestError
from psa_provision.seams import record_command
from psa_provision.sensitive import Sensitive

# paramiko logs every failed handshake with a traceback; with no handler configured Python prints
# those on stderr. Our errors say what failed in one sentence (ConnectionFailed), so keep them quiet.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

CONNECT_TIMEOUT = 10.0
DEFAULT_TIMEOUT = 1800.0
STREAM_CHUNK = 1 << 20  # bytes in flight through the tool host while streaming between guests
STREAM_IDLE_TIMEOUT = 600.0  # a stream with no data for this long has stalled
TAIL_BYTES = 64 << 10  # stderr/stdout kept from a stream's commands
DEFAULT_EXCLUDE = ("node_modules", "dist", ".git")
# stdin: a line with the file count, that many paths (the manifest), then a tar.gz stream.
# Stale files are removed only inside the top-level directories the source ships (never .env,
# logs, backups or anything else that lives beside the tree), except pruned names (node_modules).
PUT_TREE_SCRIPT = """set -e
mkdir -p {dir}
cd {dir}
manifest=$(mktemp)
IFS= read -r count
for _ in $(seq 1 "$count"); do IFS= read -r line; printf '%s\\n' "$line"; done > "$manifest"
tar -xzf - --no-same-owner --no-overwrite-dir
for top in {dirs}; do
  find "$top" \\( {prune} \\) -prune -o -type f -print
done | sort > "$manifest.have"
sort "$manifest" | comm -13 - "$manifest.have" | while IFS= read -r f; do rm -f -- "$f"; done
rm -f "$manifest" "$manifest.have"
chown -R {owner}:{group} {top}
"""
DROPPED = (paramiko.SSHException, EOFError, ConnectionResetError, ConnectionAbortedError, BrokenPipeError)


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


# The script arrives on stdin and is saved to a private temp file that runs with stdin from /dev/null:
# with plain `bash -s` a command inside that reads stdin (rabbitmqctl does) would eat the script.
RUN_FROM_STDIN = 'f=$(mktemp) && cat > "$f" && bash "$f" </dev/null; rc=$?; rm -f "$f"; exit $rc'


def command_for(script: str, *, has_stdin: bool, cwd: str | None = None) -> tuple[str, bytes]:
    """(argv command, stdin bytes): the script rides stdin unless stdin carries the script's data."""
    body = f"cd {shlex.quote(cwd)} || exit 1\n{script}" if cwd else script
    if has_stdin:
        return f"bash -c {shlex.quote(body)}", b""
    return f"bash -c {shlex.quote(RUN_FROM_STDIN)}", body.encode()


class Connection:
    """A lazily opened, reused SSH connection to one guest (optionally through a jump host)."""

    def __init__(self, host: str, user: str, key_file: str | Path, jump: str | None = None,
                 *, connect_timeout: float = CONNECT_TIMEOUT, known_hosts: Path | None = None) -> None:
        self.host = host
        self.user = user
        self.key_file = str(key_file)
        self.jump = jump
        self.connect_timeout = connect_timeout
        self.known_hosts = known_hosts
        self._fabric: FabricConnection | None = None

    def __repr__(self) -> str:
        via = f" via {self.jump}" if self.jump else ""
        return f"Connection({self.user}@{self.host}{via})"

    # -- connection ------------------------------------------------------------------------------
    def _new(self) -> FabricConnection:
        kwargs: dict[str, Any] = {"key_filename": self.key_file, "look_for_keys": False,
                                  "allow_agent": False, "banner_timeout": self.connect_timeout,
                                  "auth_timeout": self.connect_timeout}
        gateway = None
        if self.jump:
            juser, _, jhost = self.jump.rpartition("@")
            gateway = FabricConnection(jhost, user=juser or self.user, connect_timeout=self.connect_timeout,
                                       connect_kwargs=dict(kwargs))
        conn = FabricConnection(self.host, user=self.user, connect_timeout=self.connect_timeout,
                                connect_kwargs=kwargs, gateway=gateway)
        for client in (conn.client, gateway.client if gateway else None):
            if client is not None and self.known_hosts is not None:
                # trust on first use, remembered: a changed host key is refused (BadHostKeyException)
                self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
                self.known_hosts.touch(mode=0o600, exist_ok=True)
                client.load_host_keys(str(self.known_hosts))
        return conn

    def open(self) -> None:
        """Connect and authenticate now (ConnectionFailed with the reason if that fails)."""
        if self._fabric is not None and self._fabric.is_connected:
            return
        self.close()
        conn = self._new()
        try:
            conn.open()
        except paramiko.BadHostKeyException as exc:
            conn.close()
            raise ConnectionFailed(
                f"SSH host key of {exc.hostname} changed (known hosts: {self.known_hosts})",
                hint="if the container was recreated outside psa-provision, delete its line from that file; "
                     "otherwise someone may be intercepting the connection") from exc
        except paramiko.AuthenticationException as exc:
            conn.close()
            raise ConnectionFailed(
                f"SSH to {self.user}@{self.host} refused the key {self.key_file} ({exc})",
                hint="the container must have been created with the inventory's public key") from exc
        except (*DROPPED, OSError) as exc:
            conn.close()
            raise ConnectionFailed(f"SSH to {self.user}@{self.host} failed: {exc}",
                                   hint="is the container running and on the bridge?") from exc
        self._fabric = conn
        COUNTER.count("connections")

    def close(self) -> None:
        if self._fabric is not None:
            self._fabric.close()
            self._fabric = None

    def _transport(self) -> paramiko.Transport:
        self.open()
        assert self._fabric is not None
        transport = self._fabric.client.get_transport()
        if transport is None or not transport.is_active():
            self.close()
            self.open()
            transport = self._fabric.client.get_transport()
        assert isinstance(transport, paramiko.Transport)
        return transport

    # -- commands --------------------------------------------------------------------------------
    def run(self, script: str, *, stdin: Sensitive | str | bytes | None = None, user: str = "root",
            check: bool = True, timeout: float = DEFAULT_TIMEOUT, cwd: str | None = None,
            idempotent: bool = True) -> Result:
        """Run a bash script as `user`; GuestError when it exits non-zero and check is set.

        `stdin` is data for the script (e.g. a password read with `read -r`): it never touches argv.
        A Sensitive stdin is unwrapped here, onto the channel, and the secrets it holds are masked in
        the GuestError's copy of the output. A dropped connection is reopened and the script retried
        once when `idempotent`.
        """
        command, body = command_for(script, has_stdin=stdin is not None, cwd=cwd)
        data = body if stdin is None else wire_bytes(stdin)
        wrapped = as_user(command, user, self.user)
        record_command(self.host, wrapped, script)
        try:
            result = self._exec(wrapped, data, timeout)
        except DROPPED as exc:
            if not idempotent:
                raise ConnectionFailed(f"SSH to {self.host} dropped during a command that is not safe "
                                       f"to repeat ({exc or type(exc).__name__})",
                                       hint="check on the guest whether it ran, then run again") from exc
            _warn(f"SSH to {self.user}@{self.host} dropped ({exc or type(exc).__name__}): "
                  "reconnecting and running the step again")
            self.close()
            result = self._exec(wrapped, data, timeout)
        if check and not result.ok:
            first = script.strip().splitlines()[0] if script.strip() else "(empty script)"
            tail = stdin.mask(result.tail()) if isinstance(stdin, Sensitive) else result.tail()
            raise GuestError(f"{self.host}: `{first[:80]}` exited {result.exit_code}\n{tail}")
        return result

    def _exec(self, command: str, data: bytes, timeout: float) -> Result:
        """exec_command with stdin sent in one go and stdout/stderr read concurrently."""
        channel = self._transport().open_session()
        COUNTER.count("commands")
        try:
            channel.settimeout(timeout)
            channel.exec_command(command)
            err_chunks: list[bytes] = []
            reader = threading.Thread(target=_drain, args=(channel.makefile_stderr("rb"), err_chunks),
                                      daemon=True)
            reader.start()
            if data:
                channel.sendall(data)
            channel.shutdown_write()
            out = channel.makefile("rb").read()
            code = channel.recv_exit_status()
            reader.join(timeout)
            if code == -1 and not channel.get_transport().is_active():
                raise EOFError("the connection closed before the command's exit status arrived")
        except TimeoutError as exc:
            raise GuestError(f"{self.host}: command still running after {timeout:.0f} s") from exc
        finally:
            channel.close()
        return Result(out.decode(errors="replace"), b"".join(err_chunks).decode(errors="replace"), code)

    # -- files -----------------------------------------------------------------------------------
    def put(self, path: str, content: Sensitive | str | bytes, *, mode: int = 0o644, owner: str = "root",
            group: str = "root", backup: str | None = None) -> None:
        """Write a file atomically: sftp to a temp name beside it, chmod/chown, then mv over.

        A Sensitive content is unwrapped here, into the file. `backup`: a path that receives the
        file's previous content (removed when there was none), so a config a service refuses can be
        put back.
        """
        data = wire_bytes(content)
        directory = posixpath.dirname(path) or "/"
        tmp_dir = directory if self.user == "root" else "/tmp"
        tmp = posixpath.join(tmp_dir, f".{posixpath.basename(path)}.psa-{pysecrets.token_hex(4)}")
        for attempt in (1, 2, 3):
            try:
                self._sftp_write(tmp, data)
                break
            except FileNotFoundError:
                if attempt == 3:
                    raise
                self.run(f"mkdir -p {shlex.quote(tmp_dir)}", user="root")
            except DROPPED:
                if attempt == 3:
                    raise
                self.close()
        q = shlex.quote
        install = f"chown {q(owner)}:{q(group)} {q(tmp)} && chmod {mode:o} {q(tmp)}"
        if backup:
            keep = f"install -d -m 0700 {q(posixpath.dirname(backup) or '/')} && "
            keep += f"{{ if [ -e {q(path)} ]; then cp -p {q(path)} {q(backup)}; "
            keep += f"else rm -f {q(backup)}; fi; }}"
            install = f"{keep} && {install}"
        install += f" && mv -f {q(tmp)} {q(path)}"
        self.run(f"{install} || {{ rc=$?; rm -f {q(tmp)}; exit $rc; }}", user="root")

    def _sftp_write(self, path: str, data: bytes) -> None:
        self.open()
        assert self._fabric is not None
        sftp = self._fabric.client.open_sftp()
        COUNTER.count("transfers")
        try:
            with sftp.open(path, "wb") as handle:
                handle.set_pipelined(True)
                handle.write(data)
            sftp.chmod(path, 0o600)
        finally:
            sftp.close()

    def put_tree(self, local_dir: str | Path, remote_dir: str, exclude: Iterable[str] = DEFAULT_EXCLUDE,
                 *, owner: str = "root", group: str = "root") -> int:
        """Ship a directory as a tar stream on stdin; files gone from the source are removed remotely.

        Only inside the source's top-level directories: files beside the tree (.env, logs/) stay.
        Paths matching `exclude` (name globs: node_modules, dist) are neither sent nor removed, so
        an installed node_modules survives a re-ship. Returns the number of files sent.
        """
        script, payload, count = put_tree_payload(Path(local_dir), remote_dir, tuple(exclude),
                                                  owner=owner, group=group)
        self.run(script, stdin=payload, user="root")
        return count

    # -- streams between guests ---------------------------------------------------------------
    def stream_to(self, script: str, dst: Connection, dst_script: str, *, user: str = "root",
                  dst_user: str = "root", stdin: bytes | None = None, header: bytes = b"",
                  timeout: float = DEFAULT_TIMEOUT,
                  idle_timeout: float = STREAM_IDLE_TIMEOUT) -> Streamed:
        """Pipe `script`'s stdout on this guest into `dst_script`'s stdin on `dst`, chunk by chunk.

        Memory stays bounded (one chunk in flight, stderr/stdout tails) and nothing touches the
        tool host's disk. `stdin` is data for `script` (then the script rides argv, as in run), and
        `header` goes to dst_script's stdin before the stream: a password either reads with
        `IFS= read -r` never reaches argv. GuestError naming both ends' exit codes and stderr when
        either fails or the stream stalls for idle_timeout; not retried (the caller re-runs its step).
        """
        src_cmd, src_body = command_for(script, has_stdin=stdin is not None)
        src_cmd = as_user(src_cmd, user, self.user)
        dst_cmd = as_user(command_for(dst_script, has_stdin=True)[0], dst_user, dst.user)
        record_command(self.host, src_cmd, script)
        record_command(dst.host, dst_cmd, dst_script)
        try:
            src = _StreamEnd(self, src_cmd, src_body if stdin is None else stdin, idle_timeout)
            try:
                sink = _StreamEnd(dst, dst_cmd, header, idle_timeout, keep_stdin=True)
                try:
                    return _stream(src, sink, script, dst_script, timeout)
                finally:
                    sink.close()
            finally:
                src.close()
        except DROPPED as exc:
            raise ConnectionFailed(f"SSH dropped while streaming {self.host} -> {dst.host} "
                                   f"({exc or type(exc).__name__})",
                                   hint="the step is safe to run again") from exc


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


class _StreamEnd:
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


def _stream(src: _StreamEnd, sink: _StreamEnd, script: str, dst_script: str, timeout: float) -> Streamed:
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


def put_tree_payload(root: Path, remote_dir: str, exclude: tuple[str, ...], *, owner: str,
                     group: str) -> tuple[str, bytes, int]:
    """(bash script, its stdin, file count) that unpack `root` into remote_dir (see PUT_TREE_SCRIPT)."""
    archive, names = tar_tree(root, exclude)
    q = shlex.quote
    prune = " -o ".join(f"-name {q(p)}" for p in exclude) or "-false"
    tops = sorted({n.split("/", 1)[0] for n in names})
    dirs = " ".join(q(t) for t in tops if (root / t).is_dir())
    script = PUT_TREE_SCRIPT.format(dir=q(remote_dir), prune=prune, owner=q(owner), group=q(group),
                                    dirs=dirs, top=" ".join(q(t) for t in tops) or ".")
    header = f"{len(names)}\n" + "".join(f"{n}\n" for n in names)
    return script, header.encode() + archive, len(names)


def tar_tree(root: Path, exclude: tuple[str, ...]) -> tuple[bytes, list[str]]:
    """A gzip tar of `root` (paths relative to it), skipping names matching `exclude`; + file list."""
    buf = io.BytesIO()
    names: list[str] = []

    def skip(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        parts = Path(info.name).parts
        if any(fnmatch(part, pat) for part in parts for pat in exclude):
            return None
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        if info.isfile():
            names.append(info.name.removeprefix("./"))
        return info

    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for child in sorted(root.iterdir()):
            tar.add(child, arcname=child.name, filter=skip)
    return buf.getvalue(), sorted(names)


def _warn(text: str) -> None:
    """One warning line on stderr, through output.py (the terminal's one writer)."""
    from psa_provision.output import Output  # late: keeps this adapter importable on its own

    Output().warn(text)


def _drain(stream: Any, sink: list[bytes]) -> None:
    sink.append(stream.read())


def forget_host(known_hosts: Path, host: str) -> None:
    """Drop a host's keys from a known_hosts file (its container was just created or destroyed)."""
    if not known_hosts.exists():
        return
    keys = paramiko.HostKeys(str(known_hosts))
    for name in (host, f"[{host}]:22"):
        if name in keys:
            del keys[name]
    keys.save(str(known_hosts))


def pinned_hosts(known_hosts: Path | None, hosts: Iterable[str]) -> set[str]:
    """The hosts whose key is pinned in the known_hosts file (we have been there before); one read."""
    if known_hosts is None or not known_hosts.exists():
        return set()
    keys = paramiko.HostKeys(str(known_hosts))
    return {h for h in hosts if any(keys.lookup(name) for name in (h, f"[{h}]:22"))}


def tcp_open(host: str, port: int, timeout: float = 2.0) -> bool:
    """True when a TCP connection to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def reachable(host: str, port: int, timeout: float = 3.0) -> tuple[bool, str]:
    """(a network path to host exists, what was seen): an open port or a refusal both prove the path;
    a timeout or an unreachable network do not."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True, f"TCP {port} open"
    except ConnectionRefusedError:
        return True, f"host answers (TCP {port} refused)"
    except OSError as exc:
        return False, f"no path to {host}:{port} ({exc.strerror or type(exc).__name__})"


def wait_for_ssh(conn: Connection, deadline_s: float, *, poll: float = 1.0) -> None:
    """Wait until `conn` accepts TCP 22 and authenticates with the key, or ConnectionFailed."""
    deadline = time.monotonic() + deadline_s
    last = "no answer on TCP 22"
    while True:
        if conn.jump or tcp_open(conn.host, 22):
            try:
                conn.open()
                return
            except ConnectionFailed as exc:
                if isinstance(exc.__cause__, paramiko.AuthenticationException):
                    raise  # sshd answers and refuses the key: waiting cannot help, and each try
                    # would leave a pre-auth connection behind until sshd refuses new ones
                last = exc.message
        if time.monotonic() >= deadline:
            raise ConnectionFailed(
                f"waited {deadline_s:.0f} s for SSH on {conn.user}@{conn.host}:22 with key "
                f"{conn.key_file}: {last}",
                hint="check the container console (pct enter) and that sshd is running")
        time.sleep(poll)
