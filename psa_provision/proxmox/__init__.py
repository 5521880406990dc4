"""The Proxmox VE API adapter: typed actions in, PVE's answers out; REST paths are known here alone.

settings.py (where the API is), routes.py (actions -> method and path, read-backs of lost writes),
session.py (the only importer of proxmoxer and requests: TLS, login, one HTTP request, error
sentences) and client.py (ProxmoxClient: typed reads, waited writes, tasks; connect).
"""

from psa_provision.proxmox.client import (
    ProxmoxClient,
    connect,
    connect_settings,
    inherited_privileges,
)
from psa_provision.proxmox.routes import (
    PURGE,
    ROUTES,
    Action,
    TaskTrack,
    Write,
    WriteEffect,
    config_has,
    task_succeeded,
    upid_node,
    write_effect,
)
from psa_provision.proxmox.session import (
    CallCounter,
    FingerprintAdapter,
    Notify,
    map_error,
    map_http,
    normalize_fingerprint,
    peer_fingerprint,
    pretty_fingerprint,
    transient,
    verify_setting,
)
from psa_provision.proxmox.settings import ApiSettings, settings_from_inventory

__all__ = [
    "PURGE", "ROUTES", "Action", "ApiSettings", "CallCounter", "FingerprintAdapter", "Notify",
    "ProxmoxClient",
    "TaskTrack", "Write", "WriteEffect", "config_has", "connect", "connect_settings", "inherited_privileges",
    "map_error", "map_http", "normalize_fingerprint", "peer_fingerprint", "pretty_fingerprint",
    "settings_from_inventory", "task_succeeded", "transient", "upid_node", "verify_setting", "write_effect",
]
