"""What ships inside the package (psa_provision/data), found with importlib.resources, never the source tree.

templates/ (Jinja2, *.j2), phases/ (phase0..3.yml), inventories/ (sandbox.yml, production.example.yml:
what `init` copies into a project) and psa-platform/ (the bundled app shipped to the guests).
The files are used as a directory on disk (Jinja2's loader, the bundle upload), which a wheel installed
by pip or pipx is: an installation from a zip archive is refused with one sentence.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .errors import ProvisionError


def _data_dir() -> Path:
    root = resources.files("psa_provision") / "data"
    if not isinstance(root, Path) or not root.is_dir():
        raise ProvisionError(f"psa_provision's data files are not a directory on disk ({root})",
                             hint="install the package with pip or pipx (not as a zip archive)")
    return root


DATA_DIR = _data_dir()
TEMPLATES_DIR = DATA_DIR / "templates"
PHASES_DIR = DATA_DIR / "phases"
# the backup container's lines, opt-in (README "Backup and restore"); not a phase file (phase*.yml)
BACKUP_CONTAINER_EXAMPLE = PHASES_DIR / "examples" / "backup-container.yml"
INVENTORIES_DIR = DATA_DIR / "inventories"
SANDBOX_INVENTORY = INVENTORIES_DIR / "sandbox.yml"
PRODUCTION_INVENTORY = INVENTORIES_DIR / "production.example.yml"
APP_BUNDLE = DATA_DIR / "psa-platform"
