"""Execute a Plan, in order, stopping at the first failure with host, step and the output's tail.

Each Change kind maps to one adapter call: ApiCall -> proxmox, PutFile/PutTree -> ssh put,
Package -> apt-get, Service -> systemctl (or pm2 for `pm2:<app>`), Command -> ssh run.
Every step is recorded in the run journal (summaries only: they are masked by construction).
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from psa_provision.changes import (
    ApiCall,
    Change,
    Command,
    Noop,
    Package,
    Plan,
    PutFile,
    PutTree,
    Secret,
    Service,
)
from psa_provision.errors import ConnectionFailed, GuestError, ProvisionError
from psa_provision.journal import Journal
from psa_provision.proxmox import ProxmoxClient, Write
from psa_provision.reads import container_named
from psa_provision.seams import kill_point
from psa_provision.ssh import Connection, Result, wait_for_ssh

APT_ENV = "export DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=a\n"
APT_OPTS = ("-y -q -o DPkg::Lock::Timeout=120 -o Dpkg::Options::=--force-confdef"
            " -o Dpkg::Options::=--force-confold")
APT_RETRY_MARKERS = ("Could not get lock", "Unable to locate package", "dpkg was interrupted",
                     "404  Not Found", "Temporary failure", "Hash Sum mismatch")
SYSTEMCTL = {"start": "start", "restart": "restart", "reload": "reload", "enable": "enable",
             "enable-now": "enable --now", "stop": "stop", "disable": "disable"}
STARTS = frozenset({"start", "restart", "reload", "enable-now"})
PREV_DIR = "/var/lib/psa-provision/previous"  # a managed file's content before this run wrote it
REVIVE_TIMEOUT = 180.0
SETTLE_S = 15.0  # how long a container that lost SSH may take to show `stopped`
PM2 = {"start": "start", "restart": "restart", "reload": "reload", "enable-now": "start", "stop": "stop",
       "enable": "save", "disable": "delete"}


class Progress(Protocol):
    """What apply reports to (output.StepProgress implements it)."""

    def begin(self, change: Change) -> None: ...
    def end(self, change: Change, changed: bool) -> None: ...
    def fail(self, change: Change) -> None: ...


@dataclass
class Summary:
    """Counts of one run; `error` is the failure that stopped it (if any)."""

    changed: int = 0
    unchanged: int = 0
    failed: int = 0
    error: ProvisionError | None = None

    def add(self, other: Summary) -> None:
        self.changed += other.changed
        self.unchanged += other.unchanged
        self.failed += other.failed
        self.error = self.error or other.error

    @property
    def line(self) -> str:
        return f"{self.changed} changed, {self.unchanged} unchanged, {self.failed} failed"


@dataclass
class Targets:
    """Where changes go: SSH connections per host (hostname), the Proxmox client, the app user."""

    conns: Mapping[str, Connection]
    proxmox: ProxmoxClient | None
    pm2_user: str = "psa"
    pm2_home: str = "/home/psa"
    journal: Journal | None = None
    written: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # (host, component) -> paths

    def conn(self, host: str) -> Connection:
        try:
            return self.conns[host]
        except KeyError:
            raise GuestError(f"no SSH connection for host {host}") from None


def apply(plan: Plan, conns: Mapping[str, Connection], proxmox: ProxmoxClient | None,
          journal: Journal | None = None, progress: Progress | None = None, *,
          pm2_user: str = "psa", pm2_home: str = "/home/psa") -> Summary:
    """Run every change in order; stop at the first failure (Summary.error says what and where)."""
    targets = Targets(conns, proxmox, pm2_user, pm2_home, journal)
    summary = Summary()
    for index, change in enumerate(plan.changes):
        if isinstance(change, Noop):
            summary.unchanged += 1
            if progress:
                progress.end(change, changed=False)
            continue
        if progress:
            progress.begin(change)
        step = {"index": index, "host": change.host, "component": change.component, "kind": change.kind,
                "summary": change.summary}
        kill_point(step_name(change))
        try:
            detail = execute_reviving(change, targets)
        except ProvisionError as exc:
            summary.failed += 1
            summary.error = _located(exc, change)
            if journal:
                journal.record("step", **step, state="failed", error=summary.error.message.splitlines()[0])
            if progress:
                progress.fail(change)
            return summary
        summary.changed += 1
        if journal:
            journal.record("step", **step, state="done", **detail)
        if progress:
            progress.end(change, changed=True)
    return summary


def step_name(change: Change) -> str:
    """`<component>: <summary>`: how PSA_KILL_AT (test hook) and the journal name a step."""
    return f"{change.component}: {change.summary}"


@dataclass
class JournaledTask:
    """A write's task journaled (UPID) BEFORE it is waited for, then its end (proxmox.TaskTrack).

    A run killed while waiting leaves the task `running` in the journal: the next run waits for it
    (waits.finish_open_tasks) instead of starting the work a second time.
    """

    journal: Journal | None
    step: str

    def started(self, upid: str, write: Write) -> None:
        if self.journal:
            self.journal.task_started(upid, self.step, method=write.method, path=write.path, vmid=write.vmid)
        kill_point(f"{self.step} (task running)")

    def ended(self, upid: str, status: dict[str, Any] | None) -> None:
        if self.journal is None:
            return
        if status is None:
            self.journal.task_ended(upid, "failed")
        else:
            self.journal.task_ended(upid, "done", exitstatus=status.get("exitstatus"))


def _located(exc: ProvisionError, change: Change) -> ProvisionError:
    """Prefix the error with host and step, keeping its type and hint."""
    where = f"{change.host} [{change.component}] {change.summary}"
    if exc.message.startswith(where):
        return exc
    located = type(exc)(f"{where}: {exc.message}", hint=exc.hint)
    located.__cause__ = exc
    return located


def execute_reviving(change: Change, targets: Targets) -> dict[str, Any]:
    """execute(); a guest step that failed because its container stopped: start it, retry once."""
    try:
        return execute(change, targets)
    except (ConnectionFailed, GuestError) as exc:
        lost = isinstance(exc, ConnectionFailed)
        if isinstance(change, ApiCall) or not _revived(targets, change.host, settle=lost):
            raise
        return execute(change, targets)


def _revived(targets: Targets, host: str, *, settle: bool = False) -> bool:
    """True when `host`'s container was found stopped and is running and reachable again.

    With `settle` (the SSH connection was lost, not a command failed) a container that still shows
    `running` gets SETTLE_S to show `stopped`: a container being killed drops SSH before it stops."""
    px = targets.proxmox
    if px is None:
        return False
    found = container_named(px, host)
    if found is None:
        return False
    node, vmid = found
    deadline = time.monotonic() + (SETTLE_S if settle else 0.0)
    while px.status(node, vmid).get("status") == "running":
        if time.monotonic() >= deadline:
            return False
        time.sleep(1.0)
    _warn(f"container {vmid} ({host}) stopped during the step: starting it and running the step again")
    px.start(node, vmid)
    conn = targets.conn(host)
    conn.close()
    wait_for_ssh(conn, REVIVE_TIMEOUT)
    return True


def _warn(text: str) -> None:
    from psa_provision.output import Output  # late: apply reports through output.py's one writer

    Output().warn(text)


def previous_path(path: str) -> str:
    """Where _put_file keeps a managed file's previous content (`/etc/redis/redis.conf` -> one name)."""
    return f"{PREV_DIR}/{path.strip('/').replace('/', '%')}"


def execute(change: Change, targets: Targets) -> dict[str, Any]:
    """Perform one Change; returns journal details (task id, ...)."""
    handler = HANDLERS.get(type(change))
    if handler is None:
        raise GuestError(f"apply does not know how to perform a {change.kind} change")
    return handler(change, targets)


def _api(change: Change, targets: Targets) -> dict[str, Any]:
    assert isinstance(change, ApiCall)
    if targets.proxmox is None:
        raise GuestError("an API change needs a Proxmox connection")
    params = {k: (v.value if isinstance(v, Secret) else v) for k, v in change.params.items()}
    write = Write(change.action, change.node, change.vmid, params)
    result = targets.proxmox.perform(write, track=JournaledTask(targets.journal, step_name(change)))
    if isinstance(result, dict) and "upid" in result:
        return {"task": result["upid"], "exitstatus": result.get("exitstatus")}
    return {}


def _put_file(change: Change, targets: Targets) -> dict[str, Any]:
    assert isinstance(change, PutFile)
    targets.conn(change.host).put(change.path, change.content, mode=change.mode,
                                  owner=change.owner, group=change.group, backup=previous_path(change.path))
    targets.written.setdefault((change.host, change.component), []).append(change.path)
    return {"path": change.path, "sha256": change.digest}


def _put_tree(change: Change, targets: Targets) -> dict[str, Any]:
    assert isinstance(change, PutTree)
    sent = targets.conn(change.host).put_tree(change.local_dir, change.remote_dir, change.exclude,
                                              owner=change.owner, group=change.group)
    return {"path": change.remote_dir, "files": sent, "checksum": change.checksum}


def _package(change: Change, targets: Targets) -> dict[str, Any]:
    assert isinstance(change, Package)
    conn = targets.conn(change.host)
    names = " ".join(shlex.quote(n) for n in change.names)
    install = f"{APT_ENV}apt-get install {APT_OPTS} {names}"
    result = conn.run(install, check=False)
    if not result.ok and any(m in result.tail(40) for m in APT_RETRY_MARKERS):
        # a held dpkg lock, a stale index or an interrupted dpkg: repair, refresh, try once more
        result = conn.run(f"{APT_ENV}dpkg --configure -a || true\napt-get update -q\n"
                          f"apt-get install {APT_OPTS} {names}", check=False)
    if not result.ok:
        wanted = " ".join(change.names)
        raise GuestError(f"apt-get install {wanted} exited {result.exit_code}\n{result.tail()}")
    return {"packages": list(change.names)}


def _service(change: Change, targets: Targets) -> dict[str, Any]:
    assert isinstance(change, Service)
    conn = targets.conn(change.host)
    if change.name.startswith("pm2:"):
        app = change.name.removeprefix("pm2:")
        verb = PM2[change.action]
        target = "" if verb == "save" else shlex.quote(app)
        env = f"export HOME={shlex.quote(targets.pm2_home)} PM2_HOME={shlex.quote(targets.pm2_home)}/.pm2\n"
        conn.run(f"{env}pm2 {verb} {target}".rstrip(), user=targets.pm2_user)
        return {"service": change.name, "action": change.action}
    unit = shlex.quote(change.name)
    result = conn.run(f"systemctl {SYSTEMCTL[change.action]} {unit}", check=False)
    try:
        if not result.ok:
            raise GuestError(_service_failure(conn, change, result))
        if change.action in STARTS:
            _check_active(conn, change)
    except GuestError as exc:
        restored = _restore_previous(conn, change, targets.written.get((change.host, change.component), []))
        raise GuestError(f"{exc.message}\n{restored}".rstrip(),
                         hint="fix the value in the inventory and run up again") from exc
    return {"service": change.name, "action": change.action}


def _check_active(conn: Connection, change: Service) -> None:
    """A unit that exits right after start: report it with its journal, not as success."""
    unit = shlex.quote(change.name)
    state = conn.run(f"systemctl is-active {unit} || true", check=False).stdout.strip()
    if state in ("failed", "inactive"):
        raise GuestError(_service_failure(conn, change, Result("", f"{change.name} is {state}", 3)))


RESTORE_SCRIPT = """for pair in {pairs}; do
  prev=${{pair%%|*}} path=${{pair#*|}}
  if [ -e "$prev" ]; then cp -p "$prev" "$path"; echo "restored $path"; fi
done
systemctl restart {unit} >/dev/null 2>&1 || true
echo "state $(systemctl is-active {unit} || true)"
"""


def _restore_previous(conn: Connection, change: Service, paths: list[str]) -> str:
    """Put back the files this run wrote for the failing service's component and restart it."""
    if change.action not in STARTS or not paths:
        return ""
    pairs = " ".join(shlex.quote(f"{previous_path(p)}|{p}") for p in dict.fromkeys(paths))
    out = conn.run(RESTORE_SCRIPT.format(pairs=pairs, unit=shlex.quote(change.name)), check=False).stdout
    back = [line.removeprefix("restored ") for line in out.splitlines() if line.startswith("restored ")]
    state = next((line.split()[-1] for line in out.splitlines() if line.startswith("state ")), "unknown")
    if not back:
        return f"nothing to restore: {', '.join(paths)} had no previous version"
    return (f"restored the previous {', '.join(back)}; {change.name} is {state} again" if state == "active"
            else f"restored the previous {', '.join(back)}, but {change.name} is still {state}")


def _service_failure(conn: Connection, change: Service, result: Result) -> str:
    journal = conn.run(f"journalctl -u {shlex.quote(change.name)} -n 20 --no-pager", check=False)
    return (f"systemctl {change.action} {change.name} failed (exit {result.exit_code})\n{result.tail(5)}\n"
            f"journalctl -u {change.name} -n 20:\n{journal.stdout.rstrip()}")


def _command(change: Change, targets: Targets) -> dict[str, Any]:
    assert isinstance(change, Command)
    conn = targets.conn(change.host)
    conn.run(change.script, stdin=change.stdin, user=change.user, cwd=change.cwd)
    return {}


HANDLERS: dict[type[Change], Callable[[Change, Targets], dict[str, Any]]] = {
    ApiCall: _api, PutFile: _put_file, PutTree: _put_tree, Package: _package, Service: _service,
    Command: _command,
}
