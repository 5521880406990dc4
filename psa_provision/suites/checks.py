"""Helpers of the verify checks (services/*/checks.py): parse what a guest or the Proxmox API answered
(pure, unit-tested), and `output` for a guest command that must succeed."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

_PG_UNITS = {"B": 1, "kB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}
_SIZE_UNITS = {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
LOOPBACK = ("127.", "::1", "[::1]")
WILDCARDS = frozenset({"0.0.0.0", "::", "[::]", "*"})  # noqa: S104 - addresses to look for, not to bind
SSH_PORT = 22


def listening_ports(sockets: Iterable[str], port: int) -> list[str]:
    """testinfra socket specs (`tcp://127.0.0.1:5432`, `tcp://::1:5432`) listening on `port`."""
    return sorted(s for s in sockets if s.startswith(("tcp://", "tcp6://")) and s.endswith(f":{port}"))


def loopback_only(sockets: Iterable[str], also: str = "127.0.0.1") -> bool:
    """True when every socket is bound to loopback or to `also` (the container's private IP when
    other containers use the service), never to a wildcard (0.0.0.0, ::) or another address."""
    def allowed(sock: str) -> bool:
        address = sock.split("://", 1)[1].rsplit(":", 1)[0]
        return address.startswith(LOOPBACK) or address == also
    return all(allowed(s) for s in sockets)


def wildcard_listeners(sockets: Iterable[str], allowed_ports: Iterable[int]) -> list[str]:
    """TCP sockets (testinfra specs) bound to a wildcard address on a port not in `allowed_ports`."""
    allowed = set(allowed_ports)
    found = []
    for sock in sockets:
        if not sock.startswith(("tcp://", "tcp6://")):
            continue
        address, _, port = sock.split("://", 1)[1].rpartition(":")
        if address.split("%")[0] in WILDCARDS and port.isdigit() and int(port) not in allowed:
            found.append(sock)
    return sorted(found)


def public_ports(services: Mapping[str, Mapping[str, Any]], hostname: str,
                 gateway: str = "api-gateway") -> set[int]:
    """Ports a container may open on every address: SSH, the gateway's if it runs there, and those of
    its services that a gateway on another container must reach. Stores never (they bind an IP)."""
    def hosts(svc: Mapping[str, Any]) -> list[Any]:  # every container running it (phase 3: also_on)
        return list(svc.get("hostnames") or [svc.get("hostname")])

    gateway_hosts = hosts(services.get(gateway, {}))
    ports = {SSH_PORT}
    for name, svc in services.items():
        if hostname in hosts(svc) and (name == gateway or hostname not in gateway_hosts):
            ports.add(int(svc["port"]))
    return ports


def net0_fields(net0: str) -> dict[str, str]:
    """`name=eth0,bridge=vmbr20,ip=10.0.20.100/24,gw=10.0.20.1` -> {name: eth0, bridge: vmbr20, ...}."""
    return dict(part.split("=", 1) for part in net0.split(",") if "=" in part)


def pg_bytes(value: str) -> int | str:
    """A PostgreSQL memory setting in bytes (`4GB`, `20MB`, `128kB`); other values unchanged (`1.1`)."""
    m = re.fullmatch(r"\s*(\d+)\s*(B|kB|MB|GB|TB)\s*", value)
    if m is None:
        return value.strip()
    return int(m.group(1)) * _PG_UNITS[m.group(2)]


def size_bytes(value: str) -> int:
    """A heap/memory size (`4g`, `512m`, `2gb`, `1073741824`) in bytes."""
    m = re.fullmatch(r"\s*(\d+)\s*([bkmgt]?)b?\s*", value.lower())
    if m is None:
        raise ValueError(f"not a size: {value!r}")
    return int(m.group(1)) * _SIZE_UNITS[m.group(2) or "b"]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_token(secret: str, *, subject: str = "psa-verify", ttl_s: int = 300, now: int | None = None) -> str:
    """A short-lived HS256 JWT with the claims the gateway checks (sub, email, role, jti, iat, exp)."""
    issued = int(time.time()) if now is None else now
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    claims = {"sub": subject, "email": f"{subject}@psa-platform.local", "role": "admin",
              "jti": uuid.uuid4().hex, "iat": issued, "exp": issued + ttl_s}
    payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    signature = hmac.new(secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64url(signature)}"


def rabbit_tags(tags: object) -> list[str]:
    """A user's tags from `rabbitmqctl list_users --formatter json`: a list, or `[a, b]` text (older)."""
    if isinstance(tags, list):
        return [str(t) for t in tags]
    text = str(tags).strip().strip("[]")
    return [t.strip() for t in text.split(",") if t.strip()]


def output(host: Any, command: str, what: str) -> str:
    """stdout of a command that must succeed; the failure names `what` and the command's complaint."""
    result = host.run(command)
    complaint = (result.stderr.strip() or result.stdout.strip()).splitlines()[-1:] or [""]
    assert result.rc == 0, f"{what} failed (exit {result.rc}): {complaint[0][:200]}"
    return str(result.stdout)


def remote_command(ssh_config: Path | None, alias: str, command: str) -> list[str]:
    """argv running `command` on a host, for checks that feed a secret on stdin (never in argv)."""
    if ssh_config is None:
        return ["sh", "-c", command]
    return ["ssh", "-F", str(ssh_config), alias, command]


def assert_running_and_enabled(host: Any, unit: str) -> None:
    """The systemd unit runs now and starts at boot (testinfra's `host.service`)."""
    service = host.service(unit)
    assert service.is_running, f"{unit} is not running"
    assert service.is_enabled, f"{unit} is not enabled at boot"
