"""How much the platform is used, read from the app's own stores: what `psa-provision capacity` measures.

- PostgreSQL (the app's schema, read-only): tenants, active users, tickets per 24 hours over 7 days.
  The bundled app has no tenant table: a tenant is a customer in the CRM (`crm_customers`), the
  organisations the platform serves. Active users are those who logged in within a token's lifetime
  (auth's TOKEN_TTL_SECONDS, 1 h; auth_users.last_login_at), the seed's "concurrent users".
- The gateway's GET /metrics (loopback only, summed over its PM2 workers): API requests in the last
  minute, read with curl on the gateway's own container.
Parsing is pure, tested with recorded output.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field

from ..postgresql import DATABASE

ACTIVE_WINDOW = "1 hour"  # auth's TOKEN_TTL_SECONDS: a user who logged in since holds a session
DAYS = 7

# Each statement stands alone (psql goes on after an error), so a table the app has not created yet
# costs its own figure only. The session is read-only (PGOPTIONS below).
SQL = f"""\
SELECT 'tenants', count(*) FROM crm_customers;
SELECT 'users', count(*) FROM auth_users WHERE last_login_at > now() - interval '{ACTIVE_WINDOW}';
SELECT 'day', d, count(t.id) FROM generate_series(0, {DAYS - 1}) AS d
  LEFT JOIN tickets t ON t.created_at > now() - (d + 1) * interval '1 day'
                     AND t.created_at <= now() - d * interval '1 day'
  GROUP BY d ORDER BY d;
"""  # noqa: S608 - module constants only, no input reaches this SQL
# The SQL arrives on stdin; psql's errors go to stdout with the rows, so they can be told per figure.
SCRIPT = (f"cd / && runuser -u postgres -- env PGOPTIONS='-c default_transaction_read_only=on' "
          f"psql -XAtq -F $'\\t' -d {shlex.quote(DATABASE)} -f - 2>&1")


@dataclass(frozen=True)
class DatabaseUsage:
    """The figures from PostgreSQL; None where the query failed (the reason in `missing`)."""

    tenants: int | None = None
    users: int | None = None
    daily_tickets: tuple[int, ...] = ()  # oldest first; the last is the last 24 hours
    missing: dict[str, str] = field(default_factory=dict)

    @property
    def tickets_per_day(self) -> int | None:
        return self.daily_tickets[-1] if self.daily_tickets else None


def parse_database(output: str) -> DatabaseUsage:
    """SCRIPT's output (`tenants<TAB>n`, `users<TAB>n`, `day<TAB>d<TAB>n`, psql ERROR lines)."""
    values: dict[str, int] = {}
    days: dict[int, int] = {}
    errors: list[str] = []
    for line in output.splitlines():
        parts = line.split("\t")
        if parts[0] in ("tenants", "users") and len(parts) == 2 and parts[1].isdigit():
            values[parts[0]] = int(parts[1])
        elif parts[0] == "day" and len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            days[int(parts[1])] = int(parts[2])
        elif "ERROR:" in line:
            errors.append(line.split("ERROR:", 1)[1].strip())
    why = "; ".join(errors) or "no answer"
    missing = {name: why for name in ("tenants", "users") if name not in values}
    daily = tuple(days[d] for d in sorted(days, reverse=True)) if len(days) == DAYS else ()
    if not daily:
        missing["tickets_per_day"] = why
    return DatabaseUsage(values.get("tenants"), values.get("users"), daily, missing)


def metrics_script(port: int) -> str:
    """curl of the gateway's /metrics on its own container (the gateway answers loopback only)."""
    return f"curl -s --max-time 10 -w '\\n%{{http_code}}' http://127.0.0.1:{int(port)}/metrics"


@dataclass(frozen=True)
class GatewayUsage:
    """API requests in the last minute (and per minute over five); None with `why` when not read."""

    requests_last_minute: int | None
    requests_per_minute_5m: float | None = None
    workers: int = 0
    why: str = ""


def parse_metrics(output: str) -> GatewayUsage:
    """metrics_script's output: the JSON body, then the HTTP status on the last line."""
    body, _, code = output.rstrip("\n").rpartition("\n")
    if code.strip() != "200":
        status = code.strip() or "000"
        what = "nothing answers" if status == "000" else f"HTTP {status}"
        return GatewayUsage(None, why=f"gateway /metrics: {what} (an app bundle from before /metrics?)")
    try:
        data = json.loads(body)
        return GatewayUsage(int(data["requests_last_minute"]), float(data["requests_per_minute_5m"]),
                            int(data["workers"]))
    except (ValueError, KeyError, TypeError) as exc:
        return GatewayUsage(None, why=f"gateway /metrics: not understood ({exc})")
