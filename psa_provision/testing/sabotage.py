"""PSA_MIGRATE_SABOTAGE=<store or service>: damage a migration step's target so that its verify fails.

A store's target gets data the source does not have (after the move, before verify); a moved service is
stopped again on its new container (after start, before verify). tests/e2e/test_migrate.py and
test_phase2.py prove with it that a failed verify rolls its step back. Reached through
seams.sabotage_store / seams.sabotage_service.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from psa_provision.secrets import Secrets
from psa_provision.sensitive import Sensitive
from psa_provision.ssh import Connection

SABOTAGE_ENV = "PSA_MIGRATE_SABOTAGE"
STORE_DAMAGE = {  # each adds data the source does not have
    "postgresql": "cd / && runuser -u postgres -- psql -X -q -d psa_platform -c "
                  "\"INSERT INTO tickets (title, body) VALUES ('sabotage', 'PSA_MIGRATE_SABOTAGE')\"\n",
    "redis": "export REDISCLI_AUTH=\"$(cat)\"\nredis-cli --no-auth-warning SET psa-sabotage 1 >/dev/null\n",
    "rabbitmq": "rabbitmqctl -q add_vhost psa-sabotage </dev/null\n",
    "elasticsearch": "curl -sf -X PUT -H 'Content-Type: application/json' -d '{\"title\": \"sabotage\"}' "
                     "http://127.0.0.1:9200/tickets/_doc/psa-sabotage >/dev/null\n",
}


def chosen(name: str) -> bool:
    """True when PSA_MIGRATE_SABOTAGE names this store or service."""
    return os.environ.get(SABOTAGE_ENV) == name


def damage_store(store: str, target: Connection, secrets: Secrets, warn: Callable[[str], None]) -> None:
    """Add data the source does not have to the moved store on `target` (when the switch names it)."""
    if not chosen(store):
        return
    warn(f"{SABOTAGE_ENV}={store}: damaging the target's data on purpose (test hook)")
    password = Sensitive.join(secrets.get("redis.password")) if store == "redis" else None
    target.run(STORE_DAMAGE[store], stdin=password)


def stop_service(service: str, stop: Callable[[], object], warn: Callable[[str], None]) -> None:
    """Stop the service again on its new container (when the switch names it)."""
    if not chosen(service):
        return
    warn(f"{SABOTAGE_ENV}={service}: stopping {service} on the new container on purpose (test hook)")
    stop()
