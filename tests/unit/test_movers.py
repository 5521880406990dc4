"""movers: Check, comparing the two sides' probe outputs, the registry; each mover's pure parts."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from psa_provision.errors import GuestError
from psa_provision.services.elasticsearch import BACKUP_DIR as ES_BACKUP_DIR
from psa_provision.services.elasticsearch import mover as elasticsearch
from psa_provision.services.mover import (
    ABSENT,
    Check,
    compare,
    curl_config,
    curl_quote,
    parse_responses,
    tab_lines,
)
from psa_provision.services.postgresql import mover as pg
from psa_provision.services.rabbitmq import mover as rabbitmq
from psa_provision.services.redis import mover as redis
from psa_provision.services.registry import MOVERS

SOURCE = """table\tpublic.tickets\t300 rows, md5 ba8a
table\tauth_users\t1 rows, md5 c2da
sequence\tpublic.tickets_id_seq\t300
sequence\tpublic.report_runs_id_seq\tnot used yet
schema\tobjects\t34, md5 b1a3
"""


def test_check_passes_only_on_equal_values() -> None:
    assert Check("x", "1", "1").passed
    assert not Check("x", "1", "2").passed
    assert not Check("x", "0", ABSENT).passed


def test_tab_lines_reads_one_kind_and_skips_noise() -> None:
    text = SOURCE + "NOTICE: something\nsequence\tbroken line\n"
    assert tab_lines(text, "sequence") == {"public.tickets_id_seq": "300",
                                           "public.report_runs_id_seq": "not used yet"}


def test_compare_names_what_one_side_lacks() -> None:
    checks = compare("redis db", {"0": "5", "1": "2"}, {"0": "5", "3": "1"})
    assert [(c.what, c.source, c.target, c.passed) for c in checks] == [
        ("redis db 0", "5", "5", True), ("redis db 1", "2", ABSENT, False),
        ("redis db 3", ABSENT, "1", False)]


def test_every_component_has_a_mover() -> None:
    assert MOVERS.keys() == {"postgresql", "redis", "rabbitmq", "elasticsearch"}
    for name, mover in MOVERS.items():
        assert mover.component == name


def test_postgresql_checks_cover_tables_sequences_and_schema() -> None:
    target = SOURCE.replace("300 rows, md5 ba8a", "299 rows, md5 ffff")
    target = target.replace("tickets_id_seq\t300", "tickets_id_seq\t1")
    checks = pg.checks(SOURCE, target)
    assert [c.what for c in checks] == [
        "postgresql table auth_users", "postgresql table public.tickets",
        "postgresql sequence public.report_runs_id_seq", "postgresql sequence public.tickets_id_seq",
        "postgresql schema objects"]
    assert [c.what for c in checks if not c.passed] == ["postgresql table public.tickets",
                                                        "postgresql sequence public.tickets_id_seq"]


def test_postgresql_after_discard_every_table_differs() -> None:
    checks = pg.checks(SOURCE, "schema\tobjects\t0, md5 d41d\n")
    assert not any(c.passed for c in checks) and len(checks) == 5


def test_postgresql_no_password_travels_and_restore_is_one_transaction() -> None:
    """Peer authentication as postgres on both sides; a failed restore rolls back to empty."""
    for script in (pg.DUMP, pg.RESTORE, pg.PSQL):
        assert "runuser -u postgres" in script and "PASSWORD" not in script.upper()
    assert "--single-transaction" in pg.RESTORE and "--exit-on-error" in pg.RESTORE
    assert "pipefail" in pg.DUMP and "-Fc" in pg.DUMP


def test_postgresql_discard_keeps_extensions_and_spells_names_from_the_catalog() -> None:
    sql = pg.DISCARD_SQL
    assert "deptype = 'e'" in sql  # extension members are never dropped
    assert "DROP EXTENSION" not in sql and "DROP DATABASE" not in sql and "DROP ROLE" not in sql
    assert "::regclass::text AS name" not in sql  # a CASCADE-dropped object's regclass is a bare oid
    assert "lo_unlink" in sql  # else a rerun's restore of a large object collides with the first copy


# -- redis ---------------------------------------------------------------------------------------------
REDIS_SOURCE = "db\t0\t305 keys, 303 with ttl, md5 adb7  -\ndb\t3\t4 keys, 0 with ttl, md5 c530  -\n"


def test_redis_checks_per_database_without_md5sums_dash() -> None:
    target = "db\t0\t305 keys, 303 with ttl, md5 adb7  -\n"
    checks = redis.checks(REDIS_SOURCE, target)
    assert [(c.what, c.source, c.target, c.passed) for c in checks] == [
        ("redis db 0", "305 keys, 303 with ttl, md5 adb7", "305 keys, 303 with ttl, md5 adb7", True),
        ("redis db 3", "4 keys, 0 with ttl, md5 c530", ABSENT, False)]


def test_redis_password_only_on_stdin() -> None:
    scripts = (redis.perl("follow 10.0.20.100"), redis.perl("digest"), redis.perl("discard"),
               redis.cli("INFO", "replication"), redis.cli("CONFIG", "SET", "bind", "127.0.0.1 10.0.20.100"))
    for script in scripts:
        assert script.startswith("IFS= read -r REDISCLI_AUTH\nexport REDISCLI_AUTH\n")
        assert " -a " not in script and "--pass" not in script
    assert "'127.0.0.1 10.0.20.100'" in scripts[-1]  # one argument
    assert "'masterauth', $ENV{REDISCLI_AUTH}" in redis.PERL  # set inside the client, from the environment


def test_redis_perl_client_compiles() -> None:
    """The Perl program the guests run (perl-base only) is valid Perl."""
    proc = subprocess.run(["perl", "-c", "-e", redis.PERL, "digest"], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0 and "syntax OK" in proc.stderr, proc.stderr
    assert "FLUSHALL" not in redis.PERL and "FLUSHDB" not in redis.PERL  # renamed away in redis.conf


def test_redis_error_replies_are_errors() -> None:
    """redis-cli exits 0 on an error reply: the mover reads the answer."""
    redis._ok("OK\n", "REPLICAOF NO ONE")
    redis._ok("OK Already connected to specified master\n", "REPLICAOF")
    with pytest.raises(GuestError, match="CONFIG SET bind answered 'ERR Invalid argument'"):
        redis._ok("ERR Invalid argument\n", "CONFIG SET bind")


# -- rabbitmq ------------------------------------------------------------------------------------------
DEFS: dict[str, Any] = {
    "users": [{"name": "admin", "password_hash": "h1"}, {"name": "psa_app", "password_hash": "h2"},
              {"name": "old", "password_hash": "h3"}],
    "vhosts": [{"name": "/", "metadata": {"description": "x"}, "limits": []},
               {"name": "extra", "limits": []}],
    "permissions": [{"user": "admin", "vhost": "/"}, {"user": "old", "vhost": "/"}],
    "exchanges": [{"name": "psa.events", "vhost": "/", "type": "topic", "durable": True}],
    "queues": [{"name": "billing.ticket-events", "vhost": "/", "durable": True, "arguments": {}}],
    "bindings": [{"source": "psa.events", "destination": "billing.ticket-events", "routing_key": "ticket.*"}],
    "policies": [{"name": "p 1", "vhost": "extra", "pattern": "^b"}],
    "global_parameters": [{"name": "cluster_name", "value": "rabbit@psa-all-in-one"}],
}


def test_rabbitmq_import_carries_no_users_and_only_known_users_permissions() -> None:
    out = rabbitmq.portable(DEFS, {"admin", "psa_app"})
    assert "users" not in out and "global_parameters" not in out
    assert out["permissions"] == [{"user": "admin", "vhost": "/"}]
    assert out["queues"] == DEFS["queues"] and out["parameters"] == []


def test_rabbitmq_checks_definitions_and_depths() -> None:
    other = dict(DEFS, bindings=[], vhosts=[{"name": "/", "metadata": {"description": "changed"}},
                                            {"name": "extra"}])
    queue = ("/", "billing.ticket-events")
    checks = rabbitmq.checks(DEFS, {queue: 200}, other, {queue: 199})
    bad = {c.what for c in checks if not c.passed}
    assert bad == {"rabbitmq bindings", "rabbitmq queue / billing.ticket-events"}  # vhost metadata ignored
    assert next(c for c in checks if c.what == "rabbitmq queues").source.startswith("1, md5 ")


def test_rabbitmq_parse_depths() -> None:
    text = '/\t[{"name":"billing.ticket-events","messages":200},{"name":"q2","messages":0}]\nextra\t[]\n'
    assert rabbitmq.parse_depths(text) == {("/", "billing.ticket-events"): 200, ("/", "q2"): 0}


def test_rabbitmq_discard_keeps_builtins_users_and_root_vhost() -> None:
    builtin = [{"name": "amq.topic", "vhost": "/"}, {"name": "", "vhost": "/"}]
    defs = dict(DEFS, exchanges=[*DEFS["exchanges"], *builtin])
    assert [(m, p) for m, p, _ in rabbitmq.discard_requests(defs)] == [
        ("DELETE", "/queues/%2F/billing.ticket-events"), ("DELETE", "/exchanges/%2F/psa.events"),
        ("DELETE", "/policies/extra/p%201"), ("DELETE", "/vhosts/extra")]


def test_curl_parses_the_quoted_values_back(tmp_path: Path) -> None:
    """Real curl reads a config value written by curl_quote back to the same string (hostile chars)."""
    value = "a \"quoted\" \\back\\slash $HOME `id` 'single'\ttab\nline"
    config = f'url = "file://{tmp_path}/empty"\nwrite-out = {curl_quote(value)}\n'
    (tmp_path / "empty").write_text("")
    proc = subprocess.run(["curl", "-sS", "-K", "-"], input=config, capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0 and proc.stdout == value, proc.stderr


def test_curl_config_and_responses() -> None:
    requests = [("GET", "/whoami", None), ("POST", "/x", {"a": 1})]
    config = curl_config("http://h/api", requests, ("admin", "p\"w"))
    blocks = config.split("next\n")
    assert len(blocks) == 2 and all('user = "admin:p\\"w"' in b for b in blocks)
    assert 'data-binary = "{\\"a\\": 1}"' in blocks[1] and "data-binary" not in blocks[0]
    assert 'url = "http://h/api/x"' in blocks[1]
    assert "user" not in curl_config("http://h", [("GET", "/", None)])
    out = '{"name":"admin"}\n@@psa-http 200\n{"routed":true}\n@@psa-http 200\n'
    assert parse_responses(out) == [(200, '{"name":"admin"}'), (200, '{"routed":true}')]
    assert parse_responses("") == []


def test_rabbitmq_publish_keeps_routing_key_properties_and_payload() -> None:
    message = {"routing_key": "ticket.created", "payload": "eyJ9", "payload_encoding": "base64",
               "properties": {"message_id": "ticket.created:1", "delivery_mode": 2}, "redelivered": True,
               "exchange": "psa.events", "message_count": 3}
    assert rabbitmq.publish_body(message) == {
        "properties": {"message_id": "ticket.created:1", "delivery_mode": 2}, "routing_key": "ticket.created",
        "payload": "eyJ9", "payload_encoding": "base64"}


# -- elasticsearch -------------------------------------------------------------------------------------
def test_elasticsearch_moves_app_indices_only() -> None:
    rows = [{"index": "tickets"}, {"index": ".security-7"}, {"index": "assets"}]
    assert elasticsearch.index_names(rows) == ["assets", "tickets"]


def test_elasticsearch_snapshot_restore_and_cleanup_requests() -> None:
    snap = elasticsearch.snapshot_requests(["assets", "tickets"])
    assert snap[0] == ("PUT", "/_snapshot/psa-migrate",
                       {"type": "fs", "settings": {"location": f"{ES_BACKUP_DIR}/psa-migrate"}})
    assert snap[1] == ("DELETE", "/_snapshot/psa-migrate/psa-migrate", None)  # one a killed run left
    assert snap[2][1].endswith("?wait_for_completion=true")
    assert snap[2][2] == {"indices": "assets,tickets", "include_global_state": False}
    restore = elasticsearch.restore_requests(["tickets"])
    assert restore[0][2]["settings"]["readonly"] is True
    assert restore[1][1] == "/_snapshot/psa-migrate/psa-migrate/_restore?wait_for_completion=true"
    assert [m for m, _, _ in elasticsearch.cleanup_requests()] == ["DELETE", "DELETE"]


def test_elasticsearch_repository_copy_stays_under_path_repo() -> None:
    assert elasticsearch.LOCATION.startswith(ES_BACKUP_DIR + "/")
    unpack = elasticsearch.UNPACK
    assert "rm -rf" in unpack.splitlines()[1] and "chown -R elasticsearch" in unpack


def test_rabbitmq_messages_digest_sees_order_properties_and_payload() -> None:
    one = {"routing_key": "ticket.created", "properties": {"message_id": "a"}, "payload": "eA=="}
    two = {"routing_key": "ticket.created", "properties": {"message_id": "b"}, "payload": "eQ=="}
    base = rabbitmq.messages_digest([one, two])
    assert base.startswith("2, md5 ") and base == rabbitmq.messages_digest([dict(one), dict(two)])
    assert rabbitmq.messages_digest([two, one]) != base
    assert rabbitmq.messages_digest([one, dict(two, properties={"message_id": "c"})]) != base
    assert rabbitmq.messages_digest([one, dict(two, routing_key="ticket.updated")]) != base
    assert rabbitmq.messages_digest([one, dict(two, redelivered=True)]) == base  # requeue flag ignored


def test_elasticsearch_a_partial_snapshot_stops_the_move() -> None:
    elasticsearch.snapshot_state("h", '{"snapshot": {"state": "SUCCESS", "shards": {"failed": 0}}}')
    for body in ('{"snapshot": {"state": "PARTIAL", "shards": {"failed": 1}}}', '{"accepted": true}'):
        with pytest.raises(GuestError, match="did not succeed"):
            elasticsearch.snapshot_state("h", body)
