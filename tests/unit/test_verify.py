"""verify: host specs, ssh_config, context file, and result collection over a real pytest run (local://)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from psa_provision.commands import verify
from psa_provision.commands.verify import JumpHost, SshSettings, Target

TARGETS = [Target(hostname="psa-all-in-one", address="10.0.20.100")]


def _ssh(jump: JumpHost | None = None) -> SshSettings:
    return SshSettings(identity_file=Path("/state/id_ed25519"), known_hosts=Path("/state/known_hosts"),
                       jump=jump)


def _blocks(text: str) -> dict[str, list[str]]:
    """ssh_config text -> {host alias: [its option lines, stripped]}."""
    blocks: dict[str, list[str]] = {}
    current = ""
    for line in text.splitlines():
        if line.startswith("Host "):
            current = line.split()[1]
            blocks[current] = []
        elif line.strip():
            blocks[current].append(line.strip())
    return blocks


def test_host_specs_name_each_container_by_hostname() -> None:
    targets = [*TARGETS, Target(hostname="psa-redis", address="10.0.30.11")]
    assert verify.host_specs(targets) == ["ssh://psa-all-in-one", "ssh://psa-redis"]


def test_ssh_config_direct_reaches_address_with_key_and_known_hosts() -> None:
    blocks = _blocks(verify.ssh_config_text(TARGETS, _ssh(), Path("/tmp/cm")))
    assert list(blocks) == ["psa-all-in-one"]
    options = blocks["psa-all-in-one"]
    assert "HostName 10.0.20.100" in options
    assert "User root" in options
    assert "IdentityFile /state/id_ed25519" in options
    assert "UserKnownHostsFile /state/known_hosts" in options
    assert "StrictHostKeyChecking accept-new" in options
    assert "BatchMode yes" in options
    assert not any(o.startswith("ProxyJump") for o in options)


def test_ssh_config_through_jump_host() -> None:
    text = verify.ssh_config_text(TARGETS, _ssh(JumpHost(address="203.0.113.5", user="ops", port=2222)),
                                  Path("/tmp/cm"))
    blocks = _blocks(text)
    assert list(blocks) == [verify.JUMP_ALIAS, "psa-all-in-one"]
    assert {"HostName 203.0.113.5", "User ops", "Port 2222"} <= set(blocks[verify.JUMP_ALIAS])
    assert f"ProxyJump {verify.JUMP_ALIAS}" in blocks["psa-all-in-one"]
    # the jump host's key is checked against the same known_hosts
    assert "UserKnownHostsFile /state/known_hosts" in blocks[verify.JUMP_ALIAS]


def test_context_file_round_trip_is_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "context.json"
    context = {"phase": "phase0", "containers": {"psa-all-in-one": {"vmid": 200, "cores": 4}}}
    verify.write_context(path, context)
    assert path.stat().st_mode & 0o077 == 0
    assert verify.read_context(path) == context


def test_suite_files_of_phase0_are_shipped_with_the_package() -> None:
    names = [f.name for f in verify.suite_files("phase0")]
    assert "test_phase0.py" in names
    assert (verify.SUITES_DIR / "conftest.py").is_file()


SYNTHETIC = '''
import pytest

def test_file_mode(host):
    mode = host.file("{path}").mode
    assert mode == 0o600, f"{path} has mode {{mode:o}}, expected 600"

@pytest.mark.parametrize("word", ["alpha", "beta"])
def test_echo(host, word):
    out = host.check_output("echo %s", word)
    assert out == "alpha", f"echo said {{out}} (secret is {secret})"
'''


def _synthetic_suite(tmp_path: Path, mode: int, secret: str) -> Path:
    target = tmp_path / "dotenv"
    target.write_text("x")
    target.chmod(mode)
    suite = tmp_path / "suite" / "test_synthetic.py"
    suite.parent.mkdir()
    suite.write_text(textwrap.dedent(SYNTHETIC.format(path=target, secret=secret)))
    return suite


def test_failing_check_is_reported_with_host_check_and_what_was_found(tmp_path: Path) -> None:
    secret = "s3cr3t-value-xyz"
    suite = _synthetic_suite(tmp_path, 0o644, secret)
    junit = tmp_path / "junit.xml"
    report = verify.run_suite([suite], ["local://"], context={"phase": "t"}, secrets=[secret],
                              junit_xml=junit, phase="t")
    by_check = {r.check: r for r in report.results}
    assert set(by_check) == {"test_file_mode", "test_echo[alpha]", "test_echo[beta]"}
    failed = by_check["test_file_mode"]
    assert (failed.host, failed.passed) == ("local", False)
    assert "has mode 644, expected 600" in failed.detail
    assert by_check["test_echo[alpha]"].passed
    beta = by_check["test_echo[beta]"]
    assert not beta.passed and "echo said beta" in beta.detail
    assert secret not in beta.detail and "***" in beta.detail
    assert report.exit_code == 1
    xml = junit.read_text()
    assert "test_file_mode" in xml and secret not in xml


def test_all_checks_passing_exit_zero(tmp_path: Path) -> None:
    suite = _synthetic_suite(tmp_path, 0o600, "unused")
    suite.write_text(suite.read_text().replace('["alpha", "beta"]', '["alpha"]'))
    report = verify.run_suite([suite], ["local://"], context={}, phase="t")
    assert [r.passed for r in report.results] == [True, True]
    assert report.exit_code == 0


def test_suite_that_does_not_import_fails_the_run(tmp_path: Path) -> None:
    suite = tmp_path / "test_broken.py"
    suite.write_text("import no_such_module_psa\n\ndef test_x(host):\n    pass\n")
    report = verify.run_suite([suite], ["local://"], context={}, phase="t")
    assert report.exit_code == 1
    assert any("no_such_module_psa" in r.detail for r in report.failed)


def test_no_checks_at_all_is_not_a_pass(tmp_path: Path) -> None:
    suite = tmp_path / "test_empty.py"
    suite.write_text("X = 1\n")
    report = verify.run_suite([suite], ["local://"], context={}, phase="t")
    assert report.exit_code == 1


@pytest.mark.parametrize("secret", ["pw-on-stdin-123"])
def test_context_reaches_the_suite_through_the_environment(tmp_path: Path, secret: str) -> None:
    suite = tmp_path / "test_ctx.py"
    suite.write_text(textwrap.dedent('''
        import json, os

        def test_context(host):
            data = json.load(open(os.environ["PSA_VERIFY_CONTEXT"]))
            assert data["expected"] == {"cores": 2}
    '''))
    report = verify.run_suite([suite], ["local://"], context={"expected": {"cores": 2}}, phase="t")
    assert report.exit_code == 0, report.results
    assert json.dumps(report.results[0].__dict__)


def test_phase0_suite_runs_each_check_only_where_its_component_is(tmp_path: Path) -> None:
    context = {
        "containers": {"local": {"components": ["base", "redis", "app"], "services": ["crm"]}},
        "services": {"crm": {"port": 3020, "instances": 2}, "tickets": {"port": 3030, "instances": 4}},
    }
    report = verify.run_suite(verify.suite_files("phase0"), ["local://"], context=context, phase="phase0",
                              extra=["--collect-only"])
    checks = {check for host, check in report.planned}
    assert {host for host, _ in report.planned} == {"local"}
    assert "test_redis_requires_auth" in checks
    assert "test_redis_flush_commands_unavailable[FLUSHALL]" in checks
    assert "test_pm2_app_online_with_instances[crm]" in checks
    assert "test_pm2_app_online_with_instances[tickets]" not in checks  # placed elsewhere
    assert not any(c.startswith("test_postgresql") for c in checks)  # no postgresql component here
    assert "test_container_config_matches_phase" in checks
    assert "test_gateway_routes_to_service[crm]" not in checks  # the gateway is not on this container


def test_gateway_routing_checks_run_on_the_gateway_container_for_each_upstream(tmp_path: Path) -> None:
    context = {
        "containers": {"local": {"components": ["app"], "services": ["api-gateway"]}},
        "services": {"api-gateway": {"port": 3000, "instances": 2}, "crm": {"port": 3020, "instances": 2}},
    }
    report = verify.run_suite(verify.suite_files("phase0"), ["local://"], context=context, phase="phase0",
                              extra=["--collect-only"])
    checks = {check for _, check in report.planned}
    assert "test_gateway_routes_to_service[crm]" in checks
    assert "test_gateway_routes_to_service[api-gateway]" not in checks
    assert "test_pm2_app_online_with_instances[crm]" not in checks


def test_failure_message_keeps_the_checks_own_words() -> None:
    text = ("AssertionError: /opt/psa-platform/.env is mode 0644 owner psa, want 0600 psa\n"
            "assert (420, 'psa') == (384, 'psa')\n  +  where 420 = <file>.mode")
    assert verify.failure_message(text) == "/opt/psa-platform/.env is mode 0644 owner psa, want 0600 psa"
    assert verify.failure_message("assert 1 == 2\n +  where 1 = f()") == "assert 1 == 2\n +  where 1 = f()"
    assert verify.failure_message("Failed: SSH to aio failed: refused") == "SSH to aio failed: refused"
    refused = "RuntimeError: ssh: connect refused"
    assert verify.failure_message(refused) == refused
