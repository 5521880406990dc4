"""Restore's config rules, as pve-container's API2/LXC.pm create_vm (restore branch) and
LXC/Create.pm sanitize_and_merge_config apply them: the backed-up config fills in what the request
does not give; rootfs, mount points, unused disks, snapshots, parent, digest and template never
come from the backup; `unique=1` gives every network device a new MAC address.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pvesim import pveconf
from pvesim.pveconf import PveConf

_NEVER = {"digest", "rootfs", "snapshots", "unprivileged", "parent", "template", "lock"}


@dataclass
class Merged:
    """The restored config: values, description, and the warnings the task log shows."""

    values: dict[str, str]
    description: str
    warnings: list[str] = field(default_factory=list)


def merge(given: Mapping[str, str], description: str | None, backup: PveConf, restricted: bool,
          unique: bool, new_mac: Callable[[], str]) -> Merged:
    """sanitize_and_merge_config: `given` (the request's config keys) wins; `restricted` (not root@pam)
    drops raw lxc.* keys and, going from unprivileged to privileged, the features."""
    values = dict(given)
    warnings: list[str] = []
    old = backup.main.values
    skipped_lxc = []
    for key, value in old.items():
        if key in _NEVER or re.fullmatch(r"(mp|unused)\d+", key):
            continue
        to_privileged = values.get("unprivileged") != "1" and old.get("unprivileged") == "1"
        if restricted and key == "features" and to_privileged:
            warnings.append("changing from unprivileged to privileged, skipping features")
            continue
        if key.startswith("lxc.") and restricted:
            skipped_lxc.append(f"{key}: {value}")
            continue
        if unique and re.fullmatch(r"net\d+", key):
            props = pveconf.parse_property_string(value)
            props["hwaddr"] = new_mac()
            values[key] = pveconf.print_property_string(props, first=("name",))
            continue
        values.setdefault(key, value)
    if skipped_lxc:
        warnings.append("\n".join(["skipping custom lxc options, restore manually as root:",
                                   "--------------------------------", *skipped_lxc,
                                   "--------------------------------"]))
    text = description if description is not None else backup.main.description
    return Merged(values, text, warnings)


def rootfs_from_backup(backup: PveConf, storage: str) -> str:
    """create_vm's storage-only mode: the backed-up rootfs, its size, on `storage` (`local-lvm:8`)."""
    value = backup.main.values.get("rootfs")
    if value is None:
        raise ValueError("rootfs configuration could not be recovered, please check and specify manually!")
    props = pveconf.parse_property_string(value, "volume")
    if props.get("volume", "").startswith("/"):
        raise ValueError("restoring rootfs to bind mount is only possible by specifying -rootfs manually!")
    size = pveconf.parse_size(props.get("size", ""))
    if not size:
        raise ValueError("unable to detect disk size - please specify rootfs (size)")
    gib = size / 1024**3
    props["volume"] = f"{storage}:{gib:g}"
    props.pop("size", None)
    return pveconf.print_property_string(props, "volume")


def parse_backup_conf(text: str) -> PveConf:
    """recover_config_from_tar: the archive's pct.conf without its snapshots and pending changes."""
    conf = pveconf.parse(text)
    conf.snapshots, conf.pending, conf.pending_delete = {}, {}, []
    return conf
