"""HAProxy (phase 3's load balancer): its unit, known to facts and health before it has a component."""

COMPONENT = "haproxy"
FILES: tuple[str, ...] = ()
UNITS = ("haproxy",)
