"""Which privileges a container config change needs, as pve-container's LXC.pm has it.

check_ct_modify_config_perm: per option the VM.Config.* privilege on /vms/<vmid> (or on the pool
for create), a new volume Datastore.AllocateSpace on its storage, a network SDN.Use on the bridge
(pve-guest-common GuestHelpers.pm check_vnet_access, zone `localnetwork`), and the root@pam-only
rules: device passthrough, hookscript, non-volume mount points, and every feature but `nesting`
(privileged containers: any feature). Only the user `root@pam` passes those; its API tokens do not.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from pvesim import acl, guestconf
from pvesim.acl import ROOT, PermissionDenied, UserConfig

NEW_DISK = re.compile(r"([^:\s]+):(\d+(\.\d+)?)")  # LXC.pm $NEW_DISK_RE


def _vm(cfg: UserConfig, authid: str, vmid: int, pool: str | None, priv: str) -> None:
    """RPCEnvironment.pm check_vm_perm: the pool's ACL, else /vms/<vmid>."""
    if pool and acl.check(cfg, authid, f"/pool/{pool}", [priv], noerr=True):
        return
    acl.check(cfg, authid, f"/vms/{vmid}", [priv])


def check_bridge(cfg: UserConfig, authid: str, net: str) -> None:
    """LXC.pm check_bridge_access -> GuestHelpers.pm check_vnet_access (SDN.Use, per VLAN tag if any)."""
    if authid == ROOT:
        return
    props = guestconf.parse_property_string(net)
    bridge = props.get("bridge")
    if not bridge:
        return
    tags = [props["tag"]] if props.get("tag") else []
    for trunk in (t for t in props.get("trunks", "").split(";") if t):
        tags.append(trunk)
    path = f"/sdn/zones/localnetwork/{bridge}"
    for tag in tags:
        acl.check(cfg, authid, f"{path}/{tag}", ["SDN.Use"])
    if not tags:
        acl.check(cfg, authid, path, ["SDN.Use"])


def _features(value: str | None) -> dict[str, str]:
    return guestconf.parse_property_string(value or "")


def _feature_change(old: str | None, new: str | None, delete: bool) -> tuple[bool, bool]:
    """(nesting changed, another feature changed), as check_ct_modify_config_perm counts them."""
    if delete:
        feats = _features(old)
        return (list(feats) == ["nesting"], bool(feats) and list(feats) != ["nesting"])
    feats = _features(new)
    if old:
        before = _features(old)
        nesting = other = False
        for key in set(before) | set(feats):
            if before.get(key, "") != feats.get(key, ""):
                if key == "nesting":
                    nesting = True
                else:
                    other = True
        return nesting, other
    return (list(feats) == ["nesting"], bool(feats) and list(feats) != ["nesting"])


def check_modify(cfg: UserConfig, authid: str, vmid: int, pool: str | None, old: Mapping[str, str] | None,
                 new: Mapping[str, str], delete: Sequence[str], unprivileged: bool) -> None:
    """LXC.pm check_ct_modify_config_perm over every set and every deleted option."""
    if authid == ROOT:
        return
    items = [(k, False) for k in new] + [(k, True) for k in delete]
    for opt, deleting in items:
        if opt in ("cores", "cpuunits", "cpulimit"):
            _vm(cfg, authid, vmid, pool, "VM.Config.CPU")
        elif opt == "rootfs" or re.fullmatch(r"mp\d+", opt):
            _vm(cfg, authid, vmid, pool, "VM.Config.Disk")
            if deleting:
                continue
            volume = guestconf.parse_property_string(new[opt], "volume").get("volume", "")
            if volume.startswith("/"):
                raise PermissionDenied("mount point type bind is only allowed for root@pam")
            m = NEW_DISK.fullmatch(volume)
            if m:
                acl.check(cfg, authid, f"/storage/{m.group(1)}", ["Datastore.AllocateSpace"])
        elif opt in ("memory", "swap"):
            _vm(cfg, authid, vmid, pool, "VM.Config.Memory")
        elif re.fullmatch(r"net\d+", opt):
            _vm(cfg, authid, vmid, pool, "VM.Config.Network")
            if old and old.get(opt):
                check_bridge(cfg, authid, old[opt])
            if not deleting and new.get(opt):
                check_bridge(cfg, authid, new[opt])
        elif re.fullmatch(r"dev\d+", opt):
            raise PermissionDenied("configuring device passthrough is only allowed for root@pam")
        elif opt in ("nameserver", "searchdomain", "hostname"):
            _vm(cfg, authid, vmid, pool, "VM.Config.Network")
        elif opt == "features":
            if not unprivileged:
                raise PermissionDenied("changing feature flags for privileged container is only allowed "
                                       "for root@pam")
            nesting, other = _feature_change((old or {}).get(opt), new.get(opt), deleting)
            if other:
                raise PermissionDenied("changing feature flags (except nesting) is only allowed for root@pam")
            if nesting:
                _vm(cfg, authid, vmid, pool, "VM.Allocate")
        elif opt == "hookscript":
            raise PermissionDenied("changing the hookscript is only allowed for root@pam")
        else:
            _vm(cfg, authid, vmid, pool, "VM.Config.Options")
