"""The load balancer pair (HAProxy + keepalived): haproxy.cfg and keepalived.conf rendered for phase 3
(two containers per app service, two load balancers), parsed and held to the issue's words (health
checks on /health, unicast VRRP, a VIP on vmbr20, HAProxy tracked); `show stat` and `ip addr` verdicts
over recorded output."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from psa_provision import phases
from psa_provision.changes import Plan, PutFile, Secret
from psa_provision.errors import InputError
from psa_provision.facts import fresh
from psa_provision.inventory import load_inventory
from psa_provision.output import plan_json
from psa_provision.packaged import PHASES_DIR, SANDBOX_INVENTORY
from psa_provision.secrets import Secrets, generate
from psa_provision.services.context import HostContext
from psa_provision.services.haproxy import config as haproxy_config
from psa_provision.services.haproxy import stats
from psa_provision.services.keepalived import component as keepalived
from psa_provision.services.keepalived import config as keepalived_config
from psa_provision.services.keepalived import vip

# the seed's services and ports (deployment strategy, phase 2 table)
SEED_PORTS = {"api-gateway": 3000, "auth": 3010, "crm": 3020, "tickets": 3030, "billing": 3040,
              "projects": 3050, "assets": 3060, "reports": 3070}
VIP = "10.0.20.250/24"


def _pair_phase() -> phases.Phase:
    """Phase 3: two containers for every app service, a pair of load balancers with the VIP."""
    return phases.load_phase("phase3", PHASES_DIR)


def _sections(cfg: str) -> dict[tuple[str, str], list[str]]:
    """haproxy.cfg -> {(keyword, name): [the section's lines, stripped]}."""
    out: dict[tuple[str, str], list[str]] = {}
    current: list[str] = []
    for raw in cfg.splitlines():
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        if not raw[0].isspace():
            words = raw.split()
            current = out.setdefault((words[0], words[1] if len(words) > 1 else ""), [])
        else:
            current.append(raw.strip())
    return out


def test_haproxy_fronts_every_app_service_checked_on_health() -> None:
    phase = _pair_phase()
    sections = _sections(haproxy_config.conf_content(phase))
    assert "stats socket /run/haproxy/admin.sock mode 660 level admin expose-fd listeners" in sections[
        ("global", "")]
    for service, port in SEED_PORTS.items():
        assert f"bind *:{port}" in sections[("frontend", service)]
        assert f"default_backend {service}" in sections[("frontend", service)]
        backend = sections[("backend", service)]
        assert "option httpchk GET /health" in backend
        assert "http-check expect status 200" in backend
        servers = sorted(line for line in backend if line.startswith("server "))
        want = sorted(f"server {c.hostname} {c.ip}:{port} check" for c in phase.containers
                      if service in c.services)
        assert servers == want and len(servers) >= 2


def test_postgresql_leader_and_replica_frontends_are_included() -> None:
    # Patroni's haproxy.cfg example: 5000 -> the member answering GET /leader 200 on 8008, 5001 -> replicas
    sections = _sections(haproxy_config.conf_content(_pair_phase()))
    listens = {name: lines for (kind, name), lines in sections.items() if kind == "listen"}
    by_port = {next(line.split(":")[-1] for line in lines if line.startswith("bind ")): lines
               for lines in listens.values()}
    assert {"5000", "5001"} <= set(by_port)
    assert "option httpchk GET /leader" in by_port["5000"]
    assert any("/replica" in line for line in by_port["5001"])
    for port in ("5000", "5001"):
        servers = sorted(line.split()[2] for line in by_port[port] if line.startswith("server "))
        assert servers == ["10.0.30.10:5432", "10.0.30.11:5432", "10.0.30.12:5432"]


def _keepalived(phase: phases.Phase, hostname: str, secret: str) -> str:
    container = next(c for c in phase.containers if c.hostname == hostname)
    return keepalived_config.conf_content(phase, container, Secret(secret))


def _block(conf: str, head: str) -> str:
    match = re.search(re.escape(head) + r"\s*\{(.*?)\n\}", conf, re.S)
    assert match, f"no `{head}` block"
    return match.group(1)


def test_keepalived_unicast_pair_with_the_vip_and_haproxy_tracked() -> None:
    phase = _pair_phase()
    secret = generate()["keepalived.auth_pass"]
    assert len(secret) == 8
    confs = {h: _keepalived(phase, h, secret) for h in ("psa-lb-1", "psa-lb-2")}
    priorities = {}
    for me, other in (("psa-lb-1", "10.0.20.241"), ("psa-lb-2", "10.0.20.240")):
        instance = _block(confs[me], "vrrp_instance psa_lb")
        lines = [line.strip() for line in instance.splitlines()]
        assert "state BACKUP" in lines and "nopreempt" in lines
        own = "10.0.20.240" if me == "psa-lb-1" else "10.0.20.241"
        assert f"unicast_src_ip {own}" in lines
        assert re.findall(r"unicast_peer\s*\{\s*([\d.\s]+?)\s*\}", instance) == [other]
        assert "10.0.20.250/24 dev eth0" in lines
        assert re.search(r"track_script\s*\{\s*chk_haproxy\s*\}", instance)
        assert f"auth_pass {secret}" in lines and "auth_type PASS" in lines
        assert "virtual_router_id 51" in lines
        priorities[me] = int(re.search(r"priority (\d+)", instance).group(1))  # type: ignore[union-attr]
        assert "haproxy" in _block(confs[me], "vrrp_script chk_haproxy")
    assert priorities["psa-lb-1"] > priorities["psa-lb-2"]


def test_keepalived_refuses_a_password_vrrp_would_cut() -> None:
    with pytest.raises(InputError, match=r"keepalived\.auth_pass must be 1 to 8 characters"):
        _keepalived(_pair_phase(), "psa-lb-1", "x" * 32)


# `show stat` as HAProxy 2.6 prints it (columns cut after check_status; the parser keys by header)
HEADER = ("# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,"
          "status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,"
          "type,rate,rate_lim,rate_max,check_status\n")
SHOW_STAT = HEADER + """\
auth,FRONTEND,,,0,1,262124,3,300,900,0,0,0,,,,,OPEN,,,,,,,,,1,2,0,,,,0,0,0,1,
auth,psa-auth,0,0,0,1,,3,300,900,,0,,0,0,0,0,UP,1,1,0,0,0,120,0,,1,3,1,,3,,2,0,,1,L7OK
auth,psa-auth-2,0,0,0,0,,0,0,0,,0,,0,0,0,0,DOWN,1,1,0,2,1,5,5,,1,3,2,,0,,2,0,,0,L7STS
auth,BACKEND,0,0,0,1,26213,3,300,900,0,0,,0,0,0,0,UP,1,1,0,,0,120,0,,1,3,0,,3,,1,0,,1,
crm,psa-crm,0,0,0,0,,0,0,0,,0,,0,0,0,0,UP 1/2,1,1,0,1,0,3,0,,1,4,1,,0,,2,0,,0,L4CON
crm,psa-crm-2,0,0,0,0,,0,0,0,,0,,0,0,0,0,UP,1,1,0,0,0,120,0,,1,4,2,,0,,2,0,,0,L7OK
"""


def test_show_stat_parsing() -> None:
    rows = stats.parse(SHOW_STAT)
    assert stats.servers(rows) == {"auth": {"psa-auth": "UP", "psa-auth-2": "DOWN"},
                                   "crm": {"psa-crm": "UP 1/2", "psa-crm-2": "UP"}}
    with pytest.raises(ValueError, match="not HAProxy"):
        stats.parse("Unknown command\n")


def test_every_backend_up_verdict() -> None:
    rows = stats.parse(SHOW_STAT)
    assert stats.problems(rows, {"auth": ["psa-auth"], "crm": ["psa-crm-2"]}) == []
    assert stats.problems(rows, {"auth": ["psa-auth", "psa-auth-2"], "crm": ["psa-crm", "psa-crm-3"],
                                 "tickets": ["psa-tickets"]}) == [
        "auth/psa-auth-2 is DOWN", "crm/psa-crm is UP 1/2", "crm/psa-crm-3 is not configured",
        "backend tickets is not configured"]


IP_LB1 = """\
1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever
2: eth0    inet 10.0.20.240/24 brd 10.0.20.255 scope global eth0\\       valid_lft forever
2: eth0    inet 10.0.20.250/24 scope global secondary eth0\\       valid_lft forever preferred_lft forever
"""
IP_LB2 = """\
1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever
2: eth0    inet 10.0.20.241/24 brd 10.0.20.255 scope global eth0\\       valid_lft forever
"""


@pytest.mark.parametrize(
    ("outputs", "verdict"),
    [
        ({"psa-lb-1": IP_LB1, "psa-lb-2": IP_LB2}, ""),
        ({"psa-lb-1": IP_LB2.replace(".241", ".240"), "psa-lb-2": IP_LB2}, "no load balancer holds the VIP"),
        ({"psa-lb-1": IP_LB1, "psa-lb-2": IP_LB2 + IP_LB1.splitlines()[2].replace(".240", ".241") + "\n"},
         "is on 2 load balancers at once (psa-lb-1, psa-lb-2): split brain"),
    ],
)
def test_vip_on_exactly_one_load_balancer(outputs: dict[str, str], verdict: str) -> None:
    found = vip.problem(outputs, VIP)
    assert (verdict in found) if verdict else found == ""
    assert vip.addresses(IP_LB1) == {"127.0.0.1", "10.0.20.240", "10.0.20.250"}


def test_the_vrrp_password_is_sent_but_never_shown() -> None:

    phase = _pair_phase()
    values = generate()
    secret = values["keepalived.auth_pass"]
    ctx = HostContext(load_inventory(SANDBOX_INVENTORY), phase, phase.container(240), Secrets(values))
    changes = keepalived.plan(ctx, fresh())
    [conf] = [c for c in changes if isinstance(c, PutFile)]
    assert f"auth_pass {secret}" in conf.content.reveal() and conf.mode == 0o600
    shown = repr(conf) + str(conf.diff) + json.dumps(plan_json(Plan(changes)), default=str)
    assert secret not in shown and "auth_pass ***" in conf.diff


def test_the_gateway_reaches_a_service_on_two_containers_through_the_load_balancers() -> None:
    """Phase 3: a lost service container is a lost backend, not a lost service (VIP, not a container)."""
    from psa_provision.packaged import PHASES_DIR
    from psa_provision.phases import load_phase
    from psa_provision.services.app.component import service_url

    p3 = load_phase("phase3", PHASES_DIR)
    gw = p3.container(122)
    assert service_url(p3, gw, "auth") == "http://10.0.20.250:3010"
    assert service_url(p3, gw, "reports") == "http://10.0.20.250:3070"
    p2 = load_phase("phase2", PHASES_DIR)
    assert service_url(p2, p2.container(120), "auth") == f"http://{p2.container(121).ip}:3010"
    p0 = load_phase("phase0", PHASES_DIR)
    assert service_url(p0, p0.container(200), "auth") == "http://127.0.0.1:3010"


def _poll(tmp_path: Path, answers: list[str], within_s: float) -> tuple[int, int]:
    """vip.appears run with a fake `ip` printing `answers` in turn (the last one from then on): (exit
    code, how many times it asked)."""
    calls = tmp_path / "calls"
    for i, text in enumerate(answers):
        (tmp_path / f"answer{i}").write_text(text)
    fake = tmp_path / "ip"
    fake.write_text(f"#!/bin/bash\nn=$(cat {calls} 2>/dev/null || echo 0); echo $((n + 1)) > {calls}\n"
                    f"i=$(( n < {len(answers) - 1} ? n : {len(answers) - 1} ))\ncat {tmp_path}/answer$i\n")
    fake.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin"}
    done = subprocess.run(["bash", "-c", vip.appears("10.0.20.240/24", within_s)], env=env, check=False)
    return done.returncode, int(calls.read_text())


def test_the_vip_watch_returns_once_the_vip_is_on_this_load_balancer(tmp_path: Path) -> None:
    mine = "2: eth0    inet 10.0.20.201/24 brd 10.0.20.255 scope global eth0\\\n"
    vip_too = mine + "2: eth0    inet 10.0.20.240/24 scope global secondary eth0\\\n"
    code, asked = _poll(tmp_path, [mine, mine, mine, vip_too], within_s=10)
    assert code == 0 and asked == 4
    other = tmp_path / "never"
    other.mkdir()
    near = mine.replace("10.0.20.201", "10.0.20.24")  # 10.0.20.24 is not the VIP 10.0.20.240
    code, asked = _poll(other, [near], within_s=1)
    assert code == 1 and asked > 3
