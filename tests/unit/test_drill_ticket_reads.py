"""What the drill reads back of the app's tables (services/app/tickets.py): the SQL, run against a real
PostgreSQL on a local socket when initdb is installed, on the tables as the bundled app declares them
(read from its TypeScript), and what psql's answer says."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from psa_provision.packaged import APP_BUNDLE
from psa_provision.services.app import tickets
from psa_provision.services.app.tickets import TicketEvent

RUN = "ab12cd34"


def app_schema() -> list[str]:
    """The app's own statements for the two tables the drill reads (tickets, billing_ticket_events)."""
    ticket_src = (APP_BUNDLE / "services" / "tickets" / "src" / "index.ts").read_text(encoding="utf-8")
    billing_src = (APP_BUNDLE / "services" / "billing" / "src" / "index.ts").read_text(encoding="utf-8")
    found = [re.search(r"`(CREATE TABLE IF NOT EXISTS tickets \(.*?\))`", ticket_src, re.S),
             re.search(r"'(ALTER TABLE tickets ADD COLUMN IF NOT EXISTS published_at[^']*)'", ticket_src),
             re.search(r"`(CREATE TABLE IF NOT EXISTS billing_ticket_events \(.*?\))`", billing_src, re.S)]
    assert all(found), "the app's schema for tickets / billing_ticket_events moved: update this test"
    return [m.group(1) for m in found if m]


def server_programs() -> tuple[str, str, str] | None:
    """initdb, pg_ctl and psql: each on PATH, or in Debian's /usr/lib/postgresql/<n>/bin."""
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    found = []
    for program in ("initdb", "pg_ctl", "psql"):
        in_debian = (str(d / program) for d in debian if (d / program).is_file())
        path = shutil.which(program) or next(in_debian, None)
        if path is None:
            return None
        found.append(path)
    return found[0], found[1], found[2]


@pytest.fixture
def psql() -> Iterator[Callable[[str], str]]:
    """A throw-away PostgreSQL on a Unix socket (no TCP); yields `run(sql) -> psql's stdout`.
    scripts/setup does not install PostgreSQL's server: where it is absent the test is skipped."""
    programs = server_programs()
    if programs is None:
        pytest.skip("no PostgreSQL server programs (initdb, pg_ctl) on this machine; scripts/setup "
                    "does not install them")
    initdb, pg_ctl, psql_bin = programs
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: the server runs as the postgres user
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no postgres user to run a server as")
        as_user = ["runuser", "-u", "postgres", "--"]
    base = Path(tempfile.mkdtemp(prefix="psa-pg-"))  # under /tmp: short socket path, reachable by postgres
    if as_user:
        shutil.chown(base, "postgres")
    data = base / "data"
    try:
        subprocess.run([*as_user, initdb, "-D", str(data), "-A", "trust", "-U", "postgres"],
                       check=True, capture_output=True)
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-l", str(base / "log"), "-w", "-o",
                        f"-k {base} -c listen_addresses=''", "start"], check=True, capture_output=True)

        def run(sql: str) -> str:
            done = subprocess.run([*as_user, psql_bin, "-XAtq", "-v", "ON_ERROR_STOP=1", "-F", "\t", "-h",
                                   str(base), "-U", "postgres", "-d", "postgres", "-f", "-"],
                                  input=sql, text=True, capture_output=True, check=False)
            assert done.returncode == 0, done.stderr
            return done.stdout

        yield run
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], check=False,
                       capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def test_the_run_is_the_drills_own_token_nothing_else_reaches_the_sql() -> None:
    assert "LIKE 'drill ab12cd34 %'" in tickets.events_sql(RUN)
    for bad in ("x'; DROP TABLE tickets; --", "AB12", "a b", ""):
        with pytest.raises(ValueError):
            tickets.events_sql(bad)
        with pytest.raises(ValueError):
            tickets.held_sql(bad)


def test_the_script_reads_on_the_leader_read_only_with_the_sql_on_stdin() -> None:
    done = subprocess.run(["bash", "-n"], input=tickets.SCRIPT, text=True, capture_output=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "default_transaction_read_only=on" in tickets.SCRIPT and "-f -" in tickets.SCRIPT
    assert "-d psa_platform" in tickets.SCRIPT


def test_psqls_rows_are_tickets_with_their_confirm_and_billing_record() -> None:
    out = ("3\t1764680001.250000\t1764680001.500000\tt\tdrill ab12cd34 1\n"
           "4\t1764680002.000000\t\tf\tdrill ab12cd34 2\n"
           "5\t1764680003.000000\t1764680009.000000\tf\tdrill ab12cd34 2\n"
           "WARNING:  something psql said\n")
    assert tickets.parse_events(out) == [
        TicketEvent(3, "drill ab12cd34 1", 1764680001.25, 1764680001.5, True),
        TicketEvent(4, "drill ab12cd34 2", 1764680002.0, None, False),
        TicketEvent(5, "drill ab12cd34 2", 1764680003.0, 1764680009.0, False)]
    assert tickets.parse_held("drill ab12cd34 1\t1\ndrill ab12cd34 2\t2\n") == Counter(
        {"drill ab12cd34 1": 1, "drill ab12cd34 2": 2})


def test_the_sql_on_the_apps_own_tables(psql: Callable[[str], str]) -> None:
    psql(";\n".join(app_schema()) + ";\n")
    # 1: confirmed and billed; 2: not confirmed (NULL published_at); 3: confirmed, billing has nothing;
    # 4: confirmed, billing holds another event of it only (not ticket.created); 5: another run's.
    psql("""
INSERT INTO tickets (id, title, body, created_at, published_at) VALUES
  (1, 'drill ab12cd34 1', '', to_timestamp(1000.25), to_timestamp(1000.5)),
  (2, 'drill ab12cd34 2', '', to_timestamp(1001), NULL),
  (3, 'drill ab12cd34 3', '', to_timestamp(1002), to_timestamp(1009)),
  (4, 'drill ab12cd34 3', '', to_timestamp(1003), to_timestamp(1003.75)),
  (5, 'drill ffff0000 1', '', to_timestamp(1004), to_timestamp(1004.5));
INSERT INTO billing_ticket_events (message_id, routing_key, ticket_id) VALUES
  ('ticket.created:1', 'ticket.created', 1),
  ('ticket.updated:4', 'ticket.updated', 4),
  ('ticket.created:5', 'ticket.created', 5);
""")
    assert tickets.parse_events(psql(tickets.events_sql(RUN))) == [
        TicketEvent(1, "drill ab12cd34 1", 1000.25, 1000.5, True),
        TicketEvent(2, "drill ab12cd34 2", 1001.0, None, False),
        TicketEvent(3, "drill ab12cd34 3", 1002.0, 1009.0, False),
        TicketEvent(4, "drill ab12cd34 3", 1003.0, 1003.75, False)]
    assert tickets.parse_held(psql(tickets.held_sql(RUN))) == Counter(
        {"drill ab12cd34 1": 1, "drill ab12cd34 2": 1, "drill ab12cd34 3": 2})
