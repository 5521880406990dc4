"""etcd 3.4 (Debian 12's `etcd-server`, v3 API): the three-member store Patroni keeps its leader key in.

Debian's etcd.service reads /etc/default/etcd (EnvironmentFile=-/etc/default/%p) and keeps its data in
/var/lib/etcd/default; `etcdctl` comes in the separate `etcd-client` package.
"""

COMPONENT = "etcd"
PACKAGES = ("etcd-server", "etcd-client")
DEFAULTS = "/etc/default/etcd"
DATA_DIR = "/var/lib/etcd/default"  # etcd.service: Environment=ETCD_DATA_DIR=/var/lib/etcd/default
UNIT = "etcd"
FILES = (DEFAULTS,)
UNITS = (UNIT,)
TEMPLATES = {DEFAULTS: "etcd.default.j2"}
CLIENT_PORT = 2379
PEER_PORT = 2380
