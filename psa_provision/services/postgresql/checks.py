"""PostgreSQL's verify checks (seed: "Install PostgreSQL"): package, unit, loopback, the seed's settings in
effect, database, extensions, psa_app's login."""

from __future__ import annotations

import shlex
from typing import Any

import pytest

from psa_provision.suites.checks import listening_ports, loopback_only, output, pg_bytes

from .expected import MEMORY

PG = "runuser -u postgres -- psql -XAt -v ON_ERROR_STOP=1"
EXTENSIONS = {"uuid-ossp", "pg_trgm", "btree_gin", "pgcrypto"}
MB = 1024**2


def sql(host: Any, query: str, db: str = "postgres") -> str:
    """One psql query as the postgres superuser (local socket), its unaligned output."""
    return output(host, f"{PG} -d {shlex.quote(db)} -c {shlex.quote(query)}", f"psql {query!r}").strip()


@pytest.mark.component("postgresql")
def test_postgresql_15_installed(host: Any) -> None:
    pkg = host.package("postgresql-15")
    assert pkg.is_installed, "package postgresql-15 is not installed"


@pytest.mark.component("postgresql")
def test_postgresql_running_and_enabled(host: Any, expected: dict[str, Any]) -> None:
    if "patroni" in expected:
        pytest.skip("Patroni runs the server (services/patroni/cluster_checks.py)")
    cluster = host.service("postgresql@15-main")
    assert cluster.is_running, "postgresql@15-main is not running"
    assert host.service("postgresql").is_enabled, "postgresql is not enabled at boot"


@pytest.mark.component("postgresql")
def test_postgresql_listens_on_loopback_only(host: Any, expected: dict[str, Any]) -> None:
    sockets = listening_ports(host.socket.get_listening_sockets(), 5432)
    assert "tcp://127.0.0.1:5432" in sockets, f"nothing listens on 127.0.0.1:5432 (found {sockets})"
    also = expected.get("listen", "127.0.0.1")
    assert loopback_only(sockets, also), f"port 5432 is open beyond loopback and {also}: {sockets}"


@pytest.mark.component("postgresql")
def test_postgresql_config_files_in_effect(host: Any) -> None:
    # The last occurrence of each setting in the config files must be applied (no restart pending).
    rows = sql(host, "SELECT name || '|' || coalesce(error, '') FROM (SELECT DISTINCT ON (name) name, "
                     "applied, error FROM pg_file_settings ORDER BY name, seqno DESC) s "
                     "WHERE NOT applied OR error IS NOT NULL")
    assert rows == "", f"settings in the config files not in effect (restart pending?): {rows.splitlines()}"


@pytest.mark.component("postgresql")
def test_postgresql_seed_settings_in_effect(host: Any, expected: dict[str, Any]) -> None:
    # The seed's values (services/postgresql/expected.py); memory settings scale with the container
    # and are compared in bytes to the MB (the seed's values are whole MB at any size it names).
    settings: dict[str, str] = expected.get("postgresql", {})
    wrong = []
    for name, want in sorted(settings.items()):
        found = sql(host, f"SHOW {name}")
        have, need = pg_bytes(found), pg_bytes(str(want))
        if name in MEMORY and isinstance(have, int) and isinstance(need, int):
            same = abs(have - need) < MB
        else:
            same = have == need
        if not same:
            wrong.append(f"{name} = {found} (seed: {want})")
    assert settings, "no seed PostgreSQL settings in the verify context"
    assert not wrong, "; ".join(wrong)


@pytest.mark.component("postgresql")
def test_database_owned_by_psa_app_with_extensions(host: Any) -> None:
    owner = sql(host, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'psa_platform'")
    assert owner == "psa_app", f"database psa_platform owner is {owner or '(no such database)'!r}"
    extensions = set(sql(host, "SELECT extname FROM pg_extension", db="psa_platform").split())
    assert extensions >= EXTENSIONS, f"missing extensions in psa_platform: {sorted(EXTENSIONS - extensions)}"


@pytest.mark.component("postgresql")
def test_psa_app_can_log_in_with_its_password(run_stdin: Any, secrets: Any) -> None:
    result = run_stdin('PGPASSWORD="$(cat)" psql -XAt -h 127.0.0.1 -U psa_app -d psa_platform -c "SELECT 1"',
                       secrets.get("postgresql.app_password").value)
    assert result.returncode == 0 and result.stdout.strip() == "1", \
        f"psa_app cannot log in over TCP: {result.stderr.strip()[:200]}"
