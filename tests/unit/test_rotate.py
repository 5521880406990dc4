"""rotate-secrets: which keys a component owns, and that only those get new values."""

from __future__ import annotations

import pytest

from psa_provision.errors import InputError
from psa_provision.packaged import PHASES_DIR
from psa_provision.rotate import COMPONENTS, NOT_ROTATED, keys_for, new_values
from psa_provision.secrets import KEYS, NOT_SECRET, Secrets, generate


def test_each_component_owns_its_keys_and_all_covers_every_secret() -> None:
    assert keys_for("redis") == ("redis.password",)
    assert keys_for("app") == ("app.jwt_secret", "app.admin_password")
    assert set(keys_for("all")) == set(KEYS) - NOT_SECRET - NOT_ROTATED
    assert set(COMPONENTS) == {"postgresql", "redis", "rabbitmq", "app"}


def test_unknown_component_is_refused_with_the_choices() -> None:
    with pytest.raises(InputError, match="unknown component 'redsi'") as info:
        keys_for("redsi")
    assert "postgresql, redis, rabbitmq, app, all" in (info.value.hint or "")


@pytest.mark.parametrize("component", [*COMPONENTS, "all"])
def test_only_the_components_values_change(component: str) -> None:
    current = Secrets(generate("ops@example.org"))
    rotated = new_values(current, keys_for(component))
    changed = {k for k in KEYS if rotated[k] != current.as_dict()[k]}
    assert changed == set(keys_for(component))
    assert rotated["app.admin_email"] == "ops@example.org"


# -- which PM2 apps a rotation reloads (services/app: APP_STORES, component.py) ----------------------

def test_store_variables_are_read_only_by_the_apps_using_that_store() -> None:
    from psa_provision.services.app import APP_STORES, env_readers

    apps = set(APP_STORES)
    assert env_readers("REDIS_PASSWORD", apps) == {"auth", "tickets"}
    assert env_readers("RABBITMQ_PASSWORD", apps) == {"tickets", "billing"}
    assert env_readers("ELASTICSEARCH_HOST", apps) == {"tickets", "reports"}
    assert env_readers("POSTGRES_PASSWORD", apps) == apps - {"api-gateway"}
    assert env_readers("APP_ADMIN_PASSWORD", apps) == {"auth"}
    assert env_readers("CRM_SERVICE_URL", apps) == {"api-gateway"}
    assert env_readers("JWT_SECRET", apps) == apps == env_readers("SOMETHING_NEW", apps)
    assert env_readers("REDIS_HOST", {"crm", "my-own-app"}) == {"my-own-app"}  # unknown app: reads all


def test_readers_per_app_container_phase0_and_phase1() -> None:

    from psa_provision.phases import load_phase
    from psa_provision.rotate import readers

    phases = PHASES_DIR
    p0 = load_phase("phase0", phases)
    assert list(readers(p0, keys_for("redis")).values()) == [["auth", "tickets"]]
    assert list(readers(p0, keys_for("rabbitmq")).values()) == [["billing", "tickets"]]
    everything = sorted(p0.services)
    assert list(readers(p0, keys_for("app")).values()) == [everything]
    p1 = load_phase("phase1", phases)
    services = [a for a in everything if a != "api-gateway"]
    assert list(readers(p1, keys_for("postgresql")).values()) == [services]
