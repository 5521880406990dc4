"""health: probe script (run for real with bash here), judging recorded answers, usage, line format."""

from __future__ import annotations

import http.server
import re
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from psa_provision.commands import health
from psa_provision.commands.health import HealthLine, HealthReport
from psa_provision.phases import ContainerSpec, Phase, ServiceSpec
from psa_provision.services.app import health as app_health

# as the probe passes it on: one line, cut at 300 characters (so not always whole JSON)
ES_GREEN = '{"cluster_name": "psa-platform", "status": "green", "timed_out": false, "number_'

ALL_GOOD = "\n".join([
    "postgresql\t0\taccepting connections",
    "redis\t0\tPONG",
    "rabbitmq\t0\tPing succeeded",
    f"elasticsearch\t0\t{ES_GREEN}",
    "pm2\t0\tapi-gateway=2/2,tickets=4/4",
    "http:api-gateway\t200\t",
    "http:tickets\t200\t",
])
PROBED = ["postgresql", "redis", "rabbitmq", "elasticsearch"]
COMPONENTS = ["base", "postgresql", "redis", "rabbitmq", "elasticsearch", "nodejs", "app", "scripts"]
SERVICES = {"api-gateway": (3000, 2), "tickets": (3030, 4)}


class LocalBash:
    """Runs the probe script with this machine's bash (a real run, not a stand-in for SSH's result)."""

    def __init__(self) -> None:
        self.stdin: str | bytes | None = None

    def run(self, script: str, *, stdin: str | bytes | None = None, user: str = "root", check: bool = True,
            timeout: float = 60, cwd: str | None = None, idempotent: bool = True) -> Any:
        self.stdin = stdin
        data = stdin.decode() if isinstance(stdin, bytes) else stdin
        return subprocess.run(["bash", "-c", script], input=data, capture_output=True, text=True,
                              timeout=timeout, check=False)


def _by_component(lines: list[HealthLine]) -> dict[str, HealthLine]:
    return {line.component: line for line in lines}


def test_all_components_ok() -> None:
    lines = health.judge("aio", COMPONENTS, SERVICES, health.parse_probes(ALL_GOOD))
    assert [line.component for line in lines] == ["postgresql", "redis", "rabbitmq", "elasticsearch",
                                                  "api-gateway", "tickets"]
    assert all(line.ok for line in lines), lines
    assert _by_component(lines)["tickets"].why == "4/4 online, /health 200"


def test_failures_say_why() -> None:
    recorded = (ALL_GOOD.replace("redis\t0\tPONG", "redis\t0\tNOAUTH Authentication required.")
                .replace('"status": "green"', '"status": "red"')
                .replace("tickets=4/4", "tickets=3/4")
                .replace("http:tickets\t200\t", 'http:tickets\t503\t{"status":"error","service":"tickets",'
                         '"checks":{"postgres":"ok","redis":"error: redis connection is reconnecting"}}')
                .replace("rabbitmq\t0\tPing succeeded", "rabbitmq\t69\tError: unable to connect"))
    lines = _by_component(health.judge("aio", COMPONENTS, SERVICES, health.parse_probes(recorded)))
    assert not lines["redis"].ok and "NOAUTH" in lines["redis"].why
    assert not lines["elasticsearch"].ok and lines["elasticsearch"].why == "cluster status red"
    assert not lines["rabbitmq"].ok and lines["rabbitmq"].why.startswith("exit 69: Error")
    assert not lines["tickets"].ok
    assert lines["tickets"].why == ("3/4 instances online (4 in pm2); GET :3030/health answered 503 "
                                    "(redis: error: redis connection is reconnecting)")
    assert lines["api-gateway"].ok and lines["postgresql"].ok


def test_missing_probe_answer_is_a_failure() -> None:
    lines = _by_component(health.judge("aio", ["postgresql", "app"], {"crm": (3020, 2)}, {}))
    assert not lines["postgresql"].ok and lines["postgresql"].why == "no answer from the probe"
    assert not lines["crm"].ok
    assert lines["crm"].why == "no answer from pm2; nothing answers :3020/health"


def test_probe_script_runs_and_reports_absent_tools_as_failed(closed_port: int) -> None:
    # On this machine there is no psql/redis-cli/pm2 for user psa: every probe must come back FAILED.
    port = closed_port
    script = health.probe_script(["postgresql", "redis", "app"], {"crm": (port, 2)})
    result = LocalBash().run(script, stdin="pw\n")
    probes = health.parse_probes(result.stdout)
    assert set(probes) == {"postgresql", "redis", "pm2", "http:crm"}
    lines = _by_component(health.judge("here", ["postgresql", "redis", "app"], {"crm": (port, 2)}, probes))
    assert not any(line.ok for line in lines.values())
    assert lines["crm"].why.endswith(f"nothing answers :{port}/health")


def test_probe_script_keeps_the_password_off_argv() -> None:
    script = health.probe_script(COMPONENTS, {"crm": (3020, 2)})
    assert "REDIS_PASSWORD" in script and "read -r REDIS_PASSWORD" in script


def _phase() -> Phase:
    spec = ContainerSpec(vmid=200, hostname="aio", role="all-in-one", node="pve1", cores=4, memory_mb=8192,
                         rootfs_gb=20, bridge="vmbr20", ip_cidr="10.0.20.100/24", gateway="10.0.20.1",
                         components=COMPONENTS, services=["crm"])
    return Phase(name="phase0", containers=[spec], services={"crm": ServiceSpec(port=3020, container=200)})


STATUS = {"status": "running", "cpu": 0.031, "cpus": 4, "mem": 1288490189, "maxmem": 8589934592,
          "disk": 2684354560, "maxdisk": 21474836480}


def test_usage_line() -> None:
    usage = health.usage_from(STATUS)
    assert usage.describe() == "CPU 3.1% of 4 cores, RAM 1.2/8.0 GiB, disk 2.5/20.0 GiB (12%)"


def test_stopped_container_fails_every_component_without_ssh() -> None:
    phase = _phase()
    runner = LocalBash()
    usage = health.usage_from({**STATUS, "status": "stopped"})
    result = health.check_container(phase.containers[0], phase, usage, runner, "pw")
    assert runner.stdin is None  # no probe was run
    assert [(line.component, line.ok, line.why) for line in result.lines] == [
        (c, False, "container is stopped") for c in [*PROBED, "crm"]]


def test_running_container_is_probed_with_password_on_stdin() -> None:
    phase = _phase()
    runner = LocalBash()
    result = health.check_container(phase.containers[0], phase, health.usage_from(STATUS), runner, "pw-xyz")
    assert runner.stdin == "pw-xyz\n"
    assert {line.component for line in result.lines} == {*PROBED, "crm"}


def test_report_format_and_exit_code() -> None:
    ok = health.ContainerHealth("aio", 200, health.usage_from(STATUS),
                                [HealthLine("aio", "postgresql", True, "accepting connections"),
                                 HealthLine("aio", "crm", False, "0/2 instances online")])
    report = HealthReport("phase0", [ok])
    lines = health.format_report(report)
    assert lines[0] == "aio (200) running: CPU 3.1% of 4 cores, RAM 1.2/8.0 GiB, disk 2.5/20.0 GiB (12%)"
    assert lines[1] == "  postgresql  OK      accepting connections"
    assert lines[2] == "  crm         FAILED  0/2 instances online"
    assert lines[-1] == "1 failed"
    assert report.exit_code == 1
    ok.lines.pop()
    assert report.exit_code == 0 and health.format_report(report)[-1] == "all components OK"
    assert HealthReport("phase0").exit_code == 1  # nothing checked is not healthy


def test_table_rows_put_resources_first() -> None:
    c = health.ContainerHealth("aio", 200, health.usage_from(STATUS),
                               [HealthLine("aio", "redis", False, "PING answered 'NOAUTH'")])
    rows = HealthReport("phase0", [c]).rows()
    assert HealthReport.columns == ("container", "component", "result", "why")
    assert rows[0][:3] == ["aio (200)", "resources", "running"]
    assert rows[1] == ["aio (200)", "redis", "FAILED", "PING answered 'NOAUTH'"]



def test_probe_script_keeps_the_redis_password_out_of_process_arguments() -> None:
    """`env VAR=secret cmd` would show the secret in `ps`; the probe exports it (a builtin) instead."""
    from psa_provision.commands.health import probe_script

    script = probe_script(["redis"], {})
    assert "REDISCLI_AUTH" in script
    assert not re.search(r"\benv\s+[^\n]*REDISCLI_AUTH=", script), script
    assert "-a " not in script


SICK = (b'{"status":"error","service":"billing",'
        b'"checks":{"postgres":"ok","rabbitmq":"error: connect ECONNREFUSED"}}')
WELL = b'{"status":"ok","service":"billing","checks":{"postgres":"ok","rabbitmq":"ok"}}'


@contextmanager
def _instances(healthy: list[bool]) -> Iterator[tuple[int, list[int]]]:
    """A /health server that, like PM2's cluster mode, hands each new connection to the next instance
    in turn (healthy[i]: what instance i answers) and keeps a kept-alive connection on its instance.
    Yields (port, the instance of every request served)."""
    served: list[int] = []
    turn = iter(range(10**6))

    class Instance(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive unless the client says Connection: close

        def setup(self) -> None:
            super().setup()
            self.instance = next(turn) % len(healthy)

        def do_GET(self) -> None:
            served.append(self.instance)
            body = WELL if healthy[self.instance] else SICK
            self.send_response(200 if healthy[self.instance] else 503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Instance)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield httpd.server_address[1], served
    finally:
        httpd.shutdown()
        httpd.server_close()


def _every_instance(port: int, instances: int) -> tuple[str, str]:
    script = f"{app_health.EVERY_INSTANCE}\nhealth_of_every_instance 127.0.0.1 {port} " \
             f"{app_health.requests_for(instances)} body"
    code, _, body = LocalBash().run(script).stdout.rstrip("\n").partition("\t")
    return code, body


def test_the_probe_reaches_every_instance_and_reports_the_one_that_is_not_healthy() -> None:
    # the second of two instances still waits to reconnect to its broker: a single GET (or a kept-alive
    # connection) would have seen only the first one's 200
    with _instances([True, False]) as (port, served):
        code, body = _every_instance(port, 2)
    assert code == "503", (code, body)
    assert "rabbitmq" in body and "ECONNREFUSED" in body
    assert set(served) == {0, 1} and len(served) == app_health.requests_for(2)


def test_the_probe_answers_200_when_every_instance_is_healthy() -> None:
    with _instances([True, True, True, True]) as (port, served):
        code, body = _every_instance(port, 4)
    assert (code, body) == ("200", WELL.decode())
    assert sorted(set(served)) == [0, 1, 2, 3]


def test_the_probe_answers_000_when_nothing_listens(closed_port: int) -> None:
    assert _every_instance(closed_port, 2) == ("000", "")


def test_health_names_the_failing_check_of_the_sick_instance() -> None:
    with _instances([True, False]) as (port, _):
        script = health.probe_script(["app"], {"billing": (port, 2)})
        probes = health.parse_probes(LocalBash().run(script).stdout)
    (line,) = health.judge("here", ["app"], {"billing": (port, 2)}, probes)
    assert not line.ok
    assert f"GET :{port}/health answered 503 (rabbitmq: error: connect ECONNREFUSED)" in line.why, line.why


def test_the_wait_for_health_sees_every_instance() -> None:
    spec = ContainerSpec(vmid=200, hostname="aio", role="all-in-one", node="pve1", cores=4, memory_mb=8192,
                         rootfs_gb=20, bridge="vmbr20", ip_cidr="10.0.20.100/24", gateway="10.0.20.1",
                         components=COMPONENTS, services=["billing", "crm"])
    with _instances([True, True]) as (good, _), _instances([False, True]) as (bad, _):
        phase = Phase(name="phase0", containers=[spec], services={
            "billing": ServiceSpec(port=bad, container=200, instances=2),
            "crm": ServiceSpec(port=good, container=200, instances=2)})
        # as the facts script runs it (facts_ahead): under `set -u`, after the facts
        out = LocalBash().run("set -u\n" + app_health.health_script(phase, spec)).stdout
    assert sorted(out.splitlines()) == sorted([f"{bad} 503", f"{good} 200"])


def test_the_wait_for_health_says_000_for_a_service_nothing_answers(closed_port: int) -> None:
    spec = ContainerSpec(vmid=200, hostname="aio", role="all-in-one", node="pve1", cores=4, memory_mb=8192,
                         rootfs_gb=20, bridge="vmbr20", ip_cidr="10.0.20.100/24", gateway="10.0.20.1",
                         components=COMPONENTS, services=["crm"])
    port = closed_port
    phase = Phase(name="phase0", containers=[spec], services={"crm": ServiceSpec(port=port, container=200)})
    assert LocalBash().run("set -u\n" + app_health.health_script(phase, spec)).stdout == f"{port} 000\n"
