"""Fixtures of the verify suites: the run's context, the container behind each host, secrets on stdin.

`psa-provision verify` (psa_provision/verify.py) writes a context file (paths and expected values,
no secrets) and names it in $PSA_VERIFY_CONTEXT; each testinfra host is a container, named by its
hostname. Checks carry `@pytest.mark.component(...)`; a check runs only on containers that run that
component, and per-service checks only on the container the service is placed on.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from psa_provision.commands.verify import CONTEXT_ENV, read_context
from psa_provision.suites.checks import remote_command

GATEWAY = "api-gateway"
StdinRunner = Callable[[str, str], subprocess.CompletedProcess[str]]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "component(name): the check needs this component on the container")
    config.addinivalue_line("markers", "upstreams: one case per service behind the gateway, on its container")


def _context() -> dict[str, Any]:
    path = os.environ.get(CONTEXT_ENV)
    if not path:
        raise RuntimeError(f"${CONTEXT_ENV} is not set: run the suites with `psa-provision verify PHASE`")
    return read_context(Path(path))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Per-service checks get one case per service of the phase (placement filters them below);
    `upstreams` checks one per service behind the gateway."""
    if "service" in metafunc.fixturenames:
        services = sorted(_context()["services"])
        if metafunc.definition.get_closest_marker("upstreams") is not None:
            services = [s for s in services if s != GATEWAY]
        metafunc.parametrize("service", services)


def _host_name(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    host = callspec.params.get("_testinfra_host") if callspec is not None else None
    return None if host is None else str(host.backend.get_hostname())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep a check only where it applies: the container runs its component / hosts its service."""
    ctx = _context()
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        name = _host_name(item)
        container = ctx["containers"].get(name or "")
        applies = container is not None
        marker = item.get_closest_marker("component")
        if applies and marker is not None:
            applies = marker.args[0] in container["components"]
        callspec = getattr(item, "callspec", None)
        service = callspec.params.get("service") if callspec is not None else None
        if applies and service is not None:
            placed = GATEWAY if item.get_closest_marker("upstreams") is not None else service
            applies = placed in container["services"]
        (keep if applies else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


@pytest.fixture(scope="session")
def ctx() -> dict[str, Any]:
    """The verify run's context: phase, containers by hostname, services, expected values."""
    return _context()


@pytest.fixture(scope="module")
def host(_testinfra_host: Any) -> Any:
    """testinfra's host, checked once per container: if SSH fails, every check on it says why."""
    name = _testinfra_host.backend.get_hostname()
    try:
        result = _testinfra_host.run("true")
    except RuntimeError as exc:  # testinfra's ssh backend raises when ssh itself exits 255
        stderr = getattr(exc.args[0], "stderr", "") if exc.args else ""
        pytest.fail(f"SSH to {name} failed: {str(stderr).strip()[:200]}", pytrace=False)
    if result.rc != 0:
        pytest.fail(f"a shell on {name} failed: {result.stderr.strip()[:200]}", pytrace=False)
    return _testinfra_host


@pytest.fixture(scope="module")
def container(_testinfra_host: Any, ctx: dict[str, Any]) -> dict[str, Any]:
    """The phase file's entry for the container behind the host (its spec, components, services)."""
    data: dict[str, Any] = ctx["containers"][_testinfra_host.backend.get_hostname()]
    return data


@pytest.fixture(scope="module")
def expected(_testinfra_host: Any, ctx: dict[str, Any]) -> dict[str, Any]:
    """Rendered values the container's components must show (settings, cluster name, heap...)."""
    data: dict[str, Any] = ctx.get("expected", {}).get(_testinfra_host.backend.get_hostname(), {})
    return data


@pytest.fixture(scope="session")
def secrets(ctx: dict[str, Any]) -> Any:
    """The inventory's secrets (for auth checks; values travel on stdin only)."""
    from psa_provision.secrets import load_secrets

    return load_secrets(Path(ctx["secrets_file"]))


@pytest.fixture(scope="session")
def proxmox(ctx: dict[str, Any]) -> Any:
    """A Proxmox API client for the inventory (config checks of each container)."""
    from psa_provision import proxmox as api
    from psa_provision.inventory import load_inventory

    return api.connect(load_inventory(Path(ctx["inventory_path"])))


@pytest.fixture(scope="module")
def run_stdin(host: Any, ctx: dict[str, Any]) -> StdinRunner:
    """Run a shell command on the host feeding `stdin` (a secret) to it: the secret is never in argv."""
    ssh_config = Path(ctx["ssh_config"]) if ctx.get("ssh_config") else None
    alias = host.backend.get_hostname()

    def run(command: str, stdin: str) -> subprocess.CompletedProcess[str]:
        argv = remote_command(ssh_config, alias, command)
        return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=120, check=False)

    return run
