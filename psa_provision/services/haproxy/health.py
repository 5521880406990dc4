"""HAProxy's `psa-provision health` probe: its unit is active."""

PROBE = "probe haproxy systemctl is-active haproxy"
