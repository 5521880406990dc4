"""The LXC container itself: phase spec + Proxmox `GET config` -> the API calls that reconcile it.

Each differing key is classified (Proxmox semantics for a running CT): `live` (applied by PUT
config at once), `restart` (written, takes effect at next start), `recreate` (cannot change in
place). Recreating an existing container (its data goes with it) needs `force=True`.

`hostname` is written to the config at once (pve-container LXC/Config.pm $LXC_FASTPLUG_OPTIONS) but
the guest's /etc/hostname and /etc/hosts are written only at start (LXC::Setup), so it needs a restart.
Changes left pending by a run that died before its reboot (`pending`, from GET .../pending) are
finished with a reboot: pending values are applied at start (LXC.pm vm_start, vmconfig_apply_pending).
"""

from __future__ import annotations

from collections.abc import Collection

from ...changes import ApiCall, Change, Effect, Noop
from ...errors import InputError
from ...phases import ContainerSpec

COMPONENT = "container"
_ORDER: dict[Effect, int] = {"live": 0, "restart": 1, "recreate": 2, "create": 3}
_NET_KEYS = ("name", "bridge", "ip", "gw")


def _kv(text: str) -> dict[str, str]:
    """`a=1,b=2` -> {'a': '1', 'b': '2'}; a leading bare value goes under ''."""
    out: dict[str, str] = {}
    for part in str(text).split(","):
        if "=" in part:
            k, v = part.split("=", 1)
            out[k.strip()] = v.strip()
        elif part:
            out[""] = part.strip()
    return out


def net0(spec: ContainerSpec) -> str:
    return f"name=eth0,bridge={spec.bridge},ip={spec.ip_cidr},gw={spec.gateway}"


def features(spec: ContainerSpec) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(spec.features.items()))


def create_params(spec: ContainerSpec, *, template_volid: str, ssh_public_key: str, nameserver: str,
                  searchdomain: str | None = None) -> dict[str, object]:
    """POST /nodes/{node}/lxc parameters for `pct create` of this spec."""
    params: dict[str, object] = {
        "vmid": spec.vmid, "ostemplate": template_volid, "hostname": spec.hostname,
        "cores": spec.cores, "memory": spec.memory_mb, "swap": spec.swap_mb,
        "rootfs": f"{spec.rootfs_storage}:{spec.rootfs_gb}", "net0": net0(spec),
        "nameserver": nameserver, "unprivileged": int(spec.unprivileged), "onboot": int(spec.onboot),
    }
    if spec.features:  # any `features` key, even empty, is root@pam only on a privileged container
        params["features"] = features(spec)  # (pve-container LXC.pm check_ct_modify_config_perm)
    if searchdomain:
        params["searchdomain"] = searchdomain
    if ssh_public_key:
        params["ssh-public-keys"] = ssh_public_key
    return params


def _size_gb(rootfs: str) -> int | None:
    size = _kv(rootfs).get("size", "")
    units = {"T": 1024, "G": 1, "M": 1 / 1024}
    if size and size[-1] in units:
        return int(float(size[:-1]) * units[size[-1]])
    return None


def diff_config(spec: ContainerSpec, current: dict[str, object], nameserver: str,
                searchdomain: str | None = None) -> dict[str, tuple[object, object, Effect]]:
    """key -> (current, wanted, effect) for every setting that differs."""
    out: dict[str, tuple[object, object, Effect]] = {}

    def cmp(key: str, want: object, effect: Effect) -> None:
        have = current.get(key)
        if str(have if have is not None else "") != str(want):
            out[key] = (have, want, effect)

    cmp("hostname", spec.hostname, "restart")
    cmp("cores", spec.cores, "live")
    cmp("memory", spec.memory_mb, "live")
    cmp("swap", spec.swap_mb, "live")
    cmp("onboot", int(spec.onboot), "live")
    cmp("nameserver", nameserver, "restart")
    if searchdomain:
        cmp("searchdomain", searchdomain, "restart")
    have_features = _kv(str(current.get("features", "")))
    if have_features != {k: str(v) for k, v in spec.features.items()}:
        out["features"] = (current.get("features"), features(spec), "restart")
    have_net = _kv(str(current.get("net0", "")))
    want_net = _kv(net0(spec))
    if {k: have_net.get(k) for k in _NET_KEYS} != want_net:
        keep = {k: v for k, v in have_net.items() if k not in _NET_KEYS}  # hwaddr, type: keep the MAC
        value = ",".join([net0(spec)] + [f"{k}={v}" for k, v in sorted(keep.items())])
        out["net0"] = (current.get("net0"), value, "live")
    # create keeps `unprivileged` only when it is 1 (pve-container API2/LXC.pm create_vm:
    # `$conf->{unprivileged} = 1 if $unprivileged`): a missing key is a privileged container
    have_unprivileged = current.get("unprivileged")
    if str(have_unprivileged if have_unprivileged not in (None, "") else 0) != str(int(spec.unprivileged)):
        out["unprivileged"] = (have_unprivileged, int(spec.unprivileged), "recreate")
    rootfs = str(current.get("rootfs", ""))
    storage = rootfs.split(":", 1)[0]
    size = _size_gb(rootfs)
    if storage != spec.rootfs_storage:
        out["rootfs"] = (rootfs, f"{spec.rootfs_storage}:{spec.rootfs_gb}", "recreate")
    elif size is not None and size != spec.rootfs_gb:
        out["rootfs"] = (rootfs, f"size={spec.rootfs_gb}G", "live" if spec.rootfs_gb > size else "recreate")
    return out


def plan(spec: ContainerSpec, current: dict[str, object] | None, *, node: str, template_volid: str,
         ssh_public_key: str, nameserver: str | None = None, searchdomain: str | None = None,
         force: bool = False, pending: Collection[str] = ()) -> list[Change]:
    """ApiCalls that make container `spec.vmid` on `node` match the spec (or a Noop saying it does).

    nameserver: the inventory's network.nameserver unless the phase file sets one for this container.
    pending: config keys of a running container whose new value waits for its next start.
    """
    host = spec.hostname
    nameserver = spec.nameserver or nameserver
    if not nameserver:
        raise InputError(f"container {spec.vmid}: no nameserver",
                         hint="set network.nameserver in the inventory")
    params = create_params(spec, template_volid=template_volid, ssh_public_key=ssh_public_key,
                           nameserver=nameserver, searchdomain=searchdomain)
    shown = {k: v for k, v in params.items() if k != "ssh-public-keys"}
    if current is None:
        return [ApiCall(host, COMPONENT, f"create container {spec.vmid} ({host}) on {node}", action="create",
                        node=node, vmid=spec.vmid, params=params, effect="create",
                        diff={k: (None, v) for k, v in shown.items()})]
    diff = diff_config(spec, current, nameserver, searchdomain)
    if not diff and pending:
        keys = ", ".join(sorted(pending))
        return [ApiCall(host, COMPONENT, f"reboot container {spec.vmid} to apply its pending {keys}",
                        action="reboot", node=node, vmid=spec.vmid, effect="restart",
                        diff={k: ("pending", "applied") for k in sorted(pending)})]
    if not diff:
        return [Noop(host, COMPONENT, f"container {spec.vmid} matches the phase")]
    effects = [e for _, _, e in diff.values()] + (["restart"] if pending else [])
    effect: Effect = max(effects, key=_ORDER.__getitem__)
    if effect == "recreate":
        keys = ", ".join(k for k, (_, _, e) in diff.items() if e == "recreate")
        if not force:
            raise InputError(f"container {spec.vmid} ({host}): {keys} cannot change in place; the container "
                             "(and its data) would have to be recreated",
                             hint="change the phase file back, or run again with --force to recreate it")
        return [
            ApiCall(host, COMPONENT, f"destroy container {spec.vmid} to recreate it ({keys} changed)",
                    action="delete", node=node, vmid=spec.vmid, params={"force": 1, "purge": 1},
                    effect="recreate", diff={k: (o, n) for k, (o, n, _) in diff.items()}),
            ApiCall(host, COMPONENT, f"create container {spec.vmid} ({host}) on {node}", action="create",
                    node=node, vmid=spec.vmid, params=params, effect="create",
                    diff={k: (None, v) for k, v in shown.items()}),
        ]
    changes: list[Change] = []
    put = {k: n for k, (_, n, _) in diff.items() if k != "rootfs"}
    if put:
        if current.get("digest"):
            put["digest"] = current["digest"]
        changes.append(ApiCall(host, COMPONENT, f"update container {spec.vmid}: {', '.join(sorted(diff))} "
                               f"({effect})", action="config", node=node, vmid=spec.vmid, params=put,
                               effect=effect,
                               diff={k: (o, n) for k, (o, n, _) in diff.items() if k != "rootfs"}))
    if "rootfs" in diff:
        changes.append(ApiCall(host, COMPONENT, f"grow rootfs of {spec.vmid} to {spec.rootfs_gb}G",
                               action="resize", node=node, vmid=spec.vmid,
                               params={"disk": "rootfs", "size": f"{spec.rootfs_gb}G"}, effect="live",
                               diff={"rootfs": (diff["rootfs"][0], diff["rootfs"][1])}))
    return changes
