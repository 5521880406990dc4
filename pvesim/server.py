"""The HTTPS API server: PVE's envelope, auth, CSRF, schema validation, permissions, dispatch.

One ThreadingHTTPServer with TLS on 127.0.0.1:8006; every request goes through `App.handle`:
faults -> route (501 if unknown) -> auth (401) -> CSRF for non-GET tickets (401) -> schema
validation (400 with `errors`) -> permission check (403) -> handler -> `{"data": ...}`.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from pvesim import schema
from pvesim.accesslog import AccessLog
from pvesim.acl import AclError, PermissionDenied, UserConfig
from pvesim.acl_store import AclStore
from pvesim.auth import Auth, AuthError, Identity, check_permission, require
from pvesim.backend import Backend
from pvesim.faults import Faults, requester
from pvesim.paths import StateDir
from pvesim.tasks import Tasks

PREFIX = "/api2/json"


class ApiError(Exception):
    """An error answered as PVE does: HTTP status, message (reason phrase) and per-param errors."""

    def __init__(self, status: int, message: str, errors: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors


@dataclass
class Reply:
    """Handler result with extra envelope keys (e.g. `total` for task logs)."""

    data: Any
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Request:
    """One validated API call as handlers see it."""

    app: App
    method: str
    template: str
    params: dict[str, str]
    identity: Identity

    def int(self, name: str, default: int | None = None) -> int:
        """An integer parameter (already schema-checked)."""
        value = self.params.get(name)
        if value is None:
            if default is None:
                raise ApiError(400, "Parameter verification failed.",
                               {name: "property is missing and it is not optional"})
            return default
        return int(value)

    def flag(self, name: str) -> bool:
        """A boolean parameter (0/1)."""
        return self.params.get(name) == "1"

    def cfg(self) -> UserConfig:
        """The ACL model as it is now (user.cfg)."""
        return self.app.acl.load()

    def check(self, path: str, *privs: str, any_: bool = False) -> None:
        """$rpcenv->check inside an endpoint: PermissionDenied naming path and privilege."""
        require(self.cfg(), self.identity, path, *privs, any_=any_)

    def allowed(self, path: str, *privs: str, any_: bool = False) -> bool:
        """$rpcenv->check(..., noerr): whether the caller holds the privilege(s) on path."""
        from pvesim import acl

        return acl.check(self.cfg(), self.identity.name, path, privs, any_=any_, noerr=True)

    def node(self) -> str:
        """The node named in the path; unknown nodes fail like PVE's hostname lookup."""
        node = self.params["node"]
        if node not in self.app.nodes:
            raise ApiError(500, f"hostname lookup '{node}' failed - failed to get address info for: {node}: "
                           "Name or service not known")
        if node in self.app.faults.nodes_down():  # pveproxy relays AnyEvent::HTTP's connect error
            raise ApiError(595, "No route to host")
        return node


Handler = Callable[[Request], Any]
HANDLERS: dict[tuple[str, str], Handler] = {}


def route(method: str, template: str) -> Callable[[Handler], Handler]:
    """Register a handler for a schema path template, e.g. route("GET", "/nodes/{node}/lxc")."""
    def register(fn: Handler) -> Handler:
        HANDLERS[(method, template)] = fn
        return fn
    return register


@dataclass
class App:
    """Everything a handler needs: state, nodes, backend, tasks, auth, faults, access log."""

    state: StateDir
    nodes: list[str]
    backend: Backend
    auth: Auth
    settings: dict[str, Any] = field(default_factory=dict)
    faults: Faults = field(init=False)
    tasks: Tasks = field(init=False)
    access: AccessLog = field(init=False)
    acl: AclStore = field(init=False)
    conf_lock: threading.RLock = field(default_factory=threading.RLock)

    def __post_init__(self) -> None:
        self.faults = Faults(self.state.faults)
        self.tasks = Tasks(self.state.tasks, self.faults.task_failure)
        self.access = AccessLog(self.state.access_log)
        self.acl = AclStore(self.state.root / "etc" / "pve", self.auth.default_tokens)

    # -- the request pipeline -----------------------------------------------------------------

    def handle(self, method: str, path: str, params: dict[str, Any], headers: dict[str, str]
               ) -> tuple[int, str, dict[str, Any], str | None]:
        """Answer one request: (status, reason, body, user)."""
        identity: Identity | None = None
        try:
            found = schema.match(path)
            spec = schema.endpoints()[found[0]].get(method) if found else None
            if found is None or spec is None or (method, found[0]) not in HANDLERS:
                raise ApiError(501, f"Method '{method} {PREFIX}{path}' not implemented")
            template, path_params = found
            if (method, template) == ("POST", "/access/ticket") or template == "/access/domains":
                identity = None
            else:
                identity = self._authenticate(method, headers)
            all_params = {**params, **path_params}
            errors = schema.validate(spec, all_params)
            if errors:
                raise ApiError(400, "Parameter verification failed.", errors)
            text = {k: schema.to_text(v) if not isinstance(v, list) else ",".join(map(str, v))
                    for k, v in all_params.items()}
            if identity is not None:
                check_permission(self.acl.load(), identity, spec.get("permissions"), text)
            req = Request(self, method, template, text, identity or Identity("", None, via_ticket=False))
            result = HANDLERS[(method, template)](req)
            reply = result if isinstance(result, Reply) else Reply(result)
            return 200, "OK", {"data": reply.data, **reply.extra}, identity.name if identity else None
        except ApiError as e:
            body: dict[str, Any] = {"data": None, "message": e.message}
            if e.errors:
                body["errors"] = e.errors
            return e.status, e.message, body, identity.name if identity else None
        except AuthError as e:
            return 401, str(e), {"data": None, "message": str(e)}, None
        except PermissionDenied as e:
            return 403, str(e), {"data": None, "message": str(e)}, identity.name if identity else None
        except AclError as e:  # PVE's `die` in the access-control code: a 500 with its text
            return 500, str(e), {"data": None, "message": str(e)}, identity.name if identity else None

    def _authenticate(self, method: str, headers: dict[str, str]) -> Identity:
        """Identity from an API token or a ticket (cookie or header); CSRF for non-GET tickets."""
        authz = headers.get("authorization", "")
        if authz.startswith("PVEAPIToken"):
            return self.auth.check_api_token(authz, self.acl.load(), self.acl.secrets())
        ticket = None
        cookie = SimpleCookie()
        with contextlib.suppress(Exception):  # a malformed cookie is simply no ticket
            cookie.load(headers.get("cookie", ""))
        if "PVEAuthCookie" in cookie:
            ticket = unquote(cookie["PVEAuthCookie"].value)
        elif authz.startswith("PVEAuthCookie="):
            ticket = unquote(authz.split("=", 1)[1])
        if not ticket:
            raise AuthError("No ticket")
        epoch, lifetime = self.faults.ticket_policy()
        user = self.auth.check_ticket(ticket, epoch=epoch, lifetime=lifetime)
        if method != "GET":
            self.auth.check_csrf(headers.get("csrfpreventiontoken"), user)
        return self.auth.ticket_identity(user)


def _reason(text: str) -> str:
    """A reason phrase must be one line of latin-1."""
    line = " ".join(text.split())
    return line.encode("latin-1", "replace").decode("latin-1")[:200]


class _RequestHandler(BaseHTTPRequestHandler):
    server_version = "pve-api-daemon/3.0"
    protocol_version = "HTTP/1.1"
    app: App

    def log_message(self, format: str, *args: Any) -> None:
        """Requests go to the JSON access log, not stderr."""

    def _params(self) -> dict[str, Any]:
        url = urlsplit(self.path)
        params: dict[str, Any] = dict(parse_qsl(url.query, keep_blank_values=True))
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            raw = self.rfile.read(length).decode()
            ctype = self.headers.get("Content-Type", "")
            if "json" in ctype:
                body = json.loads(raw) if raw.strip() else {}
                if not isinstance(body, dict):
                    raise ApiError(400, "Parameter verification failed.", {"_root": "an object is required"})
                params.update(body)
            else:
                params.update(parse_qsl(raw, keep_blank_values=True))
        return params

    def _serve(self) -> None:
        start = time.monotonic()
        app = self.app
        path = urlsplit(self.path).path
        who = requester(self.headers.get("Authorization", ""), self.headers.get("Cookie", ""))
        if app.faults.take("drop", path=path, user=who):
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        delay = app.faults.take("delay", path=path, user=who)
        if delay:
            time.sleep(float(delay.get("seconds", 1)))
        params: dict[str, Any] = {}
        body: dict[str, Any]
        user = None
        injected = app.faults.take("http-error", path=path, user=who)
        try:
            params = self._params()
            if injected:
                msg = str(injected.get("message") or "injected failure (pvesim fault)")
                status, reason, body = int(injected.get("status", 500)), msg, {"data": None, "message": msg}
            elif not path.startswith(PREFIX + "/") and path != PREFIX:
                status, reason, body = 501, "Not Implemented", {"data": None}
            else:
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, reason, body, user = app.handle(self.command, path[len(PREFIX):] or "/", params,
                                                        headers)
        except ApiError as e:
            status, reason, body = e.status, e.message, {"data": None, "message": e.message}
            if e.errors:
                body["errors"] = e.errors
        except Exception as e:  # any bug is a 500 with its text, like PVE; the traceback goes to api.log
            traceback.print_exc()
            status, reason, body = 500, str(e) or type(e).__name__, {"data": None, "message": str(e)}
        payload = json.dumps(body).encode()
        self.send_response(status, _reason(reason))
        self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "max-age=0")
        self.end_headers()
        self.wfile.write(payload)
        app.access.record(self.command, path, params, status, user, time.monotonic() - start,
                          reason if status >= 400 else None)

    do_GET = do_POST = do_PUT = do_DELETE = _serve


class ApiServer(ThreadingHTTPServer):
    """TLS-wrapped threading server bound to 127.0.0.1:8006."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def handle_error(self, request: Any, client_address: Any) -> None:
        """TLS handshakes refused (client without our CA) are one line in api.log, not a traceback."""
        err = sys.exc_info()[1]
        if isinstance(err, (ssl.SSLError, ConnectionError)):
            print(f"connection from {client_address[0]}: {err}", file=sys.stderr, flush=True)
            return
        super().handle_error(request, client_address)


def make_server(app: App, cert: Path, key: Path, host: str = "127.0.0.1", port: int = 8006) -> ApiServer:
    """Bind the API (TLS with the sandbox CA's server certificate)."""
    handler = type("Handler", (_RequestHandler,), {"app": app})
    server = ApiServer((host, port), handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    server.socket = ctx.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    return server
