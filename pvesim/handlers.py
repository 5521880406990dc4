"""Importing this registers every API endpoint with the server (each handlers_* module registers its own)."""

from pvesim import (  # noqa: F401
    handlers_access,
    handlers_cluster,
    handlers_config,
    handlers_firewall,
    handlers_ha,
    handlers_ha_status,
    handlers_lxc,
    handlers_rrd,
    handlers_snapshot,
    handlers_storage,
    handlers_tasks,
    handlers_users,
    handlers_vzdump,
)
