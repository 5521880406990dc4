"""Shared by every test directory: a test skipped because a tool is missing fails instead.

`scripts/setup` installs every tool the tests use (node, npm, redis-server, ssh-keygen, ...), so a skip
whose reason says something is `not installed` means the machine is not what CI promises: the test
command must not pass quietly. A developer without those tools may set PSA_TESTS_ALLOW_MISSING_TOOLS=1
to keep such skips as skips. Skips for other reasons (a warm session, a state not reached) stay skips.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import pytest

ALLOW_ENV = "PSA_TESTS_ALLOW_MISSING_TOOLS"
MISSING_TOOL = re.compile(r"\bnot installed\b", re.IGNORECASE)


def missing_tool_reason(report: pytest.TestReport) -> str | None:
    """The skip reason when `report` is a skip for a missing tool (None otherwise, xfails included)."""
    if not report.skipped or hasattr(report, "wasxfail") or not isinstance(report.longrepr, tuple):
        return None
    reason = str(report.longrepr[2]).removeprefix("Skipped: ")
    return reason if MISSING_TOOL.search(reason) else None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    reason = missing_tool_reason(report)
    if reason is not None and os.environ.get(ALLOW_ENV) != "1":
        report.outcome = "failed"
        report.longrepr = (f"skipped for a missing tool, which fails the test run: {reason}\n"
                           f"`bash scripts/setup` installs it; {ALLOW_ENV}=1 keeps such skips as skips")
