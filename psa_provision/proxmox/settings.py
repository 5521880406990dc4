"""Where one Proxmox VE API is and how to log in to it: ApiSettings, read from the inventory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ApiSettings:
    """Everything needed to reach one Proxmox VE API (read from the inventory)."""

    host: str
    port: int = 8006
    user: str = "root@pam"
    token_name: str | None = None
    token_secret: str | None = None
    password: str | None = None
    ca_file: str | None = None
    fingerprint: str | None = None
    insecure: bool = False
    http_timeout: float = 30.0
    task_timeout: float = 900.0

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def who(self) -> str:
        return f"{self.user}!{self.token_name}" if self.token_name else self.user



def settings_from_inventory(inv: Any) -> ApiSettings:
    """ApiSettings from an inventory.Inventory (reads the token secret/password now)."""
    px = inv.proxmox
    host, _, port = px.base_url.removeprefix("https://").partition(":")
    auth = px.auth
    secret = auth.secret()
    user, _, token_name = (auth.token_id or auth.user or "").partition("!")
    return ApiSettings(
        host=host, port=int(port or px.port), user=user,
        token_name=token_name or None,
        token_secret=secret if auth.kind == "token" else None,
        password=secret if auth.kind == "ticket" else None,
        ca_file=str(px.tls.ca_file) if px.tls.ca_file else None,
        fingerprint=px.tls.fingerprint, insecure=px.tls.insecure,
        http_timeout=float(px.http_timeout_s), task_timeout=float(px.task_timeout_s))

