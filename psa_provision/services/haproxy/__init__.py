"""HAProxy (phase 3's load balancer, Debian 12's `haproxy`): one frontend per app service on every
address of the load balancer (the VIP included), backends the containers that run the service, each
checked on GET /health; other services add their own sections (services/haproxy/config.py)."""

COMPONENT = "haproxy"
CONF = "/etc/haproxy/haproxy.cfg"
PACKAGES = ("haproxy", "socat")  # socat: `show stat` on the stats socket (health, verify)
UNIT = "haproxy"
FILES: tuple[str, ...] = (CONF,)
UNITS = (UNIT,)
TEMPLATES = {CONF: "haproxy.cfg.j2"}
STATS_SOCKET = "/run/haproxy/admin.sock"  # Debian's default place; level admin, group haproxy
HEALTH_PATH = "/health"  # every app service answers it (psa-platform README)
SHOW_STAT = f"echo 'show stat' | socat stdio unix-connect:{STATS_SOCKET}"
