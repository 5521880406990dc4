"""PSA_RECORD_COMMANDS=<file>: every command line and script sent to a guest, appended as JSON lines.

Both can end up in argv on the guest (`ps`); stdin data and file contents cannot, and they are not
recorded. tests/e2e/test_secrets.py greps this file for every secret value. Reached through
seams.record_command, which ssh.py calls for each command.
"""

from __future__ import annotations

import json
import os

RECORD_ENV = "PSA_RECORD_COMMANDS"


def record_command(host: str, command: str, script: str) -> None:
    """Append {host, command, script} to the PSA_RECORD_COMMANDS file (nothing when it is unset)."""
    path = os.environ.get(RECORD_ENV)
    if not path:
        return
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"host": host, "command": command, "script": script}) + "\n")
