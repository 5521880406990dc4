"""`capacity phase0` on the sandbox: the figures it prints are the live platform's (checked in the guest
and against the gateway requests made here), then more than 200 tickets written in a day through the
gateway cross the seed's limit: exit 3, tickets/day named. The tickets are rolled back afterwards
(reset_phase0). Bounded: at most MAX_TICKETS writes, each with loadgen's 5 s timeout."""

from __future__ import annotations

import json
import shlex
import time

import pytest

from psa_provision.capacity import use_from_rrd
from psa_provision.limits import load_limits
from psa_provision.ssh import Connection
from psa_provision.testing.loadgen import request

from .conftest import Site, admin_api

pytestmark = [pytest.mark.sandbox, pytest.mark.phase0]

LIMIT = 200  # seed: "| Tickets/day | < 200 | ...", "Next Review: When reaching ... 200 tickets/day"
MAX_TICKETS = 260
API_CALLS = 10


def capacity(site: Site) -> tuple[int, dict[str, object]]:
    run = site.cli("capacity", "phase0", "--output", "json", timeout=300)
    assert run.code in (0, 3), f"capacity failed (exit {run.code}):\n{run.output[-4000:]}"
    data = json.loads(run.stdout)
    assert isinstance(data, dict)
    return run.code, data


def rows(data: dict[str, object]) -> dict[str, dict[str, object]]:
    listed = data["rows"]
    assert isinstance(listed, list)
    return {str(r["figure"]): r for r in listed}


def sql(guest: Connection, query: str) -> int:
    psql = f"cd / && runuser -u postgres -- psql -XAtq -d psa_platform -c {shlex.quote(query)}"
    return int(guest.run(psql).stdout.strip())


def wait_for_a_closed_cpu_step(site: Site, deadline_s: float = 150.0) -> None:
    """Proxmox's RRD has a container's CPU only once a 60 s step has closed with samples in it: a
    container made moments ago (reset_phase0 may have rebuilt it) has none yet, and capacity rightly
    says unknown. Wait, bounded, until capacity's own window of rrddata (timeframe hour) holds one.
    Any row of the hour would not do: Proxmox keeps a destroyed container's RRD, and a container made
    again with its vmid within the hour shows the old one's rows before a gap."""
    px = admin_api()
    spec = site.container
    window = load_limits().headroom.window_minutes
    deadline = time.monotonic() + deadline_s
    while True:
        rows = px.rrddata(spec.node, spec.vmid, timeframe="hour")
        if use_from_rrd(rows, window)[0] is not None:
            return
        assert time.monotonic() < deadline, f"no CPU row in rrddata of {spec.vmid} after {deadline_s:g} s"
        time.sleep(5)


def login(site: Site) -> tuple[str, str]:
    gateway = f"http://{site.container.ip}:{site.phase.services['api-gateway'].port}"
    creds = {"email": site.secret("app.admin_email"), "password": site.secret("app.admin_password")}
    status, body = request("POST", f"{gateway}/api/auth/login", creds)
    assert status == 200 and isinstance(body, dict), (status, body)
    return gateway, str(body["token"])


def test_capacity_reads_the_live_phase0_then_200_tickets_a_day_cross_the_limit(
        reset_phase0: Site, guest: Connection) -> None:
    site = reset_phase0
    wait_for_a_closed_cpu_step(site)
    gateway, token = login(site)
    for _ in range(API_CALLS):
        assert request("GET", f"{gateway}/api/tickets?size=1", token=token)[0] == 200
    # every worker writes its counts each second, and the last minute counts whole seconds only
    time.sleep(2.5)
    code, before = capacity(site)
    got = rows(before)

    tickets = sql(guest, "SELECT count(*) FROM tickets WHERE created_at > now() - interval '1 day'")
    assert got["tickets/day"]["value"] == tickets
    assert got["tenants"]["value"] == sql(guest, "SELECT count(*) FROM crm_customers")
    active = sql(guest, "SELECT count(*) FROM auth_users WHERE last_login_at > now() - interval '1 hour'")
    assert got["concurrent users"]["value"] == active >= 1  # the admin, logged in above
    rpm = got["API requests/minute"]["value"]
    assert isinstance(rpm, float) and rpm >= API_CALLS + 1, got["API requests/minute"]  # login + the reads
    for what in ("CPU", "memory"):
        row = got[f"{what} in use, {site.container.hostname} ({site.container.vmid})"]
        assert isinstance(row["value"], float) and 0 <= row["value"] <= 100, row
    assert code == (3 if before["crossed"] else 0), before
    assert tickets < LIMIT, f"{tickets} tickets in the last day before the test: the e2e session wrote many"
    assert got["tickets/day"]["status"] == "ok" and before["exit_code"] == code

    wanted = LIMIT - tickets + 1
    assert wanted <= MAX_TICKETS
    for n in range(wanted):
        status, body = request("POST", f"{gateway}/api/tickets",
                               {"title": f"capacity e2e {n}", "body": "past 200 tickets a day"}, token)
        assert status == 201, (n, status, body)

    code, after = capacity(site)
    assert code == 3, after
    crossed = rows(after)["tickets/day"]
    assert crossed["value"] == tickets + wanted and crossed["status"] == "crossed", crossed
    assert after["crossed"] == ["tickets/day"] and after["recommended_phase"] == "phase1", after
    text = site.cli("capacity", "phase0", timeout=300)
    assert text.code == 3, text.output[-3000:]
    assert "limit crossed: tickets/day" in text.stdout and "move to phase1" in text.stdout, text.stdout
