"""PSA_KILL_AT: the process SIGKILLs itself when a matching step starts (reached through seams.kill_point).

Step names are `<component>: <summary>` as the journal shows them (e.g. `postgresql: install
postgresql-15`), `<...> (task running)` once a Proxmox task was submitted, the commands' own steps
(`container: start container 200`, `app: wait for /health`) and a migration's sub-steps (`migrate
redis: move`). With PSA_KILL_DELAY=<seconds> the kill comes that long after the step started, i.e. in
the middle of it. tests/e2e/test_resume.py, test_migrate.py and test_phase2.py prove with it that a
rerun finishes an interrupted run.
"""

from __future__ import annotations

import os
import signal
import threading
from fnmatch import fnmatchcase

KILL_AT_ENV = "PSA_KILL_AT"
KILL_DELAY_ENV = "PSA_KILL_DELAY"


def kill_point(step: str) -> None:
    """SIGKILL this process now (or after PSA_KILL_DELAY s) when `step` matches the PSA_KILL_AT glob."""
    pattern = os.environ.get(KILL_AT_ENV)
    if not pattern or not fnmatchcase(step, pattern):
        return
    os.environ.pop(KILL_AT_ENV, None)  # once per process
    delay = float(os.environ.get(KILL_DELAY_ENV) or 0)
    if delay <= 0:
        os.kill(os.getpid(), signal.SIGKILL)
    timer = threading.Timer(delay, os.kill, args=(os.getpid(), signal.SIGKILL))
    timer.daemon = True
    timer.start()
