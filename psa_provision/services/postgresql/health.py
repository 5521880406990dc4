"""PostgreSQL's `psa-provision health` probe: the server accepts a query over the local socket."""

PROBE = "probe postgresql runuser -u postgres -- psql -XAt -c \"SELECT 'accepting connections'\""
