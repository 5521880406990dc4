"""`pvesim fault backup-lock VMID [--multi]`: a container as a running vzdump leaves it.

pve-manager's PVE/VZDump.pm locks each guest with `lock: backup` while it is backed up, inside a
`vzdump` task whose id is the vmid only when the job covers exactly one guest (several guests: an
empty id, so the task list filtered by vmid does not show it, PVE/API2/Tasks.pm). The task stays
running and the lock set until `pvesim fault clear` (or `clear --owner X` / `--id N` for that one),
which ends the task OK and unlocks the guest.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from pvesim import pveconf
from pvesim.faults import Faults
from pvesim.paths import StateDir
from pvesim.tasks import Upid


def _conf(state: StateDir, vmid: int) -> tuple[str, Path]:
    for path in sorted((state.root / "etc" / "pve" / "nodes").glob(f"*/lxc/{vmid}.conf")):
        return path.parent.parent.name, path
    raise ValueError(f"CT {vmid} does not exist")


def _task_files(state: StateDir, upid: str) -> tuple[Path, Path]:
    name = upid.replace("/", "_")
    return state.tasks / f"{name}.json", state.tasks / f"{name}.log"


def lock(state: StateDir, vmid: int, multi: bool, owner: str | None = None) -> str:
    """Set `lock: backup` and record a running vzdump task (tagged `owner`); returns its UPID."""
    node, path = _conf(state, vmid)
    conf, _ = pveconf.read(path)
    if conf.main.values.get("lock"):
        raise ValueError(f"CT {vmid} is locked ({conf.main.values['lock']})")
    now = int(time.time())
    upid = Upid(node, 0x300000 + vmid, now & 0xFFFFFF, now, "vzdump", "" if multi else str(vmid), "root@pam")
    text = str(upid)
    meta, log = _task_files(state, text)
    state.tasks.mkdir(parents=True, exist_ok=True)
    log.write_text(f"INFO: starting new backup job: vzdump {vmid}{' 100000' if multi else ''}\n"
                   f"INFO: Starting Backup of VM {vmid} (lxc)\n")
    meta.write_text(json.dumps({"node": node, "pid": upid.pid, "pstart": upid.pstart, "starttime": now,
                                "type": "vzdump", "id": upid.id, "user": "root@pam", "upid": text,
                                "status": "running"}))
    conf.main.values["lock"] = "backup"
    pveconf.write(path, conf)
    entry: dict[str, Any] = {"vmid": vmid, "node": node, "upid": text}
    if owner is not None:
        entry["owner"] = owner
    Faults(state.faults).add_backup_lock(entry)
    return text


def release(state: StateDir, owner: str | None = None, rule_id: int | None = None) -> None:
    """End the simulated backups of `owner` / numbered `rule_id` (neither: every one): task stopped OK,
    `lock: backup` removed."""
    for entry in Faults(state.faults).take_backup_locks(owner, rule_id):
        meta, log = _task_files(state, entry["upid"])
        if meta.exists():
            rec = json.loads(meta.read_text())
            if rec.get("status") == "running":
                with log.open("a") as f:
                    f.write(f"INFO: Finished Backup of VM {entry['vmid']}\nTASK OK\n")
                rec.update(status="stopped", exitstatus="OK", endtime=int(time.time()))
                meta.write_text(json.dumps(rec))
        try:
            _, path = _conf(state, int(entry["vmid"]))
        except ValueError:
            continue
        conf, _ = pveconf.read(path)
        if conf.main.values.get("lock") == "backup":
            del conf.main.values["lock"]
            pveconf.write(path, conf)
