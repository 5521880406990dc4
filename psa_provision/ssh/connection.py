"""An SSH connection to one guest: the only importer of fabric and paramiko.

Opened lazily and reused; runs scripts, writes files atomically (temp name in the same directory,
chmod/chown, mv), ships trees and streams; host keys pinned in the tool's own known_hosts.
"""

from __future__ import annotations

import posixpath
import secrets as pysecrets
import shlex
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import paramiko
from fabric import Connection as FabricConnection

from psa_provision.errors import ConnectionFailed, GuestError
from psa_provision.seams import record_command
from psa_provision.sensitive import Sensitive
from psa_provision.ssh.files import DEFAULT_EXCLUDE, put_tree_payload
from psa_provision.ssh.reach import tcp_open
from psa_provision.ssh.stream import STREAM_IDLE_TIMEOUT, Streamed, StreamEnd, stream_between
from psa_provision.ssh.wire import COUNTER, DEFAULT_TIMEOUT, Result, as_user, command_for, wire_bytes

# paramiko logs every failed handshake with a traceback; with no handler configured Python prints
# those on stderr. Our errors say what failed in one sentence (ConnectionFailed), so keep them quiet.

CONNECT_TIMEOUT = 10.0
DROPPED = (paramiko.SSHException, EOFError, ConnectionResetError, ConnectionAbortedError, BrokenPipeError)


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
            src = StreamEnd(self, src_cmd, src_body if stdin is None else stdin, idle_timeout)
            try:
                sink = StreamEnd(dst, dst_cmd, header, idle_timeout, keep_stdin=True)
                try:
                    return stream_between(src, sink, script, dst_script, timeout)
                finally:
                    sink.close()
            finally:
                src.close()
        except DROPPED as exc:
            raise ConnectionFailed(f"SSH dropped while streaming {self.host} -> {dst.host} "
                                   f"({exc or type(exc).__name__})",
                                   hint="the step is safe to run again") from exc


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
