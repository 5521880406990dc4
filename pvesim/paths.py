"""Where the sandbox keeps its state; one StateDir object shared by every pvesim module.

Layout (default /var/lib/pvesim):
  ca/                       ca.pem ca.key server.pem server.key   (own CA; clients verify TLS)
  credentials.json          what `pvesim credentials --json` prints (0600)
  etc/pve/nodes/<node>/lxc/<vmid>.conf   PVE-format container configs (snapshots as [sections])
  tasks/                    task index + logs (UPID-named)
  storage/local/template/cache/         vztmpl storage `local` (templates *.tar.zst)
  storage/local/dump/       backup content of `local`: vzdump archives with their .log/.notes/.protected
  storage/local-lvm/        rootdir storage: volumes are directories (vm-<vmid>-disk-0/)
  snapshots/<vmid>/<name>/  rootfs copies for snapshot/rollback
  repos/                    local apt repositories served on the bridges (nodejs, elasticsearch)
  etc/pve/firewall/         cluster.fw and <vmid>.fw (Proxmox firewall, enforced by firewall_nft)
  access.log                one JSON object per API request
  faults.json               fault injection (see faults.py)
  api.pid api.log           the API daemon
LXC itself keeps its containers in /var/lib/lxc/<vmid>/ (name = vmid, so `lxc-attach -n 200` works).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_STATE_DIR = Path(os.environ.get("PVESIM_STATE_DIR", "/var/lib/pvesim"))
LXC_PATH = Path("/var/lib/lxc")
API_PORT = 8006


@dataclass(frozen=True)
class StateDir:
    root: Path = DEFAULT_STATE_DIR

    @property
    def ca(self) -> Path:
        return self.root / "ca"

    @property
    def credentials(self) -> Path:
        return self.root / "credentials.json"

    def node_dir(self, node: str) -> Path:
        return self.root / "etc" / "pve" / "nodes" / node

    def lxc_conf(self, node: str, vmid: int) -> Path:
        return self.node_dir(node) / "lxc" / f"{vmid}.conf"

    @property
    def firewall_dir(self) -> Path:
        return self.root / "etc" / "pve" / "firewall"

    def vm_firewall(self, vmid: int) -> Path:
        """A guest's firewall config, etc/pve/firewall/<vmid>.fw as on a PVE node."""
        return self.firewall_dir / f"{vmid}.fw"

    @property
    def cluster_firewall(self) -> Path:
        return self.firewall_dir / "cluster.fw"

    @property
    def tasks(self) -> Path:
        return self.root / "tasks"

    @property
    def template_cache(self) -> Path:
        return self.root / "storage" / "local" / "template" / "cache"

    @property
    def backup_dir(self) -> Path:
        """The dump directory of storage `local` (PVE's /var/lib/vz/dump)."""
        return self.root / "storage" / "local" / "dump"

    @property
    def rootdir_storage(self) -> Path:
        return self.root / "storage" / "local-lvm"

    def volume(self, vmid: int, disk: int = 0) -> Path:
        return self.rootdir_storage / f"vm-{vmid}-disk-{disk}"

    def snapshot_dir(self, vmid: int, name: str) -> Path:
        return self.root / "snapshots" / str(vmid) / name

    @property
    def repos(self) -> Path:
        return self.root / "repos"

    @property
    def access_log(self) -> Path:
        return self.root / "access.log"

    @property
    def faults(self) -> Path:
        return self.root / "faults.json"

    @property
    def pidfile(self) -> Path:
        return self.root / "api.pid"

    @property
    def api_log(self) -> Path:
        return self.root / "api.log"

    @property
    def settings(self) -> Path:
        """nodes and other choices made at `pvesim up`, read by the daemon."""
        return self.root / "settings.json"
