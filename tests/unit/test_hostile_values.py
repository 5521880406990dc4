"""Nothing from the inventory or the secrets file reaches a shell unquoted (issue 6, "Bad input").

Plans a fresh all-in-one guest with hostile values: every secret holds `'"$;\\`, spaces, backticks and
`$(...)`; an apt key URL holds quotes, `$` and `;`; an extra CA file's name has spaces and quotes.
Then: secrets appear in no script (stdin or files only); every script is valid bash; run for real with
every external command replaced by a logger (bash's command_not_found_handle), the hostile URL arrives
as one argument and no injected command runs; the SQL literal and the redis.conf word carry the
password unchanged (the latter checked by a real redis-server when one is installed).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from psa_provision import inventory, phases, planner
from psa_provision.changes import Command, Plan, PutFile
from psa_provision.facts import GuestFacts
from psa_provision.inventory import AptRepo
from psa_provision.packaged import PHASES_DIR, SANDBOX_INVENTORY
from psa_provision.secrets import KEYS, NOT_SECRET, Secrets, load_secrets, store
from psa_provision.services.common import apt_repo
from psa_provision.services.context import HostContext, build_context
from psa_provision.services.postgresql import component as postgresql

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
CA_NAME = "my \"odd\" CA's file; $(x).crt"


def hostile(marker: Path, tag: str) -> str:
    """A value that breaks any unquoted shell, SQL or config use; running it as code writes `marker`."""
    return f"{tag}'\"$;\\ x`echo 1 > {marker}`$(echo 2 > {marker});echo 3 > {marker}"


def hostile_url(marker: Path) -> str:
    return f"http://10.0.20.1:8080/k'e\"y$;echo>{marker};\\`echo>{marker}`"


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "INJECTED"


@pytest.fixture
def secrets(tmp_path: Path, marker: Path) -> dict[str, str]:
    values = {k: hostile(marker, k) for k in KEYS}
    values["app.admin_email"] = "admin@psa-platform.local"
    return values


@pytest.fixture
def ctx(tmp_path: Path, marker: Path, secrets: dict[str, str]) -> HostContext:
    ca = tmp_path / CA_NAME
    ca.write_text(PEM)
    inv = inventory.load_inventory(SANDBOX_INVENTORY)
    nodejs = AptRepo.model_validate({**inv.packages.nodejs.model_dump(), "key_url": hostile_url(marker)})
    packages = inv.packages.model_copy(update={"nodejs": nodejs, "extra_ca_files": [ca]})
    inv = inv.model_copy(update={"packages": packages})
    phase = phases.load_phase("phase0", PHASES_DIR)
    return build_context(inv, phase, phase.container(200), Secrets(secrets))


@pytest.fixture
def plan(ctx: HostContext) -> Plan:
    return planner.plan_guest(ctx, GuestFacts())


def scripts(plan: Plan) -> list[Command]:
    found = [c for c in plan.changes if isinstance(c, Command)]
    assert len(found) >= 5
    return found


def test_hostile_secrets_survive_the_secrets_file(tmp_path: Path, secrets: dict[str, str]) -> None:
    path = tmp_path / "s.yml"
    store(path, secrets)
    assert load_secrets(path).as_dict() == secrets


def test_secrets_reach_no_script_only_stdin_and_files(plan: Plan, secrets: dict[str, str]) -> None:
    values = [v for k, v in secrets.items() if k not in NOT_SECRET]
    for c in plan.changes:
        shown = c.summary + getattr(c, "diff", "") + getattr(c, "script", "")
        assert not any(v in shown for v in values), c.summary
    stdin = "".join(c.stdin.reveal() if c.stdin else "" for c in scripts(plan))
    assert secrets["rabbitmq.app_password"] in stdin and secrets["rabbitmq.admin_password"] in stdin


def test_every_script_is_valid_bash(plan: Plan) -> None:
    for c in scripts(plan):
        done = subprocess.run(["bash", "-n"], input=c.script, text=True, capture_output=True, check=False)
        assert done.returncode == 0, f"{c.summary}: {done.stderr}\n{c.script}"


LOGGER = r"""
command_not_found_handle() { printf '%s\0' "$@" >> "$ARGV_LOG"; printf '\n\0' >> "$ARGV_LOG"; return 0; }
"""


def test_hostile_inventory_values_arrive_as_one_argument(plan: Plan, tmp_path: Path, marker: Path) -> None:
    """Run each script with PATH empty: every external command lands in the logger with its argv."""
    url = hostile_url(marker)
    with_url = [c for c in scripts(plan) if url in c.summary]
    assert with_url, "the plan fetches no apt key from the hostile URL"
    for c in scripts(plan):
        log = tmp_path / "argv.log"
        log.write_bytes(b"")
        empty = tmp_path / "empty-path"
        empty.mkdir(exist_ok=True)
        env = {"PATH": str(empty), "ARGV_LOG": str(log), "HOME": str(tmp_path)}
        subprocess.run(["/bin/bash", "-c", LOGGER + c.script], input=c.stdin.reveal() if c.stdin else "",
                       text=True, env=env, cwd=tmp_path, capture_output=True, check=False, timeout=30)
        assert not marker.exists(), f"{c.summary}: an inventory value ran as a command:\n{c.script}"
        argv = log.read_bytes().split(b"\0")
        if c in with_url:
            assert url.encode() in argv, f"{c.summary}: the URL did not arrive as one argument: {argv}"


def test_password_sql_literal_round_trips(secrets: dict[str, str]) -> None:
    password = secrets["postgresql.app_password"]
    sql = postgresql.role_sql(password)
    m = re.search(r"PASSWORD '((?:[^']|'')*)';\n", sql)
    assert m and m.group(1).replace("''", "'") == password, sql


def test_extra_ca_gets_a_plain_guest_file_name(ctx: HostContext, plan: Plan) -> None:
    ((name, pem),) = ctx.extra_cas
    assert re.fullmatch(r"psa-extra-0-[A-Za-z0-9._-]+\.crt", name) and pem == PEM
    assert any(isinstance(c, PutFile) and c.path.endswith("/" + name) for c in plan.changes)


def _requirepass(plan: Plan) -> str:
    conf = next(c for c in plan.changes if isinstance(c, PutFile) and c.path == "/etc/redis/redis.conf")
    (line,) = [ln for ln in conf.content.reveal().splitlines() if ln.startswith("requirepass ")]
    return line


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_redis_accepts_exactly_the_hostile_password(plan: Plan, tmp_path: Path,
                                                    secrets: dict[str, str]) -> None:
    """A real redis-server (unix socket only, no TCP) reads the rendered requirepass line."""
    sock = tmp_path / "redis.sock"
    conf = tmp_path / "redis.conf"
    conf.write_text(f"port 0\nunixsocket {sock}\nunixsocketperm 700\nsave \"\"\nappendonly no\n"
                    f"dir {tmp_path}\ndaemonize no\n{_requirepass(plan)}\n")
    server = subprocess.Popen(["redis-server", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            assert server.poll() is None, f"redis-server refused the config: {server.stdout.read()!r}"  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "redis-server did not open its socket within 10 s"
            time.sleep(0.05)

        def ping(password: str) -> str:
            env = {**os.environ, "REDISCLI_AUTH": password}
            done = subprocess.run(["redis-cli", "-s", str(sock), "PING"], env=env, capture_output=True,
                                  text=True, check=False, timeout=10)
            return done.stdout.strip()

        assert ping(secrets["redis.password"]) == "PONG"
        assert ping(secrets["redis.password"][:-1]) != "PONG"
    finally:
        server.terminate()
        server.wait(timeout=10)


URL_CHARS = st.characters(min_codepoint=33, max_codepoint=0x2FF, blacklist_categories=("Cc", "Cs", "Zs"))


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tail=st.text(URL_CHARS, min_size=1, max_size=30),
       hosts=st.lists(st.from_regex(r"[A-Za-z0-9.*:/_-]{1,20}", fullmatch=True), max_size=3))
def test_any_accepted_url_or_no_proxy_host_is_one_argument(tmp_path_factory: pytest.TempPathFactory,
                                                           tail: str, hosts: list[str]) -> None:
    """Whatever key URL and no_proxy hosts validation lets through reach curl/export as single words."""
    tmp = tmp_path_factory.mktemp("argv")
    inv = inventory.load_inventory(SANDBOX_INVENTORY)
    url = "http://10.0.20.1:8080/" + tail
    nodejs = AptRepo.model_validate({**inv.packages.nodejs.model_dump(), "key_url": url})
    packages = inventory.Packages.model_validate({**inv.packages.model_dump(), "nodejs": nodejs.model_dump(),
                                                  "no_proxy": hosts})
    inv = inv.model_copy(update={"packages": packages})
    phase = phases.load_phase("phase0", PHASES_DIR)
    ctx = HostContext(inv, phase, phase.container(200), Secrets({}), (), None)
    (fetch,) = [c for c in apt_repo(ctx, GuestFacts(), "nodejs", nodejs, keyring="/k/n.asc", list_file="/l")
                if isinstance(c, Command)]
    log = tmp / "argv.log"
    env = {"PATH": str(tmp / "none"), "ARGV_LOG": str(log), "HOME": str(tmp)}
    probe = 'printf "%s\\0" "$no_proxy" >> "$ARGV_LOG"\n'
    subprocess.run(["/bin/bash", "-c", LOGGER + fetch.script.replace("\ncurl", "\n" + probe + "curl", 1)],
                   env=env, cwd=tmp, capture_output=True, check=False, timeout=30)
    argv = log.read_bytes().split(b"\0")
    assert url.encode() in argv, argv
    assert ",".join(hosts).encode() in argv, argv
