"""Elasticsearch 8 (Elastic's apt repository, or the sandbox's stand-in): config, heap, snapshot dir."""

from ..app import APP_DIR
from ..base import KEYRINGS

COMPONENT = "elasticsearch"
CONF = "/etc/elasticsearch/elasticsearch.yml"
HEAP = "/etc/elasticsearch/jvm.options.d/heap.options"
KEYRING = f"{KEYRINGS}/elastic.asc"
LIST = "/etc/apt/sources.list.d/elastic-8.x.list"
DATA_DIR = "/var/lib/elasticsearch"  # path.data (elasticsearch.yml)
BACKUP_DIR = f"{APP_DIR}/backups/elasticsearch"  # path.repo: snapshots (backup-psa.sh, migrate)
CLUSTER_NAME = "psa-platform"
NODE_NAME = "psa-node-1"  # a single node's name; a cluster member is named after its container
CLUSTER = "elasticsearch"  # the phase file's `cluster:` of the members
PACKAGES = ("elasticsearch",)
UNIT = "elasticsearch"
FILES = (CONF, HEAP, LIST, KEYRING)
DIRS = (BACKUP_DIR,)
UNITS = (UNIT,)
TEMPLATES = {CONF: "elasticsearch.yml.j2", HEAP: "heap.options.j2"}  # LIST: base.APT_SOURCE_TEMPLATE
PORT = 9200
TRANSPORT_PORT = 9300  # between cluster members only


def standalone_copy() -> str:
    """Bash for a copy of a cluster member (a restore's) made a single node: stopped, its data emptied.
    A lone node cannot take over a three-node cluster's state (no majority of its voting configuration
    would ever answer); the restore writes a single node's elasticsearch.yml and starts it empty."""
    return f"systemctl stop {UNIT}\nfind {DATA_DIR} -mindepth 1 -delete\n"
