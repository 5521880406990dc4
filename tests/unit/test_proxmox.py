"""The proxmox adapter against a tiny local HTTPS stub: TLS (CA, pinning), error mapping, retries, tasks.

The stub is not Proxmox (pvesim is, see tests/e2e); it only answers what each test scripts, so
these tests check OUR handling of TLS, statuses and task results.
"""

from __future__ import annotations

import datetime
import hashlib
import http.server
import ipaddress
import json
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from psa_provision import proxmox
from psa_provision.errors import ConnectionFailed, ProxmoxAuthError, ProxmoxError, TaskError
from psa_provision.proxmox import Write

UPID = "UPID:pve1:00001234:00005678:65000000:vzcreate:200:root@pam!psa-provision:"
Reply = tuple[int, str, object]  # status, reason phrase, data


@dataclass
class Stub:
    """Scripted answers per (method, path); a list answers in turn, the last one repeats."""

    routes: dict[tuple[str, str], list[Reply]] = field(default_factory=dict)
    seen: list[tuple[str, str, str]] = field(default_factory=list)

    def answer(self, method: str, path: str, body: str) -> Reply:
        self.seen.append((method, path, body))
        replies = self.routes.get((method, path.split("?")[0].removeprefix("/api2/json")))
        if not replies:
            return 501, "No such route", None
        return replies.pop(0) if len(replies) > 1 else replies[0]


def make_cert(tmp: Path) -> tuple[Path, Path, str]:
    """A self-signed cert for 127.0.0.1 (it is its own CA); returns cert, key, sha256 hex."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pve-stub")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path, hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


@dataclass
class Server:
    stub: Stub
    port: int
    ca: Path
    fingerprint: str

    def settings(self, **kw: object) -> proxmox.ApiSettings:
        base: dict[str, object] = {"host": "127.0.0.1", "port": self.port, "user": "root@pam",
                                   "token_name": "psa-provision", "token_secret": "s3cret-token",
                                   "ca_file": str(self.ca), "http_timeout": 5.0, "task_timeout": 10.0}
        base.update(kw)
        return proxmox.ApiSettings(**base)  # type: ignore[arg-type]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    cert, key, fp = make_cert(tmp_path)
    stub = Stub()
    stub.routes[("GET", "/version")] = [(200, "OK", {"version": "9.0.3", "release": "9.0"})]

    class Handler(http.server.BaseHTTPRequestHandler):
        def _reply(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            status, reason, data = stub.answer(self.command, self.path, body)
            payload = json.dumps({"data": data}).encode()
            self.send_response(status, reason)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = _reply

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield Server(stub, httpd.server_address[1], cert, fp)
    httpd.shutdown()
    httpd.server_close()


def test_ca_file_verifies_and_counts_calls(server: Server) -> None:
    client = proxmox.connect_settings(server.settings())
    assert client.version()["version"] == "9.0.3"
    assert client.counter.reads == 2  # connect proves the session with GET /version, then ours
    assert client.counter.by_path == {"GET /version": 2}


def test_system_cas_reject_self_signed(server: Server) -> None:
    with pytest.raises(ProxmoxError, match=r"TLS verification of https://127\.0\.0\.1:.* failed"):
        proxmox.connect_settings(server.settings(ca_file=None))


def test_pinned_fingerprint_accepts_the_right_cert(server: Server) -> None:
    pretty = proxmox.pretty_fingerprint(server.fingerprint)
    client = proxmox.connect_settings(server.settings(ca_file=None, fingerprint=pretty))
    assert client.version()["release"] == "9.0"


def test_pinned_fingerprint_mismatch_names_what_the_server_shows(server: Server) -> None:
    wrong = proxmox.pretty_fingerprint("ab" * 32)
    with pytest.raises(ProxmoxError) as info:
        proxmox.connect_settings(server.settings(ca_file=None, fingerprint=wrong))
    assert "fingerprint mismatch" in info.value.message
    assert proxmox.pretty_fingerprint(server.fingerprint) in info.value.message
    assert server.stub.seen == []  # no request (and no credential) went out


def test_pinning_adapter_rejects_a_swapped_cert(server: Server) -> None:
    """The per-request pin (not only the pre-login probe) refuses another certificate."""
    client = proxmox.connect_settings(server.settings(ca_file=None,
                                                      fingerprint=proxmox.pretty_fingerprint(server.fingerprint)))
    session = client._api._store["session"]
    session.mount(client.settings.url + "/", proxmox.FingerprintAdapter("cd" * 32))
    with pytest.raises(ProxmoxError, match="fingerprint mismatch"):
        client.version()


def test_401_names_the_token(server: Server) -> None:
    server.stub.routes[("GET", "/version")] = [(401, "authentication failure", None)]
    with pytest.raises(ProxmoxAuthError, match=r"root@pam!psa-provision \(401"):
        proxmox.connect_settings(server.settings())


def test_403_names_the_missing_privilege(server: Server) -> None:
    client = proxmox.connect_settings(server.settings())
    server.stub.routes[("POST", "/nodes/pve1/lxc")] = [
        (403, "Permission check failed (/vms/200, VM.Allocate)", None)]
    with pytest.raises(ProxmoxAuthError, match=r"privilege for POST /nodes/pve1/lxc: /vms/200, VM\.Allocate"):
        client.perform(Write("create", "pve1", 200, {"vmid": 200}))


def test_parameter_errors_are_listed(server: Server) -> None:
    client = proxmox.connect_settings(server.settings())
    path = "/nodes/pve1/lxc/200/config"
    server.stub.routes[("PUT", path)] = [(400, "Parameter verification failed.", None)]
    with pytest.raises(ProxmoxError, match=f"PUT {path} failed: 400 Parameter verification"):
        client.perform(Write("config", "pve1", 200, {"cores": 2}))


def test_unreachable_api_is_one_sentence() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again when the block ends: nobody listens there
    settings = proxmox.ApiSettings(host="127.0.0.1", port=port, token_name="t", token_secret="x",
                                   http_timeout=2.0)
    with pytest.raises(ConnectionFailed, match=f"Proxmox API https://127.0.0.1:{port} is unreachable"):
        proxmox.connect_settings(settings)


def sent(server: Server, method: str, path: str) -> int:
    """How many times the stub received `method path`."""
    return sum(1 for m, p, _ in server.stub.seen if m == method and p.split("?")[0] == "/api2/json" + path)


def quiet(server: Server, notes: list[str], **kw: object) -> proxmox.ProxmoxClient:
    """A client whose retry announcements land in `notes`."""
    return proxmox.connect_settings(server.settings(**kw), notes.append)


def test_get_retries_with_backoff_and_says_so(server: Server) -> None:
    notes: list[str] = []
    client = quiet(server, notes)
    server.stub.routes[("GET", "/nodes")] = [(503, "busy", None), (502, "Bad Gateway", None),
                                             (200, "OK", [{"node": "pve1", "status": "online"}])]
    assert client.request("GET", "/nodes") == [{"node": "pve1", "status": "online"}]
    assert [n.split(";")[1].strip() for n in notes] == ["retry 1/3 in 0.5 s", "retry 2/3 in 1 s"]
    assert notes[0].startswith("Proxmox API GET /nodes: 503 ")


def test_get_gives_up_after_three_retries(server: Server) -> None:
    notes: list[str] = []
    client = quiet(server, notes)
    server.stub.routes[("GET", "/nodes")] = [(503, "busy", None)]
    with pytest.raises(ProxmoxError, match="GET /nodes failed: 503"):
        client.request("GET", "/nodes")
    assert len(notes) == 3


def test_a_500_is_an_answer_not_retried(server: Server) -> None:
    notes: list[str] = []
    client = quiet(server, notes)
    server.stub.routes[("GET", "/nodes")] = [(500, "CT 200 does not exist", None), (200, "OK", [])]
    with pytest.raises(ProxmoxError, match="500 CT 200 does not exist"):
        client.request("GET", "/nodes")
    assert notes == []


def test_a_write_without_read_back_is_never_repeated(server: Server) -> None:
    notes: list[str] = []
    client = quiet(server, notes)
    reboot = ("POST", "/nodes/pve1/lxc/200/status/reboot")
    server.stub.routes[reboot] = [(503, "busy", None), (200, "OK", None)]
    with pytest.raises(ProxmoxError, match="503"):
        client.reboot("pve1", 200)
    assert notes == [] and sent(server, *reboot) == 1


def test_a_lost_start_whose_task_runs_is_not_sent_again(server: Server) -> None:
    notes: list[str] = []
    client = quiet(server, notes)
    start = ("POST", "/nodes/pve1/lxc/200/status/start")
    upid = UPID.replace("vzcreate", "vzstart")
    server.stub.routes[start] = [(504, "Gateway Timeout", None), (200, "OK", "UPID:must-not-be-sent")]
    server.stub.routes[("GET", "/nodes/pve1/tasks")] = [(200, "OK", [{"upid": upid, "id": "200",
                                                                      "type": "vzstart"}])]
    assert client.send(Write("start", "pve1", 200)) == upid
    assert sent(server, *start) == 1
    assert "it took effect" in notes[-1]
    query = next(s[1] for s in server.stub.seen if s[1].startswith("/api2/json/nodes/pve1/tasks"))
    assert "typefilter=vzstart" in query and "vmid=200" in query and "since=" in query


def test_a_lost_start_that_did_nothing_is_sent_again(server: Server) -> None:
    notes: list[str] = []
    client = quiet(server, notes)
    start = ("POST", "/nodes/pve1/lxc/200/status/start")
    server.stub.routes[start] = [(503, "busy", None), (200, "OK", None)]
    server.stub.routes[("GET", "/nodes/pve1/tasks")] = [(200, "OK", [])]
    server.stub.routes[("GET", "/nodes/pve1/lxc/200/status/current")] = [(200, "OK", {"status": "stopped"})]
    assert client.send(Write("start", "pve1", 200)) is None
    assert sent(server, *start) == 2
    assert len(notes) == 1


def test_a_lost_config_put_that_landed_is_not_repeated(server: Server) -> None:
    notes: list[str] = []
    client = quiet(server, notes)
    put = ("PUT", "/nodes/pve1/lxc/200/config")
    server.stub.routes[put] = [(503, "busy", None), (200, "OK", None)]
    server.stub.routes[("GET", "/nodes/pve1/lxc")] = [(200, "OK", [{"vmid": 200}])]
    landed = {"memory": 2048, "digest": "new"}
    server.stub.routes[("GET", "/nodes/pve1/lxc/200/config")] = [(200, "OK", landed)]
    client.perform(Write("config", "pve1", 200, {"memory": 2048, "digest": "old"}))
    assert sent(server, *put) == 1


def test_an_expired_ticket_logs_in_again(server: Server) -> None:
    notes: list[str] = []
    ticket = {"ticket": "PVE:root@pam:1", "CSRFPreventionToken": "csrf", "username": "root@pam"}
    server.stub.routes[("POST", "/access/ticket")] = [(200, "OK", ticket)]
    client = quiet(server, notes, token_name=None, token_secret=None, password="pw")
    server.stub.routes[("GET", "/nodes")] = [(401, "No ticket", None), (200, "OK", [])]
    assert client.request("GET", "/nodes") == []
    assert sent(server, "POST", "/access/ticket") == 2
    assert notes == ["Proxmox API ticket of root@pam expired: logged in again"]


def test_a_token_401_is_not_a_login_to_renew(server: Server) -> None:
    client = proxmox.connect_settings(server.settings(), [].append)
    server.stub.routes[("GET", "/nodes")] = [(401, "invalid token", None), (200, "OK", [])]
    with pytest.raises(ProxmoxAuthError, match="401"):
        client.request("GET", "/nodes")


@pytest.mark.parametrize(("write", "want"), [
    (Write("create", "pve1", 200, {"vmid": 200}), ("exists", "vzcreate", 200)),
    (Write("start", "pve1", 200), ("running", "vzstart", 200)),
    (Write("stop", "pve1", 200), ("stopped", "vzstop", 200)),
    (Write("shutdown", "pve1", 200, {"timeout": 60}), ("stopped", "vzshutdown", 200)),
    (Write("delete", "pve1", 200, {"purge": 1}), ("absent", "vzdestroy", 200)),
    (Write("config", "pve1", 200, {"memory": 2048, "digest": "d"}), ("config", None, 200)),
    (Write("download-template", "pve1", params={"storage": "local", "template": "t.tar.zst"}),
     ("template", "download", None)),
    (Write("reboot", "pve1", 200), None),
    (Write("snapshot", "pve1", 200, {"snapname": "s"}), None),
    (Write("resize", "pve1", 200, {"disk": "rootfs", "size": "+1G"}), None),
    (Write("create", "pve1", None, {}), None),
])
def test_which_writes_can_be_read_back(write: Write, want: tuple[str, str | None, int | None] | None) -> None:
    effect = proxmox.write_effect(write)
    assert (None if effect is None else (effect.kind, effect.task, effect.vmid)) == want


def test_config_read_back_compares_values_and_deletes() -> None:
    write = Write("config", "pve1", 200, {"memory": 2048, "delete": "swap", "digest": "x"})
    effect = proxmox.write_effect(write)
    assert effect is not None
    assert proxmox.config_has({"memory": 2048, "digest": "y"}, effect.values)
    assert not proxmox.config_has({"memory": 2048, "swap": 512}, effect.values)
    assert not proxmox.config_has({"memory": 1024}, effect.values)


def _task(server: Server, *statuses: dict[str, object], log: Callable[[], list[dict[str, object]]]) -> None:
    base = "/nodes/pve1/tasks/" + UPID
    server.stub.routes[("GET", base + "/status")] = [(200, "OK", s) for s in statuses]
    server.stub.routes[("GET", base + "/log")] = [(200, "OK", log())]
    server.stub.routes[("POST", "/nodes/pve1/lxc")] = [(200, "OK", UPID)]


def test_task_waits_until_stopped_and_accepts_warnings(server: Server) -> None:
    client = proxmox.connect_settings(server.settings())
    _task(server, {"status": "running"}, {"status": "stopped", "exitstatus": "WARNINGS: 2"}, log=list)
    status = client.perform(Write("create", "pve1", 200, {"vmid": 200}))
    assert status["exitstatus"] == "WARNINGS: 2"


def test_failed_task_carries_the_last_log_lines(server: Server) -> None:
    client = proxmox.connect_settings(server.settings())
    lines = [{"n": i, "t": f"line {i}"} for i in range(1, 16)]
    failed = {"status": "stopped", "exitstatus": "unable to create CT 200 - disk full", "type": "vzcreate"}
    _task(server, failed, log=lambda: lines)
    with pytest.raises(TaskError) as info:
        client.perform(Write("create", "pve1", 200, {"vmid": 200}))
    text = info.value.message
    assert "vzcreate on pve1 failed: unable to create CT 200 - disk full" in text
    assert "line 15" in text and "line 6" in text and "line 5" not in text


def test_task_timeout_says_which_setting(server: Server) -> None:
    client = proxmox.connect_settings(server.settings(task_timeout=0.3))
    _task(server, {"status": "running"}, log=list)
    with pytest.raises(TaskError, match="still running after 0 s") as info:
        client.perform(Write("create", "pve1", 200, {"vmid": 200}))
    assert "task_timeout" in (info.value.hint or "")


def test_get_container_is_none_when_absent(server: Server) -> None:
    client = proxmox.connect_settings(server.settings())
    server.stub.routes[("GET", "/nodes/pve1/lxc")] = [(200, "OK", [{"vmid": 201}])]
    assert client.get_container("pve1", 200) is None
    server.stub.routes[("GET", "/nodes/pve1/lxc")] = [(200, "OK", [{"vmid": "200"}])]
    config = {"hostname": "x", "digest": "d"}
    server.stub.routes[("GET", "/nodes/pve1/lxc/200/config")] = [(200, "OK", config)]
    assert client.get_container("pve1", 200) == {"hostname": "x", "digest": "d"}


@pytest.mark.parametrize(("given", "want"), [
    ("AB:" * 31 + "CD", "ab" * 31 + "cd"),
    ("ab" * 32, "ab" * 32),
])
def test_fingerprint_forms(given: str, want: str) -> None:
    assert proxmox.normalize_fingerprint(given) == want


def test_fingerprint_must_be_sha256() -> None:
    with pytest.raises(ProxmoxError, match="not a SHA-256 fingerprint"):
        proxmox.normalize_fingerprint("AB:CD")


@pytest.mark.parametrize(("exitstatus", "ok"), [("OK", True), ("WARNINGS: 3", True), ("interrupted", False),
                                                 (None, False), ("", False)])
def test_task_success(exitstatus: str | None, ok: bool) -> None:
    assert proxmox.task_succeeded(exitstatus) is ok


def test_upid_node() -> None:
    assert proxmox.upid_node(UPID) == "pve1"
    with pytest.raises(ProxmoxError):
        proxmox.upid_node("nope")


def test_permissions_of_a_path_or_none_when_not_implemented(server: Server) -> None:
    client = proxmox.connect_settings(server.settings())
    server.stub.routes[("GET", "/access/permissions")] = [
        (200, "OK", {"/vms/200": {"VM.Audit": 1, "VM.PowerMgmt": 1, "VM.Allocate": 0}})]
    # 0 is the propagate flag of a privilege held (e.g. through a pool), not a privilege denied
    assert client.permissions("/vms/200") == {"VM.Audit", "VM.PowerMgmt", "VM.Allocate"}
    server.stub.routes[("GET", "/access/permissions")] = [(501, "Method not implemented", None)]
    assert client.permissions("/vms/200") is None
