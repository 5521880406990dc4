"""RabbitMQ's facts come from the management API when the admin's credentials answer, and from
rabbitmqctl when they do not; both ways give the same facts. The gather script runs for real in bash,
with curl, rabbitmqctl and systemctl replaced by recorders on PATH that answer as RabbitMQ 3.10 did
on the sandbox's phase-3 cluster (one member stopped)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

import pytest

from psa_provision import facts as facts_mod
from psa_provision.packaged import PHASES_DIR
from psa_provision.phases import load_phase
from psa_provision.secrets import Secrets
from psa_provision.services.rabbitmq.facts import parse_cluster

Env = dict[str, str]
NODES = ["rabbit@psa-rabbitmq-1", "rabbit@psa-rabbitmq-2", "rabbit@psa-rabbitmq-3"]
PASSWORD = 'Pw"with\\quote'  # a test value: its quote and backslash must survive curl's config
USERS = [{"name": "admin", "password_hash": "SECRETHASH", "tags": ["administrator"], "limits": {},
          "hashing_algorithm": "rabbit_password_hashing_sha256"},
         {"name": "psa_app", "password_hash": "SECRETHASH", "tags": [], "limits": {}}]
PERMISSIONS = [{"user": "psa_app", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}]
DEFINITIONS = {"rabbit_version": "3.10.8", "users": USERS, "permissions": PERMISSIONS,
               "vhosts": [{"name": "/"}]}
QUEUES = [{"members": [NODES[0], NODES[2], NODES[1]], "name": "billing.ticket-events", "type": "quorum"},
          {"members": [], "name": "old", "type": "classic"}]
# the management API: GET /api/nodes?columns=... and /api/queues/%2F?columns=...
API_NODES = [{"partitions": [], "name": NODES[0], "type": "disc", "running": True},
             {"partitions": [], "name": NODES[1], "type": "disc", "running": True},
             {"partitions": [], "name": NODES[2], "type": "disc", "running": False}]
# rabbitmqctl -q cluster_status --formatter json of the same cluster
CLI_STATUS = {"alarms": [], "disk_nodes": NODES, "partitions": {}, "ram_nodes": [],
              "running_nodes": [NODES[1], NODES[0]]}

CONFIG_LINE = 'user = "admin:' + PASSWORD.replace("\\", "\\\\").replace('"', '\\"') + '"'  # curl's quoting
FAKES = {
    # curl -sSf --max-time 10 -K - URL: the config on stdin must name the admin and the password
    "curl": f"""#!/bin/bash
echo "curl $*" >> "$CALLS"
config=$(cat)
[ "$config" = {json.dumps(CONFIG_LINE)} ] \\
  || {{ echo "curl: (22) The requested URL returned error: 401" >&2; exit 22; }}
case "${{@: -1}}" in
  */api/definitions) cat "$FIXTURES/definitions.json" ;;
  */api/nodes\\?*) cat "$FIXTURES/nodes.json" ;;
  */api/queues/%2F\\?*) cat "$FIXTURES/queues.json" ;;
  *) exit 22 ;;
esac
""",
    "rabbitmqctl": """#!/bin/bash
echo "rabbitmqctl $*" >> "$CALLS"
case "$2" in
  export_definitions) cat "$FIXTURES/definitions.json" ;;
  cluster_status) cat "$FIXTURES/cluster_status.json" ;;
  list_queues) cat "$FIXTURES/queues.json" ;;
esac
""",
    # is-active: RabbitMQ alone runs; show: a block per unit named after `--`
    "systemctl": """#!/bin/bash
case "$1" in
  is-active) [[ " $* " == *' rabbitmq-server '* ]] ;;
  show) units=0; for a in "$@"; do [ "$a" = -- ] && units=1 && continue
          [ $units = 1 ] && printf 'ActiveState=inactive\\nUnitFileState=disabled\\n\\n'
        done ;;
esac
""",
}


@pytest.fixture()
def guest(tmp_path: Path) -> Env:
    bin_dir, fixtures = tmp_path / "bin", tmp_path / "fixtures"
    bin_dir.mkdir()
    fixtures.mkdir()
    for name, text in FAKES.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    for name, doc in (("definitions", DEFINITIONS), ("nodes", API_NODES), ("queues", QUEUES),
                      ("cluster_status", CLI_STATUS)):
        (fixtures / f"{name}.json").write_text(json.dumps(doc, indent=1))  # rabbitmqctl's JSON spans lines
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FIXTURES": str(fixtures),
            "CALLS": str(tmp_path / "calls")}


def run_script(env: Env, secrets: Secrets) -> str:
    spec = load_phase("phase3", PHASES_DIR).container(211)  # a cluster member
    stdin = facts_mod.gather_input(secrets).reveal()
    return subprocess.run(["bash", "-c", facts_mod.gather_script(spec)], input=stdin, env=env,
                          capture_output=True, text=True, check=True, timeout=60).stdout


def gather(env: Env, secrets: Secrets) -> tuple[facts_mod.GuestFacts, list[str]]:
    out = run_script(env, secrets)
    calls = Path(env["CALLS"])
    return facts_mod.parse_guest_facts(out), calls.read_text().splitlines() if calls.exists() else []


def test_the_api_answers_with_the_admins_credentials_and_no_rabbitmqctl_starts(guest: Env) -> None:
    facts, calls = gather(guest, Secrets({"rabbitmq.admin_password": PASSWORD}))
    assert [c.split()[0] for c in calls] == ["curl"] * 3
    assert facts.rabbitmq is not None and facts.rabbitmq.cluster is not None
    assert facts.rabbitmq.users == {"admin": frozenset({"administrator"}), "psa_app": frozenset()}
    assert facts.rabbitmq.permissions == {("/", "psa_app"): (".*", ".*", ".*")}
    cluster = facts.rabbitmq.cluster
    assert (cluster.nodes, cluster.running) == (tuple(NODES), tuple(NODES[:2]))
    assert cluster.queues["billing.ticket-events"] == ("quorum", tuple(NODES))


@pytest.mark.parametrize("secrets", [Secrets({}), Secrets({"rabbitmq.admin_password": "not-the-brokers"})],
                         ids=["no credentials", "refused credentials"])
def test_rabbitmqctl_answers_when_the_api_does_not_with_the_same_facts(guest: Env, secrets: Secrets) -> None:
    api, _ = gather(guest, Secrets({"rabbitmq.admin_password": PASSWORD}))
    Path(guest["CALLS"]).unlink()
    cli, calls = gather(guest, secrets)
    assert sorted(c.split()[2] for c in calls if c.startswith("rabbitmqctl")) == [
        "cluster_status", "export_definitions", "list_queues"]
    assert cli.rabbitmq == api.rabbitmq


def test_the_password_never_reaches_argv_or_the_facts(guest: dict[str, str]) -> None:
    secrets = Secrets({"rabbitmq.admin_password": PASSWORD})
    out = run_script(guest, secrets)
    calls = Path(guest["CALLS"]).read_text()
    assert "curl" in calls and PASSWORD not in calls and "admin:" not in calls
    assert "SECRETHASH" not in base64_decoded(out)
    assert PASSWORD not in facts_mod.gather_script(load_phase("phase3", PHASES_DIR).container(211))
    assert "***" in repr(facts_mod.gather_input(Secrets({"rabbitmq.admin_password": PASSWORD})))


def base64_decoded(out: str) -> str:
    doc = json.loads(out.strip().splitlines()[-1])
    return "".join(base64.b64decode(v).decode(errors="replace")
                   for k, v in doc.items() if k.startswith("rabbitmq"))


def test_api_and_cli_cluster_views_parse_alike() -> None:
    partitioned = [dict(n, partitions=[NODES[0]]) if n["name"] == NODES[2] else n for n in API_NODES]
    cli = dict(CLI_STATUS, partitions={NODES[2]: [NODES[0]]})
    api_view = parse_cluster(json.dumps(partitioned) + "\n" + json.dumps(QUEUES))
    assert api_view == parse_cluster(json.dumps(cli) + "\n" + json.dumps(QUEUES))
    assert api_view.partitions == {NODES[2]: (NODES[0],)}
    ram = [*API_NODES, {"partitions": [], "name": "rabbit@ram", "type": "ram", "running": True}]
    assert parse_cluster(json.dumps(ram)).nodes == tuple(NODES)  # members are the disc nodes
