"""keepalived (Debian 12's `keepalived`): the load balancer pair's virtual IP on vmbr20, moved by VRRP
between the two HAProxy containers (unicast: no multicast needed on the bridge)."""

COMPONENT = "keepalived"
CONF = "/etc/keepalived/keepalived.conf"
PACKAGES = ("keepalived",)
UNIT = "keepalived"
FILES: tuple[str, ...] = (CONF,)
UNITS = (UNIT,)
SECRET_FILES = (CONF,)  # auth_pass
TEMPLATES = {CONF: "keepalived.conf.j2"}
SECRET = "keepalived.auth_pass"  # noqa: S105 - the key of the secret, not its value
AUTH_PASS_LENGTH = 8  # VRRPv2 PASS authentication carries 8 characters; keepalived cuts longer ones
# The VIP the apps and users reach the platform on when the phase file's load balancers name none.
VIP = "10.0.20.250/24"
VIRTUAL_ROUTER_ID = 51  # unique per VRRP instance on the segment (1-255)
INTERFACE = "eth0"  # the container's net0 (on vmbr20)
