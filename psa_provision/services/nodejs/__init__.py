"""Node.js 20 (NodeSource's apt repository, or the sandbox's) and PM2 installed globally with npm."""

from ..base import KEYRINGS

COMPONENT = "nodejs"
KEYRING = f"{KEYRINGS}/nodesource.asc"
LIST = "/etc/apt/sources.list.d/nodesource.list"
PM2_VERSION = "5"
PACKAGES = ("nodejs",)
FILES = (LIST, KEYRING)
TEMPLATES: dict[str, str] = {}  # LIST: base.APT_SOURCE_TEMPLATE (common.apt_repo)
