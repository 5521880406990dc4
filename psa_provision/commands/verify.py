"""`psa-provision verify PHASE`: run the phase's testinfra suite against the live containers.

The suites (psa_provision/suites/) ship with the package and read like the seed's checklist. This
module turns inventory + phase into testinfra host specs (`ssh://<container hostname>`, resolved by
a generated ssh_config: address, key, jump host, known_hosts), writes a context file the suites'
conftest reads (paths and expected values, never a secret), runs pytest in process and collects one
CheckResult per check. It is the only importer of pytest and testinfra.

Host keys: the tool's own known_hosts next to the journal (site.known_hosts, the file the
provisioning SSH pins keys in and clears when it creates or destroys a container); a key seen
first is recorded (accept-new), a changed key fails the checks of that container.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from psa_provision.changes import mask
from psa_provision.errors import ProvisionError
from psa_provision.secrets import Secrets
from psa_provision.services.app.component import probe_address
from psa_provision.services.context import HostContext
from psa_provision.services.elasticsearch import expected as elasticsearch_expected
from psa_provision.services.haproxy import config as haproxy_config
from psa_provision.services.keepalived import config as keepalived_config
from psa_provision.services.patroni import expected as patroni_expected
from psa_provision.services.postgresql import expected as postgresql_expected
from psa_provision.services.redis import expected as redis_expected

SUITES_DIR = Path(__file__).parents[1] / "suites"
CONTEXT_ENV = "PSA_VERIFY_CONTEXT"
DETAIL_LINES = 6


@dataclass(frozen=True)
class JumpHost:
    """An SSH bastion the containers are reached through (`ProxyJump`)."""

    address: str
    user: str = "root"
    port: int = 22


@dataclass(frozen=True)
class Target:
    """One container to verify: its hostname (the ssh alias and the host shown in results) and address."""

    hostname: str
    address: str
    user: str = "root"
    port: int = 22


@dataclass(frozen=True)
class SshSettings:
    """How to reach the targets: key, known_hosts file (in the state dir), optional jump host."""

    identity_file: Path
    known_hosts: Path
    jump: JumpHost | None = None
    connect_timeout: int = 10


@dataclass(frozen=True)
class CheckResult:
    """One check on one host; `detail` says what was found when it failed (secrets masked)."""

    host: str
    check: str
    passed: bool
    detail: str = ""
    skipped: bool = False


@dataclass
class VerifyReport:
    """All check results of one verify run; exit code 0 only when every check passed."""

    phase: str
    results: list[CheckResult] = field(default_factory=list)
    pytest_exit: int = 0
    junit_xml: Path | None = None
    planned: list[tuple[str, str]] = field(default_factory=list)

    @property
    def failed(self) -> list[CheckResult]:
        return [r for r in self.results if not r.passed and not r.skipped]

    @property
    def passed(self) -> list[CheckResult]:
        return [r for r in self.results if r.passed]

    @property
    def exit_code(self) -> int:
        """0 when all checks passed and pytest ran them all (collection errors count as failure)."""
        return 0 if self.results and not self.failed and self.pytest_exit == 0 else 1


JUMP_ALIAS = "psa-jump"


def ssh_config_text(targets: Sequence[Target], ssh: SshSettings, control_dir: Path) -> str:
    """An ssh_config with one `Host <hostname>` block per container (and the jump host, if any).

    Host keys are recorded on first contact (accept-new) in the state dir's known_hosts and checked
    afterwards; connections are multiplexed so a suite of many checks costs one handshake per host.
    """
    common = [
        f"  IdentityFile {ssh.identity_file}",
        "  IdentitiesOnly yes",
        "  BatchMode yes",
        f"  UserKnownHostsFile {ssh.known_hosts}",
        "  StrictHostKeyChecking accept-new",
        f"  ConnectTimeout {ssh.connect_timeout}",
        "  ServerAliveInterval 15",
        f"  ControlPath {control_dir}/%C",
        "  LogLevel ERROR",
    ]
    blocks: list[str] = []
    if ssh.jump is not None:
        blocks.append(
            "\n".join(
                [f"Host {JUMP_ALIAS}", f"  HostName {ssh.jump.address}", f"  User {ssh.jump.user}",
                 f"  Port {ssh.jump.port}", *common]
            )
        )
    for target in targets:
        lines = [f"Host {target.hostname}", f"  HostName {target.address}", f"  User {target.user}",
                 f"  Port {target.port}", *common]
        if ssh.jump is not None:
            lines.append(f"  ProxyJump {JUMP_ALIAS}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def host_specs(targets: Sequence[Target]) -> list[str]:
    """testinfra host specs: the ssh (OpenSSH) backend, each host named by its ssh_config alias."""
    return [f"ssh://{t.hostname}" for t in targets]


def write_context(path: Path, context: dict[str, Any]) -> None:
    """Write the suite context (paths, expected values; no secrets) as JSON, readable by the owner only."""
    path.write_text(json.dumps(context, indent=2, sort_keys=True, default=str))
    path.chmod(0o600)


def read_context(path: Path) -> dict[str, Any]:
    """Read the suite context written by write_context (the suites' conftest calls this)."""
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def suite_files(phase: str) -> list[Path]:
    """The suite modules of a phase (`test_<phase>.py`) plus the common ones (`test_common*.py`)."""
    files = sorted(SUITES_DIR.glob("test_common*.py")) + sorted(SUITES_DIR.glob(f"test_{phase}.py"))
    return files


class Collector:
    """A pytest plugin object that records each check's outcome as a CheckResult (secrets masked)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = [s for s in secrets if s]
        self.results: list[CheckResult] = []
        self._names: dict[str, tuple[str, str]] = {}
        self.planned: list[tuple[str, str]] = []

    def pytest_itemcollected(self, item: pytest.Item) -> None:
        """Remember which host and which check each test item is (from testinfra's host parameter)."""
        self._names[item.nodeid] = check_name(item)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """The checks that will run (after the suites dropped the ones that do not apply)."""
        self.planned = [check_name(item) for item in session.items]

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Keep the call outcome, and setup/teardown only when they failed or skipped the check."""
        if report.when != "call" and report.passed:
            return
        if report.when == "teardown" and report.skipped:
            return
        host, check = self._names.get(report.nodeid, ("-", report.nodeid.split("::")[-1]))
        detail = "" if report.passed else self._detail(report)
        if report.when != "call" and report.failed:
            detail = f"({report.when} failed) {detail}"
        self.results.append(
            CheckResult(host=host, check=check, passed=report.passed, detail=detail, skipped=report.skipped)
        )

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        """A suite that fails to import is a failed check, not a silent pass."""
        if report.failed:
            text = mask(str(report.longrepr), self.secrets)
            self.results.append(CheckResult(host="-", check=f"collect {report.nodeid}", passed=False,
                                            detail=_last_lines(text)))

    def _detail(self, report: pytest.TestReport) -> str:
        longrepr = report.longrepr
        if report.skipped and isinstance(longrepr, tuple):
            return mask(str(longrepr[2]), self.secrets)
        crash = getattr(longrepr, "reprcrash", None)
        text = crash.message if crash is not None else str(longrepr)
        return mask(failure_message(text), self.secrets)


def failure_message(text: str) -> str:
    """The check's own words from a failure: `AssertionError: <msg>` without pytest's `assert ...`
    explanation that follows it; a bare assert or another exception keeps its first lines."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if lines and lines[0].startswith("Failed: "):  # pytest.fail(...) from a fixture
        lines[0] = lines[0].removeprefix("Failed: ")
        return "\n".join(lines[:DETAIL_LINES])
    if lines and lines[0].startswith("AssertionError: "):
        own: list[str] = []
        for line in lines:
            if line.startswith("assert ") or line.lstrip().startswith("+"):
                break
            own.append(line)
        own[0] = own[0].removeprefix("AssertionError: ")
        return "\n".join(own[:DETAIL_LINES])
    return _trim(text)


def check_name(item: pytest.Item) -> tuple[str, str]:
    """(host, check) of a test item: the host is testinfra's host parameter, the check the test name
    with its other parameters, e.g. (psa-all-in-one, test_pm2_app_online[tickets])."""
    callspec = getattr(item, "callspec", None)
    params: dict[str, Any] = dict(callspec.params) if callspec is not None else {}
    host_obj = params.pop("_testinfra_host", None)
    host = host_obj.backend.get_hostname() if host_obj is not None else "-"
    base = getattr(item, "originalname", None) or item.name.split("[")[0]
    others = [v for k, v in params.items() if not k.startswith("_")]
    if others:
        base += "[" + "-".join(str(v) for v in others) + "]"
    return host, base


def _trim(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(lines[:DETAIL_LINES])


def _last_lines(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(lines[-DETAIL_LINES:])


def pytest_args(files: Sequence[Path], hosts: Sequence[str], *, ssh_config: Path | None,
                rootdir: Path, junit_xml: Path | None, extra: Sequence[str] = ()) -> list[str]:
    """The argv of the in-process pytest run (quiet; no cache; config isolated from the caller's cwd)."""
    ini = rootdir / "pytest.ini"
    if not ini.exists():
        ini.write_text("[pytest]\nmarkers =\n    component(name): the check needs this component\n")
    args = [*(str(f) for f in files), "-c", str(ini), "--rootdir", str(rootdir),
            "-p", "no:cacheprovider", "-p", "no:terminal", "--import-mode=importlib",
            "--hosts=" + ",".join(hosts)]
    if ssh_config is not None:
        args.append(f"--ssh-config={ssh_config}")
    if junit_xml is not None:
        args.append(f"--junit-xml={junit_xml}")
    args.extend(extra)
    return args


@contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def run_suite(files: Sequence[Path], hosts: Sequence[str], *, context: dict[str, Any],
              secrets: Iterable[str] = (), ssh_config_text_: str | None = None,
              junit_xml: Path | None = None, phase: str = "", extra: Sequence[str] = ()) -> VerifyReport:
    """Run suite files in process against hosts; the context reaches conftest via a 0600 JSON file."""
    secret_values = list(secrets)
    with tempfile.TemporaryDirectory(prefix="psa-verify-") as tmp:
        workdir = Path(tmp)
        ssh_config: Path | None = None
        if ssh_config_text_ is not None:
            ssh_config = workdir / "ssh_config"
            ssh_config.write_text(ssh_config_text_)
        context_file = workdir / "context.json"
        write_context(context_file, {**context, "ssh_config": str(ssh_config) if ssh_config else None})
        collector = Collector(secret_values)
        aliases = [h.split("://", 1)[1] for h in hosts]
        args = pytest_args(files, hosts, ssh_config=ssh_config, rootdir=workdir, junit_xml=junit_xml,
                           extra=extra)
        env = {CONTEXT_ENV: str(context_file)}
        with _environ(env):
            code = int(pytest.main(args, plugins=[collector]))
            report = VerifyReport(phase=phase, results=collector.results, pytest_exit=code,
                                  junit_xml=junit_xml, planned=collector.planned)
            if ssh_config is not None:
                _close_masters(ssh_config, aliases)
    if junit_xml is not None and junit_xml.exists() and secret_values:
        junit_xml.write_text(mask(junit_xml.read_text(), secret_values))
    return report


def _close_masters(ssh_config: Path, aliases: Sequence[str]) -> None:
    """Stop the multiplexing masters this run started (they would otherwise linger ControlPersist)."""
    for alias in aliases:
        subprocess.run(["ssh", "-F", str(ssh_config), "-O", "exit", alias],
                       capture_output=True, check=False, timeout=15)


# --- from inventory + phase ------------------------------------------------------------------------

def parse_jump(text: str | None, default_user: str) -> JumpHost | None:
    """`[user@]host[:port]` (the inventory's ssh.jump_host) -> JumpHost."""
    if not text:
        return None
    user, _, hostport = text.rpartition("@")
    host, _, port = hostport.partition(":")
    return JumpHost(address=host, user=user or default_user, port=int(port) if port else 22)


def targets_of(phase: Any, user: str = "root") -> list[Target]:
    """One Target per container of the phase, addressed by its IP, named by its hostname."""
    return [Target(hostname=c.hostname, address=c.ip, user=user) for c in phase.containers]


def expected_values(inventory: Any, phase: Any, container: Any) -> dict[str, Any]:
    """What this container's components must show: the seed's settings as data (services/*/expected.py,
    scaled to the container's memory, the inventory's tuning first) and where each service listens."""
    ctx = HostContext(inventory, phase, container, Secrets({}))
    tuning = inventory.tuning
    out: dict[str, Any] = {"listen": ctx.listen_address()}
    if "app" in container.components:  # where each service listens (its private address when split)
        out["service_addresses"] = {name: probe_address(phase, container, name) for name in ctx.services}
    if "postgresql" in container.components:
        out["postgresql"] = postgresql_expected.expected(tuning.postgresql, container.memory_mb,
                                                         ctx.listen_address())
    if "redis" in container.components:
        out["redis"] = {"maxmemory": redis_expected.maxmemory(tuning.redis.maxmemory, container.memory_mb)}
    if "elasticsearch" in container.components:
        members = [c.hostname for c in phase.with_component("elasticsearch")]
        out["elasticsearch"] = elasticsearch_expected.expected(tuning.elasticsearch.heap, container.memory_mb,
                                                               members)
    if "haproxy" in container.components:  # its frontends bind every address (services/haproxy)
        out["haproxy"] = {"wildcard_ports": haproxy_config.wildcard_ports(phase)}
    if "keepalived" in container.components:
        out["keepalived"] = {"vip": keepalived_config.vip(phase),
                             "pair": [p.hostname for p in keepalived_config.pair(phase)]}
    out.update(patroni_expected.expected(phase, container))
    if "patroni" in out and "postgresql" in out:  # the seed's settings, but Patroni's listen_addresses
        out["postgresql"]["listen_addresses"] = out["patroni"]["listen_addresses"]
    return out


def suite_context(inventory: Any, phase: Any) -> dict[str, Any]:
    """The suites' context: paths, the phase's containers by hostname, services by name, expectations."""
    containers = {c.hostname: {**c.model_dump(mode="json"), "ip": c.ip} for c in phase.containers}
    by_vmid = {c.vmid: c.hostname for c in phase.containers}
    services = {name: {**s.model_dump(mode="json"), "hostname": by_vmid.get(s.container),
                       "hostnames": [by_vmid[v] for v in s.containers if v in by_vmid]}
                for name, s in phase.services.items()}
    return {
        "phase": phase.name,
        "inventory_path": str(inventory.path),
        "secrets_file": str(inventory.secrets_file),
        "containers": containers,
        "services": services,
        "expected": {c.hostname: expected_values(inventory, phase, c) for c in phase.containers},
    }


def run(inventory: Any, phase: Any, *, junit_xml: Path | None = None,
        secrets: Iterable[str] = ()) -> VerifyReport:
    """Verify a phase on the live containers: its suite through SSH, one CheckResult per check.

    `secrets` are the values to mask in details and in the JUnit XML (Secrets.values()).
    Example: `report = verify.run(inv, load_phase("phase0", inv.phases_dir)); sys.exit(report.exit_code)`.
    """
    from psa_provision.site import known_hosts

    files = suite_files(phase.name)
    if not any(f.name == f"test_{phase.name}.py" for f in files):
        known = ", ".join(sorted(f.stem.removeprefix("test_") for f in SUITES_DIR.glob("test_phase*.py")))
        raise ProvisionError(f"no verify suite for {phase.name} (suites exist for {known})",
                             hint=f"add {SUITES_DIR}/test_{phase.name}.py")
    targets = targets_of(phase, inventory.ssh.user)
    with tempfile.TemporaryDirectory(prefix="psa-ssh-") as control:
        control_dir = Path(control)
        pinned = known_hosts(inventory)
        if pinned is not None:
            pinned.parent.mkdir(parents=True, exist_ok=True)
            pinned.touch(mode=0o600, exist_ok=True)
        ssh = SshSettings(identity_file=Path(inventory.ssh.key_file),
                          known_hosts=pinned or control_dir / "known_hosts",
                          jump=parse_jump(inventory.ssh.jump_host, inventory.ssh.user))
        config = ssh_config_text(targets, ssh, control_dir)
        return run_suite(files, host_specs(targets), context=suite_context(inventory, phase),
                         secrets=secrets, ssh_config_text_=config, junit_xml=junit_xml, phase=phase.name)


def run_phase(inventory_path: Path, phase: str, *, junit_xml: Path | None = None) -> VerifyReport:
    """`verify PHASE`: the site loaded from the inventory file, then run() with its secrets masked."""
    from psa_provision.site import load_site

    site = load_site(inventory_path, phase)
    return run(site.inventory, site.phase, junit_xml=junit_xml, secrets=site.secret_values)
