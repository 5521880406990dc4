"""The backup container: the pgBackRest repository host and the other stores' backup sets.

Each set is a directory SETS_DIR/<id>/ holding the artifacts and a manifest.json (what, when, sizes,
sha256, tool version), written last and atomically: a set without a manifest is incomplete.
"""

from ..pgbackrest import REPO_DIRS, REPO_FILES, TIMERS

COMPONENT = "backup"
ROOT = "/var/lib/psa-backup"
SETS_DIR = f"{ROOT}/sets"
MANIFEST = "manifest.json"
FILES = REPO_FILES
DIRS = (*REPO_DIRS, ROOT, SETS_DIR)
UNITS = TIMERS
