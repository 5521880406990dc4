"""rotate-secrets: which keys a component owns, and that only those get new values."""

from __future__ import annotations

import pytest

from psa_provision.errors import InputError
from psa_provision.rotate import COMPONENTS, keys_for, new_values
from psa_provision.secrets import KEYS, NOT_SECRET, Secrets, generate


def test_each_component_owns_its_keys_and_all_covers_every_secret() -> None:
    assert keys_for("redis") == ("redis.password",)
    assert keys_for("app") == ("app.jwt_secret", "app.admin_password")
    assert set(keys_for("all")) == set(KEYS) - NOT_SECRET
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
