"""The HTTP session to a Proxmox VE API: the only importer of proxmoxer and requests.

Opens the session (API token or ticket login), verifies TLS (system CAs, a CA file, or a pinned
certificate fingerprint), sends one request (renewing an expired ticket once), counts the calls, and
turns every HTTP failure into one clear ProxmoxError sentence.
"""

from __future__ import annotations

import hashlib
import re
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from proxmoxer import ProxmoxAPI
from proxmoxer.core import AuthenticationError, ResourceException
from requests.adapters import HTTPAdapter

from psa_provision.errors import ConnectionFailed, ProxmoxAuthError, ProxmoxError
from psa_provision.proxmox.settings import ApiSettings

RETRY_STATUS = frozenset({502, 503, 504})  # gateway/overload answers; PVE's 500 is a real error
# what a failed request raises: transient() tells a lost answer, map_error() says it in one sentence
TRANSPORT_ERRORS = (ResourceException, requests.exceptions.RequestException, AuthenticationError)
Notify = Callable[[str], None]


def normalize_fingerprint(fingerprint: str) -> str:
    """`AB:CD:..` or `abcd..` -> lowercase hex without colons (urllib3's form); checks it is sha256."""
    hexed = fingerprint.replace(":", "").strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", hexed):
        raise ProxmoxError(f"TLS fingerprint {fingerprint!r} is not a SHA-256 fingerprint",
                           hint="write 64 hex digits, colons allowed (as `pvenode cert info` shows)")
    return hexed


def pretty_fingerprint(hexed: str) -> str:
    """lowercase hex -> `AB:CD:...` as Proxmox shows it."""
    return ":".join(hexed[i:i + 2] for i in range(0, len(hexed), 2)).upper()


def peer_fingerprint(host: str, port: int, timeout: float) -> str:
    """The SHA-256 of the certificate the server presents (no CA check: for pinning only)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=timeout) as sock, \
            ctx.wrap_socket(sock, server_hostname=host) as tls:
        der = tls.getpeercert(binary_form=True)
    if not der:
        raise ProxmoxError(f"{host}:{port} presented no TLS certificate")
    return hashlib.sha256(der).hexdigest()


class FingerprintAdapter(HTTPAdapter):
    """A requests adapter that accepts exactly one server certificate, by its SHA-256."""

    def __init__(self, fingerprint: str) -> None:
        self.fingerprint = normalize_fingerprint(fingerprint)
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["assert_fingerprint"] = self.fingerprint
        super().init_poolmanager(*args, **kwargs)


@dataclass
class CallCounter:
    """Counts HTTP requests made to the API (GET vs writes), for the performance report."""

    reads: int = 0
    writes: int = 0
    by_path: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def total(self) -> int:
        return self.reads + self.writes

    def hook(self, response: requests.Response, *args: object, **kwargs: object) -> None:
        """Count one answered request (called from whichever thread sent it)."""
        method = (response.request.method or "GET").upper()
        path = re.sub(r"^https://[^/]+/api2/json", "", (response.request.url or "").split("?")[0])
        key = f"{method} {re.sub(r'UPID:[^/]+', 'UPID', path)}"
        with self._lock:
            if method == "GET":
                self.reads += 1
            else:
                self.writes += 1
            self.by_path[key] = self.by_path.get(key, 0) + 1


def verify_setting(settings: ApiSettings) -> bool | str:
    """The `verify` value for requests: a CA file path, False (fingerprint/insecure), or True."""
    if settings.ca_file:
        ca = Path(settings.ca_file).expanduser()
        if not ca.is_file():
            raise ProxmoxError(f"CA file {ca} does not exist",
                               hint="fix proxmox.tls.ca_file in the inventory")
        return str(ca)
    return not (settings.fingerprint or settings.insecure)


def map_error(exc: BaseException, settings: ApiSettings, what: str) -> ProxmoxError | ConnectionFailed:
    """One clear sentence for a failed API call (`what` names the call, e.g. `GET /version`)."""
    if isinstance(exc, requests.exceptions.SSLError):
        text = str(exc)
        seen = re.search(r'got "([0-9a-f]+)"', text)
        if seen:
            return ProxmoxError(
                f"TLS fingerprint mismatch for {settings.url}: the server presents "
                f"{pretty_fingerprint(seen.group(1))}",
                hint="if that is your Proxmox host's certificate, put it in proxmox.tls.fingerprint")
        return ProxmoxError(f"TLS verification of {settings.url} failed ({_short(text)}); "
                            f"the server presents {_seen_fingerprint(settings)}",
                            hint="compare that with `pvenode cert info` on the host; if it is the host's, "
                                 "set proxmox.tls.ca_file (its CA) or proxmox.tls.fingerprint")
    if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
        return ConnectionFailed(
            f"Proxmox API {settings.url} is unreachable ({type(exc).__name__}: {_short(str(exc))})",
            hint="check proxmox.host/port in the inventory and that the API is up (sandbox: pvesim up)")
    if isinstance(exc, AuthenticationError):
        return ProxmoxAuthError(f"Proxmox rejected the login of {settings.user} at {settings.url}",
                                hint="check the user and password in the inventory")
    if isinstance(exc, ResourceException):
        return map_http(exc.status_code, str(exc.content or ""), exc.errors, settings, what)
    return ProxmoxError(f"{what} failed: {exc}")


def _seen_fingerprint(settings: ApiSettings) -> str:
    """The SHA-256 fingerprint of the certificate the API presents, for a TLS error message."""
    try:
        seen = peer_fingerprint(settings.host, settings.port, settings.http_timeout)
    except (OSError, ProxmoxError) as exc:
        return f"a certificate whose fingerprint could not be read ({exc})"
    return f"the certificate with SHA-256 fingerprint {pretty_fingerprint(seen)}"


def map_http(status: int, reason: str, errors: object, settings: ApiSettings, what: str) -> ProxmoxError:
    """Map an HTTP status + PVE reason phrase/errors to a ProxmoxError subclass."""
    detail = reason.strip()
    if isinstance(errors, dict) and errors:
        detail = f"{detail} ({'; '.join(f'{k}: {str(v).strip()}' for k, v in errors.items())})"
    if status == 401:
        return ProxmoxAuthError(f"Proxmox rejected the credentials of {settings.who} (401 {detail})",
                                hint="check the token id and its secret (env var or file in the inventory)")
    if status == 403:
        privilege = re.search(r"\(([^)]*)\)", detail)
        named = privilege.group(1) if privilege else detail
        return ProxmoxAuthError(f"{settings.who} lacks a privilege for {what}: {named}",
                                hint="grant the PSAProvision role on /vms, /storage, /nodes, "
                                     "/sdn/zones/localnetwork, not /vms/<vmid>: destroying a container "
                                     "deletes the ACLs of its own path; `psa-provision doctor` lists what "
                                     "is missing")
    return ProxmoxError(f"{what} failed: {status} {detail}".rstrip())


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def transient(exc: BaseException) -> str | None:
    """Why a call's answer was lost (`503 Service Unavailable`, `timeout`), or None for a real answer."""
    if isinstance(exc, requests.exceptions.SSLError):
        return None
    if isinstance(exc, requests.exceptions.Timeout):
        return "no answer (timeout)"
    if isinstance(exc, requests.exceptions.ConnectionError):
        return "connection lost"
    if isinstance(exc, ResourceException) and exc.status_code in RETRY_STATUS:
        return f"{exc.status_code} {_short(str(exc.status_message or ''), 60)}".strip()
    return None


def open_api(settings: ApiSettings, counter: CallCounter) -> Any:
    """An authenticated proxmoxer session (TLS as configured, calls counted by `counter`)."""
    verify = verify_setting(settings)
    if settings.fingerprint:
        check_pin_before_login(settings)
    common: dict[str, Any] = {"port": settings.port, "verify_ssl": verify, "timeout": settings.http_timeout}
    try:
        if settings.token_name:
            api = ProxmoxAPI(settings.host, user=settings.user, token_name=settings.token_name,
                             token_value=settings.token_secret or "", **common)
        else:
            api = ProxmoxAPI(settings.host, user=settings.user, password=settings.password or "", **common)
    except (requests.exceptions.RequestException, AuthenticationError) as exc:
        raise map_error(exc, settings, "POST /access/ticket") from exc
    session = api._store["session"]  # proxmoxer keeps its requests.Session there
    if settings.fingerprint:
        session.mount(f"{settings.url}/", FingerprintAdapter(settings.fingerprint))
    session.hooks["response"].append(counter.hook)
    return api


def send(api: Any, settings: ApiSettings, method: str, path: str, params: dict[str, Any] | None,
         notify: Notify) -> Any:
    """One HTTP request; a 401 on a ticket session logs in again once and repeats the request."""
    call: Callable[..., Any] = getattr(api(path.strip("/")), method.lower())
    try:
        return call(**(params or {}))
    except ResourceException as exc:
        if exc.status_code != 401 or settings.token_name or not settings.password:
            raise
    login_again(api, settings)
    notify(f"Proxmox API ticket of {settings.user} expired: logged in again")
    return call(**(params or {}))


def login_again(api: Any, settings: ApiSettings) -> None:
    """Renew the ticket + CSRF token of a password session (PVE tickets live 2 h)."""
    if settings.fingerprint:
        check_pin_before_login(settings)
    auth = api._store["session"].auth  # proxmoxer's ProxmoxHTTPAuth holds the ticket
    auth._get_new_tokens(password=settings.password)


def check_pin_before_login(settings: ApiSettings) -> None:
    """With a pinned fingerprint, check it before any credential is sent (ticket login too)."""
    want = normalize_fingerprint(settings.fingerprint or "")
    try:
        seen = peer_fingerprint(settings.host, settings.port, settings.http_timeout)
    except OSError as exc:
        raise ConnectionFailed(f"Proxmox API {settings.url} is unreachable ({exc})",
                               hint="check proxmox.host/port in the inventory") from exc
    if seen != want:
        raise ProxmoxError(
            f"TLS fingerprint mismatch for {settings.url}: the server presents {pretty_fingerprint(seen)}",
            hint="if that is your Proxmox host's certificate, put it in proxmox.tls.fingerprint")
