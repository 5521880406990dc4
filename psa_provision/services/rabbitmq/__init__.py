"""RabbitMQ (Debian 12's rabbitmq-server): loopback-only node, management plugin, admin + psa_app users."""

COMPONENT = "rabbitmq"
CONF = "/etc/rabbitmq/rabbitmq.conf"
PLUGINS = "/etc/rabbitmq/enabled_plugins"
ENV_CONF = "/etc/rabbitmq/rabbitmq-env.conf"
INETRC = "/etc/rabbitmq/erl_inetrc"
EPMD_DROPIN = "/etc/systemd/system/epmd.socket.d/psa-loopback.conf"
PACKAGES = ("rabbitmq-server",)
UNIT = "rabbitmq-server"
FILES = (CONF, PLUGINS, ENV_CONF, INETRC, EPMD_DROPIN)
UNITS = (UNIT,)
TEMPLATES = {CONF: "rabbitmq.conf.j2", PLUGINS: "enabled_plugins.j2", ENV_CONF: "rabbitmq-env.conf.j2",
             INETRC: "erl_inetrc.j2", EPMD_DROPIN: "epmd-loopback.conf.j2"}
VHOST = "/"
# The management API on loopback (the seed's plugin), spoken as the admin user
API = "http://127.0.0.1:15672/api"
ADMIN = "admin"
# The CLI tools' Erlang node ports (RabbitMQ's networking guide: the distribution port + 10000 to
# + 10010); in a cluster the other members send list_queues' rows and the like to that node.
CLI_PORTS = (35672, 35682)
# name -> (secret key, tags)
USERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "admin": ("rabbitmq.admin_password", ("administrator",)),
    "psa_app": ("rabbitmq.app_password", ()),
}
ADMIN_SECRET = USERS[ADMIN][0]  # the secret the management API is spoken with

# Clustering (phase 3): members of one `cluster` share the Erlang cookie (a generated secret) and find
# each other by the phase file (classic_config peer discovery; erl_inetrc resolves their host names).
COOKIE = "/var/lib/rabbitmq/.erlang.cookie"
COOKIE_SECRET = "rabbitmq.erlang_cookie"  # noqa: S105 - the key of the secret, not its value
CLUSTER_FILES = (COOKIE,)
OPAQUE_FILES = (COOKIE,)  # never read by the facts: checksum, mode and owner only
NODE_PREFIX = "rabbit@"
# stop the node and epmd, reload the socket unit, start it where the drop-in says (the node restart follows)
REBIND_EPMD = ("systemctl daemon-reload\n"
               "systemctl stop rabbitmq-server.service epmd.service epmd.socket\n"
               "systemctl start epmd.socket\n")


def keep_node_name(original_hostname: str) -> str:
    """Bash for a copy of a RabbitMQ container under another hostname (a restore): the node keeps its
    name, rabbit@<original> (the default follows the hostname, and a new name means an empty database
    that the CLI, resolving only the original's name on loopback through erl_inetrc, cannot reach)."""
    line = f"NODENAME=rabbit@{original_hostname}"
    return (f"[ ! -f {ENV_CONF} ] || grep -qx '{line}' {ENV_CONF} || "
            f"printf '%s\\n' '# a restored copy keeps its original node name' '{line}' >> {ENV_CONF}\n")


def standalone_copy() -> str:
    """Bash for a copy of a cluster member (a restore's) once a standalone's files are written: epmd back
    on loopback alone (REBIND_EPMD). The copy's node is named after its own hostname, a NEW node with an
    empty database: a member's own node would wait at boot for its cluster's peers. The backup set's
    definitions (users, vhosts, queues, policies) are imported into it."""
    return REBIND_EPMD
