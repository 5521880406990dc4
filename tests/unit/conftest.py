"""Unit tests: nothing here may change this host. pvesim's handlers run in memory in several unit
tests, and a firewall change there ends in `firewall_nft.load`, which would replace the host's nft
tables (where the sandbox's guests' rules live) with the test's own guests: a bench, demo or sandbox
test running at the same time would lose its firewall."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator

import pytest

from pvesim import firewall_nft


def _check_only(script: str) -> None:
    """nft parses and checks the script (`--check`) and applies nothing; refused as `load` is."""
    if shutil.which("nft") is None:
        return
    result = subprocess.run(["nft", "--check", "-f", "-"], input=script, capture_output=True, text=True,
                            check=False)
    if result.returncode != 0:
        raise RuntimeError(f"nft refused the firewall ruleset: {result.stderr.strip()}")


@pytest.fixture(autouse=True)
def _host_firewall_untouched(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(firewall_nft, "load", _check_only)


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that refuses every connection for the whole test: bound and never listening, so
    no other test (four run at once) can take it and answer there, as a port merely found free can."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])
