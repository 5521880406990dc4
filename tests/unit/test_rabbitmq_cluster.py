"""Phase 3 RabbitMQ: a 3-node cluster sharing a generated Erlang cookie, peer discovery from the phase
file, quorum queues (issue 13). Expected values are the issue's and RabbitMQ's, not the renderer's."""

from __future__ import annotations

import dataclasses

from test_planner import SECRETS, converged, make_ctx

from psa_provision import facts as facts_mod
from psa_provision import firewall, planner
from psa_provision.changes import Command, Noop, PutFile, sha256
from psa_provision.facts import FileFact, GuestFacts
from psa_provision.packaged import PHASES_DIR
from psa_provision.phases import load_phase
from psa_provision.services.app.component import env_content
from psa_provision.services.rabbitmq import cluster, migration
from psa_provision.services.rabbitmq.facts import ClusterStatus, parse_cluster

COOKIE = SECRETS["rabbitmq.erlang_cookie"]
NODES = ["rabbit@psa-rabbitmq-1", "rabbit@psa-rabbitmq-2", "rabbit@psa-rabbitmq-3"]


def rabbit_changes(vmid: int, facts: GuestFacts) -> list:
    changes = planner.plan_guest(make_ctx("phase3", vmid), facts).changes
    return [c for c in changes if c.component == "rabbitmq"]


def file_of(changes: list, path: str) -> str:
    return next(c.content.reveal() for c in changes if isinstance(c, PutFile) and c.path == path)


def test_every_member_names_the_others_for_peer_discovery_and_listens_for_them() -> None:
    changes = rabbit_changes(211, GuestFacts())
    conf = file_of(changes, "/etc/rabbitmq/rabbitmq.conf").splitlines()
    assert "cluster_formation.peer_discovery_backend = classic_config" in conf
    assert [f"cluster_formation.classic_config.nodes.{i} = {n}" for i, n in enumerate(NODES, 1)] == \
        [line for line in conf if line.startswith("cluster_formation.classic_config.nodes.")]
    assert "distribution.listener.interface = 10.0.30.31" in conf
    inetrc = file_of(changes, "/etc/rabbitmq/erl_inetrc")
    for ip, name in (("10,0,30,30", "psa-rabbitmq-1"), ("10,0,30,31", "psa-rabbitmq-2"),
                     ("10,0,30,32", "psa-rabbitmq-3")):
        assert f'{{host, {{{ip}}}, ["{name}"]}}.' in inetrc
    epmd = file_of(changes, "/etc/systemd/system/epmd.socket.d/psa-loopback.conf")
    assert "ListenStream=10.0.30.31:4369" in epmd


def test_the_cli_node_listens_where_the_other_members_reach_it() -> None:
    # list_queues has every member send its rows to the CLI's own node: on loopback it was unreachable
    # and list_queues timed out ("Some queue(s) are unresponsive") on a healthy cluster
    env = file_of(rabbit_changes(211, GuestFacts()), "/etc/rabbitmq/rabbitmq-env.conf")
    ctl = next(line for line in env.splitlines() if line.startswith("CTL_ERL_ARGS="))
    assert "inet_dist_use_interface {10,0,30,31}" in ctl
    assert "inet_dist_listen_min 35672" in ctl and "inet_dist_listen_max 35682" in ctl
    p3 = load_phase("phase3", PHASES_DIR)
    rules = {(r.dport, r.source) for r in firewall.rules(p3, p3.container(211))}
    assert {("35672:35682", "10.0.30.30"), ("35672:35682", "10.0.30.32")} <= rules


def test_the_cookie_travels_on_stdin_and_the_node_is_stopped_before_it_changes() -> None:
    changes = rabbit_changes(211, GuestFacts())
    cookie = next(c for c in changes if isinstance(c, Command) and "Erlang cookie" in c.summary)
    assert cookie.stdin is not None and cookie.stdin.reveal() == COOKIE + "\n"
    assert COOKIE not in cookie.script and COOKIE not in cookie.summary
    assert cookie.script.index("systemctl stop rabbitmq-server") < cookie.script.index("mv -f")
    assert "chmod 0400" in cookie.script and "chown rabbitmq:rabbitmq" in cookie.script
    names = [c.summary for c in changes]
    assert names.index(cookie.summary) < names.index("restart rabbitmq-server (configuration changed)")


def test_joiners_join_in_the_second_wave_the_seed_never_joins() -> None:
    joiner = rabbit_changes(212, GuestFacts())
    join = [c for c in joiner if isinstance(c, Command) and c.summary.startswith("join ")]
    assert [c.summary for c in join] == ["join rabbit@psa-rabbitmq-3 to the cluster of rabbit@psa-rabbitmq-1"]
    assert join[0].needs_peers and "join_cluster" in join[0].script
    assert "grow rabbit@psa-rabbitmq-3 all" in join[0].script
    users = [c for c in joiner if isinstance(c, Command) and "user" in c.summary]
    assert users and all(c.needs_peers for c in users)  # the cluster's users, after the join
    seed = rabbit_changes(210, GuestFacts())
    assert not any(isinstance(c, Command) and c.summary.startswith("join ") for c in seed)


def clustered(vmid: int) -> GuestFacts:
    base = converged(make_ctx("phase3", vmid))
    path = "/var/lib/rabbitmq/.erlang.cookie"
    files = dict(base.files, **{path: FileFact(path, sha256(COOKIE), 0o400, "rabbitmq", "rabbitmq", None)})
    status = ClusterStatus(tuple(NODES), tuple(NODES), {}, {})
    return dataclasses.replace(base, files=files, rabbitmq=dataclasses.replace(base.rabbitmq, cluster=status))


def test_a_converged_member_changes_nothing() -> None:
    assert [c.summary for c in rabbit_changes(211, clustered(211)) if not isinstance(c, Noop)] == []


def test_a_member_outside_the_cluster_joins_again() -> None:
    facts = clustered(211)
    alone = dataclasses.replace(facts.rabbitmq, cluster=ClusterStatus(("rabbit@psa-rabbitmq-2",),
                                                                      ("rabbit@psa-rabbitmq-2",)))
    changes = rabbit_changes(211, dataclasses.replace(facts, rabbitmq=alone))
    assert [c.summary for c in changes if not isinstance(c, Noop)] == [
        "join rabbit@psa-rabbitmq-2 to the cluster of rabbit@psa-rabbitmq-1"]


def test_a_different_cookie_is_replaced() -> None:
    facts = clustered(210)
    path = "/var/lib/rabbitmq/.erlang.cookie"
    files = dict(facts.files, **{path: dataclasses.replace(facts.files[path], sha256="0" * 64)})
    summaries = [c.summary for c in rabbit_changes(210, dataclasses.replace(facts, files=files))
                 if not isinstance(c, Noop)]
    assert summaries[0].startswith("install the cluster's Erlang cookie")
    assert "restart rabbitmq-server (configuration changed)" in summaries


# `rabbitmqctl cluster_status --formatter json` / `list_queues name type members --formatter json` (3.10)
STATUS = ('{"alarms":[],"cluster_name":"rabbit@psa-rabbitmq-1","disk_nodes":["rabbit@psa-rabbitmq-1",'
          '"rabbit@psa-rabbitmq-2","rabbit@psa-rabbitmq-3"],"partitions":{"rabbit@psa-rabbitmq-3":'
          '["rabbit@psa-rabbitmq-1"]},"ram_nodes":[],"running_nodes":["rabbit@psa-rabbitmq-2",'
          '"rabbit@psa-rabbitmq-1"]}')
QUEUES = ('[{"name":"billing.ticket-events","type":"quorum","members":["rabbit@psa-rabbitmq-1",'
          '"rabbit@psa-rabbitmq-2"]},{"name":"old","type":"classic","members":[]}]')


def test_cluster_status_and_queues_parse_into_problems() -> None:
    status = parse_cluster(STATUS + "\n" + QUEUES)
    assert status.nodes == tuple(NODES)
    assert cluster.cluster_problems(status, NODES) == [
        "not running: rabbit@psa-rabbitmq-3",
        "network partition: rabbit@psa-rabbitmq-3 cannot see rabbit@psa-rabbitmq-1"]
    assert cluster.queue_problems(status, NODES) == [
        "quorum queue billing.ticket-events has members rabbit@psa-rabbitmq-1, rabbit@psa-rabbitmq-2, "
        "not rabbit@psa-rabbitmq-1, rabbit@psa-rabbitmq-2, rabbit@psa-rabbitmq-3",
        "queue old is classic, not quorum"]
    healthy = ClusterStatus(tuple(NODES), tuple(NODES), {}, {"q": ("quorum", tuple(NODES))})
    assert cluster.cluster_problems(healthy, NODES) == [] and cluster.queue_problems(healthy, NODES) == []


def test_facts_never_read_the_cookie() -> None:
    phase = load_phase("phase3", PHASES_DIR)
    script = facts_mod.gather_script(phase.container(211))
    assert "OPAQUE=(/var/lib/rabbitmq/.erlang.cookie)" in script
    assert 'is_opaque "$f"; then content=""' in script
    assert "cluster_status" in script
    assert "cluster_status" not in facts_mod.gather_script(load_phase("phase2", PHASES_DIR).container(210))


def test_members_open_epmd_and_distribution_to_each_other_only() -> None:
    phase = load_phase("phase3", PHASES_DIR)
    rules = {(r.dport, r.source) for r in firewall.rules(phase, phase.container(211))}
    assert {(4369, "10.0.30.30"), (4369, "10.0.30.32"), (25672, "10.0.30.30"), (25672, "10.0.30.32")} <= rules
    assert not {r for r in rules if r[0] in (4369, 25672) and r[1] not in ("10.0.30.30", "10.0.30.32")}
    redis = {(r.dport, r.source) for r in firewall.rules(phase, phase.container(110))}
    assert (26379, "10.0.20.140") in redis and (6379, "10.0.30.21") in redis


def test_the_app_gets_the_cluster_in_phase_3_only() -> None:
    env = env_content(make_ctx("phase3", 140)).splitlines()
    assert "RABBITMQ_NODES=10.0.30.30:5672,10.0.30.31:5672,10.0.30.32:5672" in env
    assert "RABBITMQ_QUEUE_TYPE=quorum" in env
    assert "REDIS_SENTINELS=10.0.30.20:26379,10.0.30.21:26379,10.0.30.22:26379" in env
    assert "REDIS_SENTINEL_NAME=psa-redis" in env
    assert "ELASTICSEARCH_NODES=10.0.30.40:9200,10.0.30.41:9200,10.0.30.42:9200" in env
    phase2 = env_content(make_ctx("phase2", 140))
    assert "RABBITMQ_NODES" not in phase2 and "REDIS_SENTINELS" not in phase2
    assert "ELASTICSEARCH_NODES" not in phase2


def test_the_queues_to_make_quorum_are_the_classic_ones_and_any_left_half_done() -> None:
    listed = [{"name": "billing.ticket-events", "vhost": "/", "type": "classic"},
              {"name": "done", "vhost": "/", "type": "quorum"},
              {"name": "half", "vhost": "/", "type": "quorum"},
              {"name": "half.quorum", "vhost": "/", "type": "quorum"},
              {"name": "elsewhere", "vhost": "other", "type": "classic"}]
    assert migration.classic_queues(listed, "/") == ["billing.ticket-events", "half"]


def test_bindings_move_without_the_default_exchange() -> None:
    listed = [{"source": "", "routing_key": "q", "properties_key": "q"},
              {"source": "psa.events", "routing_key": "ticket.*", "arguments": {},
               "properties_key": "ticket.*"}]
    kept = migration.app_bindings(listed)
    assert [b["source"] for b in kept] == ["psa.events"]
    [(verb, bind_path, body)] = migration.bind_requests("/", "q.quorum", kept)
    assert (verb, bind_path, body) == ("POST", "/bindings/%2F/e/psa.events/q/q.quorum",
                                       {"routing_key": "ticket.*", "arguments": {}})
    [(verb, unbind_path, _)] = migration.unbind_requests("/", "q", kept)
    assert (verb, unbind_path) == ("DELETE", "/bindings/%2F/e/psa.events/q/q/ticket.%2A")


def test_a_list_queues_timeout_leaves_the_queues_unknown_not_the_member() -> None:
    # what a member printed while the CLI node was unreachable: the rows, then an Elixir term
    text = ('{"disk_nodes":["rabbit@psa-rabbitmq-1"],"running_nodes":["rabbit@psa-rabbitmq-1"]}\n'
            '[{"name":"billing.ticket-events","type":"quorum","members":["rabbit@psa-rabbitmq-1"]}'
            '%Protocol.UndefinedError{protocol: Enumerable, value: {:badrpc, {:timeout, 60.0, '
            '"Some queue(s) are unresponsive, use list_unresponsive_queues command."}}, description: ""}')
    status = parse_cluster(text)
    assert status.nodes == ("rabbit@psa-rabbitmq-1",) and status.queues == {}
    assert "unresponsive" in status.queues_error
    assert cluster.queue_problems(status, ["rabbit@psa-rabbitmq-1"])[0].startswith("queues unknown:")
