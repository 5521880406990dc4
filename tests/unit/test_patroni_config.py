"""Patroni's config and plan: /etc/patroni/15-main.yml read back as YAML holds the issue's and the seed's
values; the plan hands PostgreSQL to Patroni, waits for a leader on new members, and converges."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from ha_phase import ha_ctx
from test_planner import SECRETS, make_ctx, scram_verifier

from psa_provision import planner
from psa_provision.changes import Command, Noop, Package, PutFile, Service, sha256
from psa_provision.facts import FileFact, GuestFacts, ServiceFact
from psa_provision.services import catalog
from psa_provision.services.patroni import CONFIG, CREATECLUSTER, START_CONF
from psa_provision.services.patroni import component as patroni
from psa_provision.services.postgresql import component as postgresql
from psa_provision.services.postgresql.facts import PgRole, PostgresFacts

PASSWORDS = {"postgres": SECRETS["postgresql.superuser_password"],
             "replicator": SECRETS["postgresql.replication_password"],
             "rewind_user": SECRETS["postgresql.rewind_password"]}


def config(vmid: int = 100) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(patroni.config_content(ha_ctx(vmid)))
    return doc


def test_debian_layout_and_identity() -> None:
    doc = config(101)
    identity = (doc["scope"], doc["namespace"], doc["name"])
    assert identity == ("15-main", "/postgresql-common/", "psa-postgres-2")
    pg = doc["postgresql"]
    assert pg["data_dir"] == "/var/lib/postgresql/15/main"
    assert pg["config_dir"] == "/etc/postgresql/15/main"
    assert pg["bin_dir"] == "/usr/lib/postgresql/15/bin"
    assert pg["listen"] == "10.0.30.11,127.0.0.1:5432"
    assert pg["connect_address"] == "10.0.30.11:5432"
    assert doc["bootstrap"]["method"] == "pg_createcluster"
    assert doc["bootstrap"]["pg_createcluster"]["command"] == "/usr/share/patroni/pg_createcluster_patroni"
    assert pg["create_replica_method"] == ["pg_clonecluster"]
    assert CONFIG == "/etc/patroni/15-main.yml"


def test_etcd3_hosts_and_rest_api() -> None:
    doc = config()
    assert doc["etcd3"] == {"hosts": ["10.0.30.50:2379", "10.0.30.51:2379", "10.0.30.52:2379"]}
    assert "etcd" not in doc  # the v2 API is not used
    assert doc["restapi"]["listen"] == "10.0.30.10:8008"
    assert doc["restapi"]["connect_address"] == "10.0.30.10:8008"
    assert doc["restapi"]["authentication"]["password"] == SECRETS["patroni.restapi_password"]


def test_synchronous_mode_and_no_watchdog() -> None:
    doc = config()
    dcs = doc["bootstrap"]["dcs"]
    assert dcs["synchronous_mode"] is True
    assert dcs["synchronous_mode_strict"] is False
    assert dcs["postgresql"]["use_pg_rewind"] is True
    assert dcs["postgresql"]["parameters"]["max_connections"] == 200
    assert dcs["postgresql"]["parameters"]["wal_keep_size"] == "512MB"  # replicas catch up after failovers
    assert doc["watchdog"] == {"mode": "off"}
    # a former leader that cannot rewind is cloned again rather than left down (nothing acknowledged is
    # only on it: synchronous mode)
    assert doc["postgresql"]["remove_data_directory_on_rewind_failure"] is True
    assert doc["postgresql"]["remove_data_directory_on_diverged_timelines"] is True


def test_users_are_the_secrets() -> None:
    auth = config()["postgresql"]["authentication"]
    assert {role: (v["username"], v["password"]) for role, v in auth.items()} == {
        "superuser": ("postgres", PASSWORDS["postgres"]),
        "replication": ("replicator", PASSWORDS["replicator"]),
        "rewind": ("rewind_user", PASSWORDS["rewind_user"]),
    }


def test_seed_settings_scaled_to_the_32_gib_members() -> None:
    # the seed's 4GB/12GB/1GB/20MB at 64 GB, halved for phase 3's 32768 MB PostgreSQL containers
    params = config()["postgresql"]["parameters"]
    assert {k: params[k] for k in ("shared_buffers", "effective_cache_size", "maintenance_work_mem",
                                   "work_mem", "random_page_cost", "effective_io_concurrency",
                                   "password_encryption")} == {
        "shared_buffers": "2GB", "effective_cache_size": "6GB", "maintenance_work_mem": "512MB",
        "work_mem": "10MB", "random_page_cost": "1.1", "effective_io_concurrency": "200",
        "password_encryption": "scram-sha-256"}


def test_pg_hba_replication_from_the_subnet_and_the_app_through_the_load_balancer() -> None:
    rules = [line.split() for line in config()["postgresql"]["pg_hba"]]
    assert ["host", "replication", "replicator", "10.0.30.0/24", "scram-sha-256"] in rules
    assert ["host", "postgres", "rewind_user", "10.0.30.0/24", "scram-sha-256"] in rules
    assert ["host", "psa_platform", "psa_app", "10.0.20.240/32", "scram-sha-256"] in rules  # both LBs
    assert ["host", "psa_platform", "psa_app", "10.0.20.241/32", "scram-sha-256"] in rules
    assert ["local", "all", "all", "peer"] in rules
    assert not [r for r in rules if "trust" in r]


def test_migration_clients_are_allowed_while_it_runs() -> None:
    doc = yaml.safe_load(patroni.config_content(ha_ctx(temporary_clients=("10.0.20.230",))))
    rules = [line.split() for line in doc["postgresql"]["pg_hba"]]
    assert ["host", "psa_platform", "psa_app", "10.0.20.230/32", "scram-sha-256"] in rules


def test_config_is_private_and_its_secrets_masked_in_facts() -> None:
    ctx = ha_ctx()
    conf = next(c for c in patroni.plan(ctx, GuestFacts()) if isinstance(c, PutFile) and c.path == CONFIG)
    assert (conf.mode, conf.owner, conf.group) == (0o600, "postgres", "postgres")
    assert CONFIG in catalog.SECRET_FILES
    masked = catalog.mask_secret_lines(patroni.config_content(ctx))
    assert not [v for v in SECRETS.values() if v in masked and v != SECRETS["app.admin_email"]]
    assert "password: ***" in masked


def test_postgresql_component_hands_the_server_to_patroni() -> None:
    changes = postgresql.plan(ha_ctx(), GuestFacts())
    paths = [c.path for c in changes if isinstance(c, PutFile)]
    assert paths == [CREATECLUSTER]  # no conf.d/psa.conf, no pg_hba: Patroni writes them
    assert changes.index(next(c for c in changes if isinstance(c, PutFile))) < \
        changes.index(next(c for c in changes if isinstance(c, Package)))
    assert not [c for c in changes if isinstance(c, Service)]


def test_objects_wait_for_a_leader_before_any_server_answers() -> None:
    objects = [c for c in postgresql.plan(ha_ctx(100), GuestFacts()) if isinstance(c, Command)]
    assert len(objects) == 1 and objects[0].needs_peers
    assert "http://10.0.30.10:8008/primary" in objects[0].script
    assert objects[0].stdin is not None and "CREATE DATABASE psa_platform" in objects[0].stdin.reveal()


def test_a_new_member_does_not_wait_for_its_own_server() -> None:
    # its server starts only once another member leads (a later change of the same wave): waiting for
    # it here held the wave for the loop's whole 5 minutes
    changes = postgresql.plan(ha_ctx(101), GuestFacts())
    assert not [c for c in changes if isinstance(c, Command)]
    assert any(isinstance(c, Noop) and "arrive from the leader" in c.summary for c in changes)


def test_replica_leaves_objects_to_the_leader() -> None:
    facts = GuestFacts(postgres=PostgresFacts(in_recovery=True))
    changes = postgresql.objects_under_patroni(ha_ctx(102), facts)
    assert [type(c) for c in changes] == [Noop]


def roles_with_passwords() -> dict[str, PgRole]:
    return {u: PgRole(u, True, u == "postgres", scram_verifier(pw)) for u, pw in PASSWORDS.items()}


def test_takeover_creates_patronis_users_then_stops_the_stock_server() -> None:
    # the phase before's standalone primary: stock unit running, no replication user yet
    facts = GuestFacts(postgres=PostgresFacts(roles={"postgres": PgRole("postgres", True, True, "")},
                                              in_recovery=False),
                       files={START_CONF: FileFact(START_CONF, "x" * 64, 0o644, "postgres", "postgres",
                                                   "auto\n")},
                       services={"postgresql@15-main": ServiceFact("postgresql@15-main", True, True)})
    changes = patroni.plan(ha_ctx(), facts)
    summaries = [c.summary for c in changes if not isinstance(c, Noop)]
    users = next(i for i, s in enumerate(summaries) if s.startswith("set up database users"))
    stop = summaries.index("stop and mask postgresql@15-main (Patroni runs the server)")
    assert users < stop < summaries.index("restart patroni@15-main (configuration changed)")
    sql = next(c for c in changes if c.summary.startswith("set up database users"))
    assert isinstance(sql, Command) and sql.stdin is not None
    assert "ALTER ROLE replicator WITH REPLICATION LOGIN PASSWORD" in sql.stdin.reveal()
    assert not [v for v in PASSWORDS.values() if v in sql.script or v in sql.summary]
    start = next(c for c in changes if isinstance(c, PutFile) and c.path == START_CONF)
    assert start.content.reveal().splitlines()[-1] == "manual"


def test_new_member_starts_only_after_another_leads() -> None:
    changes = patroni.plan(ha_ctx(102), GuestFacts())
    start = [c for c in changes if isinstance(c, Command) and "patroni@15-main" in c.summary]
    assert len(start) == 1 and start[0].needs_peers
    assert "for ip in 10.0.30.10 10.0.30.11;" in start[0].script
    assert "systemctl enable --now patroni@15-main" in start[0].script
    assert not [c for c in changes if isinstance(c, Service)]


def test_new_member_waits_for_its_own_server_then_makes_start_conf_manual() -> None:
    # the clone from the leader is part of the member's start: `up` ends with it serving (Patroni's
    # /health is 200 only while the server runs), and the start.conf the clone made says `manual`
    script = next(c for c in patroni.plan(ha_ctx(102), GuestFacts())
                  if isinstance(c, Command) and "patroni@15-main" in c.summary).script
    started = script.index("systemctl enable --now patroni@15-main")
    waits = script.index('"http://10.0.30.12:8008/health"')
    assert started < waits, script
    assert "exit 1" in script[waits:]  # a server that never runs fails the step, naming the unit
    conf = script.index(f"> {START_CONF}")
    assert waits < conf and "\nmanual\n" in script[waits:conf], script
    assert f"chown postgres:postgres {START_CONF}" in script


@pytest.mark.parametrize("vmid", [100, 101])
def test_converged_member_plans_only_noops(vmid: int) -> None:
    ctx = ha_ctx(vmid)
    content = patroni.config_content(ctx)
    facts = GuestFacts(
        packages={"patroni": "3.0.2-1", "python3-etcd": "0.4.5-4"},
        files={CONFIG: FileFact(CONFIG, sha256(content), 0o600, "postgres", "postgres"),
               START_CONF: FileFact(START_CONF, sha256(patroni.START_CONF_CONTENT), 0o644, "postgres",
                                    "postgres")},
        services={"patroni@15-main": ServiceFact("patroni@15-main", True, True, 1.0),
                  "postgresql@15-main": ServiceFact("postgresql@15-main", False, False)},
        postgres=PostgresFacts(roles=roles_with_passwords(), in_recovery=vmid != 100))
    assert [c.summary for c in patroni.plan(ctx, facts) if not isinstance(c, Noop)] == []
    changed = content.replace("ttl: 20", "ttl: 30")
    assert changed != content
    stale = GuestFacts(packages=facts.packages, services=facts.services, postgres=facts.postgres,
                       files={**facts.files, CONFIG: FileFact(CONFIG, sha256(changed), 0o600, "postgres",
                                                              "postgres")})
    actions = [c.action for c in patroni.plan(ctx, stale) if isinstance(c, Service)]
    assert actions == ["reload"]  # never a restart: stopping Patroni stops the server it manages


def test_the_guest_plan_adds_patroni_on_cluster_members_only() -> None:
    member = planner.plan_guest(ha_ctx(100), GuestFacts()).changes
    assert [c for c in member if c.component == "patroni" and isinstance(c, PutFile) and c.path == CONFIG]
    standalone = planner.plan_guest(make_ctx("phase2", 100), GuestFacts()).changes
    assert not [c for c in standalone if c.component == "patroni"]
    assert CONFIG in catalog.managed_files(["postgresql"], clustered=True)
    assert CONFIG not in catalog.managed_files(["postgresql"])


DEBIAN_START_CONF = """# Automatic startup configuration
#   auto: automatically start the cluster
#   manual: manual startup with pg_ctlcluster/postgresql@.service only
#   disabled: refuse to start cluster
# See pg_createcluster(1) for details. When running from systemd,
# invoke 'systemctl daemon-reload' after editing this file.

manual
"""


@pytest.mark.parametrize(("content", "mode", "planned"), [
    (DEBIAN_START_CONF, 0o644, False),  # the bootstrap member's, as its first start leaves it: as wanted
    (DEBIAN_START_CONF.replace("\nmanual", "\nauto"), 0o644, True),
    (DEBIAN_START_CONF, 0o600, True),
])
def test_a_start_conf_saying_manual_already_is_left_as_it_is(content: str, mode: int, planned: bool) -> None:
    facts = GuestFacts(files={START_CONF: FileFact(START_CONF, sha256(content), mode, "postgres", "postgres",
                                                   content)})
    put = [c for c in patroni.plan(ha_ctx(100), facts) if isinstance(c, PutFile) and c.path == START_CONF]
    assert bool(put) == planned
    assert patroni.start_mode(content) == ("auto" if "\nauto" in content else "manual")
