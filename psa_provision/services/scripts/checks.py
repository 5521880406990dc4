"""The operations scripts' verify checks: backup-psa.sh scheduled daily at 02:00, health-check.sh passes."""

from __future__ import annotations

import re
from typing import Any

import pytest


@pytest.mark.component("scripts")
def test_backup_scheduled_daily_at_2(host: Any) -> None:
    cron = host.file("/etc/cron.d/psa-backup")
    assert cron.exists, "/etc/cron.d/psa-backup is missing"
    lines = [line for line in cron.content_string.splitlines() if line.strip() and not line.startswith("#")]
    assert any(re.match(r"^0 2 \* \* \* \S+ .*backup-psa\.sh", line) for line in lines), \
        f"no `0 2 * * * <user> ...backup-psa.sh` line in /etc/cron.d/psa-backup: {lines}"
    assert host.file("/usr/local/bin/backup-psa.sh").mode & 0o100, "backup-psa.sh is not executable"


@pytest.mark.component("scripts")
def test_health_check_script_passes(host: Any) -> None:
    result = host.run("/usr/local/bin/health-check.sh")
    failed = [line for line in result.stdout.splitlines() if "FAIL" in line]
    complaint = result.stderr.strip().splitlines()[-1:] or [""]
    assert result.rc == 0, f"health-check.sh exited {result.rc}: {failed[:8] or complaint[0][:200]}"
