"""Secrets typed to the wire (issue 12): no repr, str, JSON plan or error message carries a secret.

Every change of a full phase-0 plan (container 200 created, then its guest planned from the recorded
facts of a fresh template and of an installed guest whose secrets differ) is built with freshly
generated secrets. Each change, each of its fields, its asdict() dump, the JSON plan, the printed plan
and the journal are searched for every secret value. Every step is then applied through a real
ssh.Connection whose channel is a stand-in that fails the step and echoes its stdin back (as psql quotes
the statement it refused): the error apply reports must not carry the secret either, while the bytes
that went onto the channel or into the file did.
"""

from __future__ import annotations

import dataclasses
import io
import json
import pickle
from pathlib import Path

import pytest
from ha_phase import ha_phase

from psa_provision import facts, inventory, phases, planner
from psa_provision.apply import apply
from psa_provision.journal import Journal
from psa_provision.output import Output, plan_json
from psa_provision.packaged import APP_BUNDLE, PHASES_DIR, SANDBOX_INVENTORY
from psa_provision.plan import Change, Command, Plan, PutFile, Secret, Sensitive
from psa_provision.secrets import NOT_SECRET, Secrets, generate
from psa_provision.services.container import component as container
from psa_provision.services.context import Bundle, HostContext
from psa_provision.ssh import Connection, Result

CASES = Path(__file__).parent / "cases" / "facts"
SECRETS = generate()
# the secrets phase 0's plan carries (the Erlang cookie is a cluster's: phase 3)
VALUES = [v for k, v in SECRETS.items() if k not in NOT_SECRET and k != "rabbitmq.erlang_cookie"]
CA = ("psa-extra-0-guest-ca.crt", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")


def leaked(text: str) -> list[str]:
    """The secrets found in text, shortened to a prefix (the failure message must not leak them)."""
    return [v[:3] + "..." for v in VALUES if v in text]


def full_plan() -> Plan:
    inv = inventory.load_inventory(SANDBOX_INVENTORY)
    phase = phases.load_phase("phase0", PHASES_DIR)
    spec = phase.container(200)
    ctx = HostContext(inv, phase, spec, Secrets(SECRETS), (CA,), Bundle(APP_BUNDLE, "b" * 64))
    plan = Plan(container.plan(spec, None, node=spec.node, template_volid=inv.template_volid,
                               ssh_public_key="ssh-ed25519 AAAA test", nameserver="10.0.20.1"))
    for case in ("fresh_debian12_template.json", "installed_phase0.json"):
        plan.add(planner.plan_guest(ctx, facts.parse_guest_facts((CASES / case).read_text())).changes)
    ha = ha_phase()  # a Patroni member: its users' and REST API's passwords
    member = HostContext(inv, ha, ha.container(100), Secrets(SECRETS), (CA,))
    plan.add(planner.plan_guest(member, facts.fresh()).changes)
    return plan


@pytest.fixture(scope="module")
def plan() -> Plan:
    return full_plan()


def sends(change: Change) -> str:
    """What a change sends to the guest besides its script: a file's content or a command's stdin."""
    if isinstance(change, PutFile):
        return change.content.reveal()
    return change.stdin.reveal() if isinstance(change, Command) and change.stdin else ""


def carriers(plan: Plan) -> list[Change]:
    """The changes that send a secret to the guest."""
    return [c for c in plan.changes if leaked(sends(c))]


def test_the_plan_really_sends_every_secret(plan: Plan) -> None:
    """Without this the searches below could pass on a plan that holds no secret at all."""
    sent = "".join(sends(c) for c in carriers(plan))
    assert sorted(leaked(sent)) == sorted(v[:3] + "..." for v in VALUES)
    kinds = {type(c).__name__ for c in carriers(plan)}
    assert kinds == {"PutFile", "Command"}, kinds


def test_no_secret_in_repr_str_fields_or_asdict(plan: Plan) -> None:
    for change in plan.changes:
        shown = [repr(change), str(change), f"{change}", json.dumps(dataclasses.asdict(change), default=str)]
        for f in dataclasses.fields(change):
            value = getattr(change, f.name)
            shown += [repr(value), str(value), f"{value}", f"{value!r:>40}"]
        found = leaked("\n".join(shown))
        assert not found, f"{change.kind} {change.summary}: {found}"


def test_no_secret_in_the_json_or_printed_plan(plan: Plan) -> None:
    found = leaked(json.dumps(plan_json(plan, phase="phase0"), default=str))
    assert not found, found
    out, err = io.StringIO(), io.StringIO()
    shown = Output(stdout=out, stderr=err, verbose=True)
    shown.plan(plan, "phase phase0")
    shown.json(plan_json(plan))
    found = leaked(out.getvalue() + err.getvalue())
    assert "Plan: " in out.getvalue() and not found, found


class EchoingChannel:
    """Stands in for the SSH channel: every command fails and echoes its stdin on stderr; sftp writes
    are kept. What reaches it is what the real channel would have carried."""

    def __init__(self) -> None:
        self.stdin: list[bytes] = []
        self.files: list[bytes] = []

    def exec(self, command: str, data: bytes, timeout: float) -> Result:
        self.stdin.append(data)
        return Result("", "ERROR:  syntax error\nLINE 1: " + data.decode(errors="replace"), 1)

    def sftp_write(self, path: str, data: bytes) -> None:
        self.files.append(data)


def test_failed_steps_report_no_secret(plan: Plan, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    channel = EchoingChannel()
    conn = Connection("10.0.20.100", "root", tmp_path / "no-key")
    monkeypatch.setattr(conn, "_exec", channel.exec)
    monkeypatch.setattr(conn, "_sftp_write", channel.sftp_write)
    journal = Journal(tmp_path / "phase0.journal.jsonl")
    steps = carriers(plan)
    assert steps
    for change in steps:
        summary = apply(Plan([change]), {change.host: conn}, None, journal)
        error = summary.error
        assert error is not None and summary.failed == 1
        text = "\n".join([error.message, str(error), repr(error), str(error.__cause__)])
        found = leaked(text)
        assert "exited 1" in text and not found, f"{change.summary}: {found}"
    found = leaked(journal.path.read_text())
    assert not found, found
    sent = b"".join(channel.stdin + channel.files).decode()
    assert sorted(leaked(sent)) == sorted(v[:3] + "..." for v in VALUES)  # unwrapped at the wire only


def test_sensitive_shows_only_the_mask() -> None:
    secret = Secret("hunter2-abcdef")
    text = Sensitive.join("ALTER ROLE psa_app PASSWORD '", secret, "';\n")
    assert text.reveal() == "ALTER ROLE psa_app PASSWORD 'hunter2-abcdef';\n"
    for shown in (repr(text), str(text), f"{text}", f"{text:>30}", json.dumps({"t": text}, default=str),
                  repr(secret), str(secret), f"{secret}", json.dumps([secret], default=str)):
        assert "hunter2" not in shown and "***" in shown, shown
    assert text.mask("LINE 1: ALTER ROLE psa_app PASSWORD 'hunter2-abcdef'") == \
        "LINE 1: ALTER ROLE psa_app PASSWORD '***'"
    with pytest.raises(TypeError, match="not pickled"):
        pickle.dumps(text)
    with pytest.raises(TypeError, match="not pickled"):
        pickle.dumps(secret)
    with pytest.raises(AttributeError):
        text._text = "changed"  # type: ignore[misc]
    assert text == Sensitive(text.reveal()) and text != text.reveal() and not Sensitive()
