"""RabbitMQ's verify checks (seed: "Install RabbitMQ"): unit, users (no guest, admin tagged),
psa_app's login."""

from __future__ import annotations

import json
from typing import Any

import pytest

from psa_provision.suites.checks import assert_running_and_enabled, output, rabbit_tags


def rabbit_users(host: Any) -> dict[str, list[str]]:
    out = output(host, "rabbitmqctl -q list_users --formatter json", "rabbitmqctl list_users")
    return {u["user"]: rabbit_tags(u.get("tags", [])) for u in json.loads(out)}


@pytest.mark.component("rabbitmq")
def test_rabbitmq_running_and_enabled(host: Any) -> None:
    assert_running_and_enabled(host, "rabbitmq-server")


@pytest.mark.component("rabbitmq")
def test_rabbitmq_users(host: Any) -> None:
    users = rabbit_users(host)
    assert "guest" not in users, "the default guest user still exists"
    assert "administrator" in users.get("admin", []), f"admin tags: {users.get('admin', '(no admin user)')}"
    assert "psa_app" in users, f"no psa_app user (users: {sorted(users)})"


@pytest.mark.component("rabbitmq")
def test_rabbitmq_psa_app_authenticates(run_stdin: Any, secrets: Any) -> None:
    result = run_stdin("rabbitmqctl -q authenticate_user psa_app", secrets.get("rabbitmq.app_password").value)
    assert result.returncode == 0, f"psa_app cannot authenticate: {result.stdout.strip()[:200]} " \
                                   f"{result.stderr.strip()[:200]}"
