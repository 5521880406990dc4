"""The data movers' guest side on the session's phase 0 (cheap: no second container).

A stream between two channels of the guest carries 64 MiB intact and reports a failing end; every
mover's probes run against the real stores and a store compared with itself passes, naming what the
app created (tickets table and sequence, Redis keys, the billing queue, the tickets index). Moving
between two containers is exercised by tests/e2e/test_migrate.py; figures from a 202 -> 203 run are
in the movers' commit messages.
"""

from __future__ import annotations

import pytest

from psa_provision.errors import GuestError
from psa_provision.secrets import Secrets, load_secrets
from psa_provision.services.registry import MOVERS
from psa_provision.ssh import Connection

from .conftest import Site
from .test_phase0 import http

pytestmark = [pytest.mark.sandbox, pytest.mark.phase0]


@pytest.fixture(scope="module")
def secrets(phase0: Site) -> Secrets:
    return load_secrets(phase0.inventory.secrets_file)


@pytest.fixture(scope="module")
def app_data(phase0: Site) -> int:
    """A ticket created through the gateway (rows, a cached key, an event, a document); its id."""
    base = f"http://{phase0.container.ip}:3000"
    status, body = http("POST", f"{base}/api/auth/login", {"email": phase0.secret("app.admin_email"),
                                                            "password": phase0.secret("app.admin_password")})
    assert status == 200, body
    status, ticket = http("POST", f"{base}/api/tickets", {"title": "mover probe", "body": "x"}, body["token"])
    ok = {"rabbitmq": "ok", "redis": "ok", "elasticsearch": "ok"}
    assert status == 201 and ticket["propagation"] == ok, ticket
    return int(ticket["id"])


def test_stream_between_channels_is_intact(guest: Connection) -> None:
    size = 64 << 20
    streamed = guest.stream_to(f"head -c {size} /dev/urandom | tee >(sha256sum >&2)", guest, "sha256sum")
    assert streamed.bytes == size
    assert streamed.source.stderr.split()[0] == streamed.target.stdout.split()[0]


def test_stream_reports_both_ends_when_the_target_fails(guest: Connection) -> None:
    with pytest.raises(GuestError) as err:
        guest.stream_to("yes | head -c 50000000", guest, "head -c 10 >/dev/null; echo refused >&2; exit 4")
    text = str(err.value)
    assert "target" in text and "exited 4" in text and "refused" in text and "source" in text


def test_each_store_compared_with_itself_passes(guest: Connection, secrets: Secrets, app_data: int) -> None:
    """The app keeps running here (a session key may expire, billing may consume an event between the
    two reads), so a store gets up to three reads before its difference counts."""
    whats: set[str] = set()
    for name, mover in MOVERS.items():
        for _ in range(3):
            checks = mover.verify(guest, guest, secrets)
            if checks and all(c.passed for c in checks):
                break
        assert checks and all(c.passed for c in checks), (name, [c for c in checks if not c.passed])
        whats |= {c.what for c in checks}
    assert {"postgresql table tickets", "postgresql sequence public.tickets_id_seq", "redis db 0",
            "rabbitmq queues", "rabbitmq queue / billing.ticket-events",
            "elasticsearch index tickets"} <= whats, sorted(whats)


def test_postgresql_probe_sees_the_ticket(guest: Connection, secrets: Secrets, app_data: int) -> None:
    checks = {c.what: c for c in MOVERS["postgresql"].verify(guest, guest, secrets)}
    rows = int(checks["postgresql table tickets"].source.split()[0])
    assert rows >= 1 and int(checks["postgresql sequence public.tickets_id_seq"].source) >= app_data
