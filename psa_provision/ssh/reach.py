"""Is a TCP port open: the quick probes of `doctor` and of waiting for sshd."""

from __future__ import annotations

import socket


def tcp_open(host: str, port: int, timeout: float = 2.0) -> bool:
    """True when a TCP connection to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def reachable(host: str, port: int, timeout: float = 3.0) -> tuple[bool, str]:
    """(a network path to host exists, what was seen): an open port or a refusal both prove the path;
    a timeout or an unreachable network do not."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True, f"TCP {port} open"
    except ConnectionRefusedError:
        return True, f"host answers (TCP {port} refused)"
    except OSError as exc:
        return False, f"no path to {host}:{port} ({exc.strerror or type(exc).__name__})"
