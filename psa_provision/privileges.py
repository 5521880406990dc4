"""Which Proxmox privileges each command needs, on which ACL path, and the role the README names.

Data, not code: preflight, `doctor`, the README's role table and the sandbox tests read it from here.
Each entry cites the check Proxmox makes (pve-container API2/LXC.pm create_vm and
LXC.pm check_ct_modify_config_perm, pve-firewall Firewall.pm rules_modify_permissions and
API2/Firewall/Cluster.pm, pve-manager API2/Tasks.pm node_tasks and API2/Network.pm index,
pve-storage check_volume_access; the `permissions` of each method in the API schema).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

ROLE = "PSAProvision"


@dataclass(frozen=True)
class Grant:
    """One ACL entry the README asks for: the role on `path`, inherited below it when `propagate`."""

    path: str
    propagate: bool


@dataclass(frozen=True)
class Need:
    """A privilege on an ACL path template ({vmid}, {storage}, {templates}, {bridge}, {node}), and why."""

    privilege: str
    path: str
    why: str
    commands: tuple[str, ...]


UP = ("up", "migrate", "doctor")
CREATE = ("up", "migrate", "restore", "doctor")  # restore makes containers from backup volumes
READ = ("plan", "up", "migrate", "destroy", "status", "doctor")
NEEDS: tuple[Need, ...] = (
    Need("VM.Audit", "/vms/{vmid}", "read config, status, pending changes, firewall; rrddata (capacity)",
         (*READ, "capacity", "backup", "restore")),
    Need("VM.Allocate", "/vms/{vmid}", "create and destroy containers; nesting=1 at create",
         ("up", "migrate", "destroy", "restore", "doctor")),
    Need("VM.Config.CPU", "/vms/{vmid}", "cores at create or change", CREATE),
    Need("VM.Config.Memory", "/vms/{vmid}", "memory, swap at create or change", CREATE),
    Need("VM.Config.Disk", "/vms/{vmid}", "rootfs at create, resize", CREATE),
    Need("VM.Config.Network", "/vms/{vmid}", "hostname, net0, nameserver; the container firewall", CREATE),
    Need("VM.Config.Options", "/vms/{vmid}", "onboot, tags, description at create", CREATE),
    Need("VM.PowerMgmt", "/vms/{vmid}", "start, reboot, stop",
         ("up", "migrate", "destroy", "restore", "doctor")),
    Need("VM.Snapshot", "/vms/{vmid}", "snapshot before each migration step", ("migrate", "doctor")),
    Need("VM.Backup", "/vms/{vmid}", "vzdump a container; list and restore its backup volumes",
         ("backup", "backups", "restore", "doctor")),
    Need("Datastore.Audit", "/storage/{storage}", "see the rootfs storage in /cluster/resources", READ),
    Need("Datastore.AllocateSpace", "/storage/{storage}", "the rootfs volume at create", CREATE),
    Need("Datastore.Audit", "/storage/{templates}", "list the templates", READ),
    Need("Datastore.AllocateTemplate", "/storage/{templates}", "download a missing template", UP),
    Need("Datastore.AllocateSpace", "/storage/{backups}", "write vzdump archives; list and read them",
         ("backup", "backups", "restore", "doctor")),
    Need("SDN.Use", "/sdn/zones/localnetwork/{bridge}", "see the bridge, put net0 on it",
         ("plan", "up", "migrate", "restore", "doctor")),
    Need("Sys.Audit", "/nodes/{node}", "node status; see every task on the node (backups too)",
         ("plan", "up", "migrate", "destroy", "doctor")),
    Need("Sys.Audit", "/", "read the datacenter firewall options (phases of several containers); "
         "list HA resources and rules", ("plan", "up", "migrate", "doctor")),
    Need("Sys.Console", "/", "create and update HA resources, rules (PVE 9) or groups (PVE 8) of a "
         "high_availability phase (pve-ha-manager API2/HA/*.pm)", ("up", "doctor")),
)

# Only when the datacenter firewall is off and the tool should switch it on (PUT /cluster/firewall/options,
# pve-firewall API2/Firewall/Cluster.pm set_options: Sys.Modify on /). Not in the role: it also grants
# node-wide settings. The admin runs DATACENTER_FIREWALL_COMMAND once instead.
SYS_MODIFY = "Sys.Modify"
DATACENTER_FIREWALL_COMMAND = "pvesh set /cluster/firewall/options --enable 1"

HA_WRITE = "Sys.Console"  # what pve-ha-manager asks on / for any HA resource, rule or group change

ROLE_PRIVILEGES: tuple[str, ...] = tuple(sorted({n.privilege for n in NEEDS}))
ROLE_GRANTS: tuple[Grant, ...] = (
    Grant("/vms", True),
    Grant("/storage", True),
    Grant("/sdn/zones/localnetwork", True),
    Grant("/nodes", True),
    Grant("/", False),
)


EXAMPLE_TOKEN = "root@pam!psa-provision"  # noqa: S105  (a token id, not its secret)


def pveum_commands(token: str = EXAMPLE_TOKEN) -> list[str]:
    """The commands that create the role and grant it (the README shows exactly these)."""
    out = [f'pveum role add {ROLE} -privs "{" ".join(ROLE_PRIVILEGES)}"',
           f"pveum user token add {token.split('!')[0]} {token.split('!')[1]} --privsep 1"]
    for grant in ROLE_GRANTS:
        out.append(f"pveum acl modify {grant.path} --tokens '{token}' --roles {ROLE} "
                   f"--propagate {int(grant.propagate)}")
    return out


def role_table() -> list[tuple[str, str, str]]:
    """(privilege, path, commands) rows of the README's table, in NEEDS order."""
    return [(n.privilege, n.path, ", ".join(n.commands)) for n in NEEDS]


@dataclass(frozen=True)
class Target:
    """What a command touches: vmids, storages, the template and backup storages, bridges, nodes, several
    containers."""

    vmids: tuple[int, ...] = ()
    storages: tuple[str, ...] = ()
    templates: str = ""
    backups: str = ""  # the storage of vzdump archives
    bridges: tuple[str, ...] = ()
    nodes: tuple[str, ...] = ()
    firewall: bool = False
    high_availability: bool = False


def required(command: str, target: Target, *, skip: Iterable[str] = ()) -> dict[str, set[str]]:
    """ACL path -> privileges `command` needs on `target`; `skip` drops privileges this run will not use
    (e.g. Datastore.AllocateTemplate when the template is present, VM.Allocate when nothing is created)."""
    skipped = set(skip)
    out: dict[str, set[str]] = {}
    for need in NEEDS:
        if command not in need.commands or need.privilege in skipped:
            continue
        if need.privilege == HA_WRITE and not target.high_availability:
            continue
        for path in _paths(need.path, target):
            out.setdefault(path, set()).add(need.privilege)
    return out


def _paths(template: str, target: Target) -> list[str]:
    if template == "/":
        return ["/"] if target.firewall or target.high_availability else []
    if "{vmid}" in template:
        return [template.format(vmid=v) for v in target.vmids]
    if "{storage}" in template:
        return [template.format(storage=s) for s in target.storages]
    if "{templates}" in template:
        return [template.format(templates=target.templates)] if target.templates else []
    if "{backups}" in template:
        return [template.format(backups=target.backups)] if target.backups else []
    if "{bridge}" in template:
        return [template.format(bridge=b) for b in target.bridges]
    if "{node}" in template:
        return [template.format(node=n) for n in target.nodes]
    return [template]


def need_for(privilege: str, path: str) -> Need | None:
    """The NEEDS entry that asks for `privilege` on `path` (a concrete path such as /vms/200)."""
    for need in NEEDS:
        prefix = need.path.split("{")[0]
        if need.privilege == privilege and (path == need.path if "{" not in need.path
                                            else path.startswith(prefix)):
            return need
    return None


def missing(need: dict[str, set[str]], have: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(privilege, path) pairs in `need` that `have` lacks, sorted by path then privilege."""
    return sorted(((p, path) for path, privs in need.items() for p in privs - have.get(path, set())),
                  key=lambda pp: (pp[1], pp[0]))


def not_visible(kind: str, name: str, node: str) -> str:
    """The message for a storage or bridge a listing does not show: absent, or hidden from this token."""
    if kind == "storage":
        return (f"storage {name} is not visible on node {node}: it does not exist, or is not visible to this "
                f"token (needs Datastore.Audit on /storage/{name})")
    return (f"bridge {name} is not visible on node {node}: it does not exist, or is not visible to this "
            f"token (needs SDN.Use or SDN.Audit on /sdn/zones/localnetwork/{name})")


ROOT_ONLY_FEATURES = "pve-container LXC.pm check_ct_modify_config_perm"


def root_only(unprivileged: bool, features: dict[str, int], caller: str) -> str | None:
    """Why Proxmox refuses this container's features to `caller` (only root@pam may), else None.

    Features other than nesting are root@pam only; a privileged container's features are root@pam only
    (any feature key). An API token is never root@pam, even root@pam!token.
    """
    if caller == "root@pam":
        return None
    if not unprivileged and features:
        return (f"a privileged container's features ({', '.join(sorted(features))}) can only be set by "
                f"root@pam ({ROOT_ONLY_FEATURES}); {caller} is not root@pam")
    other = sorted(k for k in features if k != "nesting")
    if other:
        return (f"features other than nesting ({', '.join(other)}) can only be set by root@pam "
                f"({ROOT_ONLY_FEATURES}); {caller} is not root@pam")
    return None


# What a create needs, for a 403 that names nothing: pve-container API2/LXC.pm create_vm raises a bare
# "Permission check failed" when VM.Allocate is missing on both /vms/<vmid> and the pool.
CREATE_NEEDS = ("VM.Allocate", "VM.Config.CPU", "VM.Config.Memory", "VM.Config.Disk", "VM.Config.Network",
                "VM.Config.Options", "Datastore.AllocateSpace", "SDN.Use")


def create_needs(vmid: int, storage: str = "{storage}", bridge: str = "{bridge}") -> str:
    """`VM.Allocate on /vms/990, ...`: each privilege a create needs, with its path."""
    target = Target(vmids=(vmid,), storages=(storage,), bridges=(bridge,))
    seen: list[str] = []
    for need in NEEDS:
        if need.privilege in CREATE_NEEDS and not any(s.startswith(f"{need.privilege} ") for s in seen):
            seen += [f"{need.privilege} on {path}" for path in _paths(need.path, target)]
    return ", ".join(seen)
