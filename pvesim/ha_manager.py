"""The sandbox's HA manager: pve-ha-crm and the nodes' pve-ha-lrm in one daemon thread.

Every second (PVE's CRM: every 10 s) one round reads resources.cfg, rules.cfg and the down nodes
(node_fault.py) and drives each HA resource toward its requested state, as Manager.pm does:
- `started`: started on its node when that node is allowed; if a negative resource-affinity rule
  forbids the node (another resource of the rule is there), it is relocated first: stopped, its config
  moved to the node select_service_node picks, started there (PVE: `request_start_balance`/relocate);
  if no node is allowed, it stays stopped and its crm_state says why (`error` + the reason in the log);
- `stopped` / `disabled`: stopped;
- `ignored`: left alone and dropped from the manager status;
- on a down node: `fence` until the node's fence delay has passed, then `recovery`: the config is moved
  (steal_service) to an allowed online node and the resource started there if requested so.
The outcome goes to etc/pve/ha/manager_status, which /cluster/ha/status/* answer from. Starts and
stops run as ordinary tasks (vzstart/vzstop by root@pam) on the resource's node.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

from pvesim import ha_rules
from pvesim import handlers_lxcstore as store
from pvesim.backend import Log
from pvesim.ha_config import HaFiles
from pvesim.server import App

ROUND_SECONDS = 1.0


def _vmid(sid: str) -> int | None:
    kind, _, name = sid.partition(":")
    return int(name) if kind == "ct" and name.isdigit() else None


class Crm:
    """One CRM for one App; `round()` is one pass (the thread calls it every ROUND_SECONDS)."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.files = HaFiles(app.state.root)
        self.busy: dict[str, str] = {}  # sid -> UPID of the task still acting on it
        self.failed: dict[str, int] = {}  # sid -> tasks that failed in a row (max_restart, then `error`)
        self.was_down: set[str] = set()
        self.log: list[str] = []

    def _note(self, line: str) -> None:
        self.log = [*self.log[-49:], f"{time.strftime('%H:%M:%S')} {line}"]
        print(f"ha: {line}", file=sys.stderr, flush=True)

    def _idle(self, sid: str) -> bool:
        upid = self.busy.get(sid)
        if upid is None:
            return True
        rec = self.app.tasks.status(upid)
        if rec is None or rec.get("status") != "running":
            del self.busy[sid]
            ok = rec is not None and str(rec.get("exitstatus", "")).startswith(("OK", "WARNINGS"))
            self.failed[sid] = 0 if ok else self.failed.get(sid, 0) + 1
            return True
        return False

    def round(self, now: float | None = None) -> dict[str, Any]:
        """One pass; returns the manager status it wrote."""
        now = time.time() if now is None else now
        app = self.app
        down = app.faults.nodes_down()
        online = [n for n in app.nodes if n not in down]
        for node in sorted(self.was_down - set(down)):
            self._node_back(node)
        self.was_down = set(down)
        with self.files.locked():
            resources = self.files.read("resources").ids
            rules = self.files.read("rules").ids
        old = self.files.manager_status().get("service_status", {})
        placement: dict[str, str] = {}
        for sid in resources:
            vmid = _vmid(sid)
            found = store.locate(app, vmid) if vmid is not None else None
            if found is not None:
                placement[sid] = found
        services: dict[str, Any] = {}
        for sid in sorted(resources):
            request = resources[sid].get("state", "started")
            request = "started" if request == "enabled" else request
            if request == "ignored" or sid not in placement:
                continue
            entry = self._drive(sid, request, placement, online, down, rules, now,
                                int(resources[sid].get("max_restart", 1)))
            if old.get(sid, {}).get("state") != entry["state"]:
                entry["uid"] = f"{sid}-{int(now)}"
            else:
                entry["uid"] = old[sid].get("uid", f"{sid}-{int(now)}")
            services[sid] = entry
        node_status = {n: ("online" if n not in down else
                           "fence" if now - float(down[n]["since"]) < float(down[n].get("fence_delay", 0))
                           else "unknown") for n in app.nodes}
        status = {"master_node": online[0] if online else app.nodes[0], "timestamp": int(now),
                  "node_status": node_status, "service_status": services, "log": self.log[-20:]}
        self.files.write_manager_status(status)
        return status

    def _drive(self, sid: str, request: str, placement: dict[str, str], online: list[str],
               down: dict[str, dict[str, Any]], rules: dict[str, Any], now: float,
               max_restart: int) -> dict[str, Any]:
        """Act on one resource; its service_status entry. A locked config (create, backup...) waits; a
        resource whose start failed more than max_restart times in a row is left in `error`."""
        app, node = self.app, placement[sid]
        vmid = _vmid(sid)
        assert vmid is not None
        if request == "disabled":
            self.failed.pop(sid, None)  # disabling is how an `error` is cleared
        if self._idle(sid) and self.failed.get(sid, 0) > max_restart:
            return {"node": node, "state": "error"}
        if node not in down and store.load(app, node, vmid)[0].main.values.get("lock"):
            return {"node": node, "state": "started" if store.is_running(app, vmid) else "request_start"}
        if node in down:
            if request == "disabled":
                return {"node": node, "state": "stopped"}
            fence = down[node]
            if now - float(fence["since"]) < float(fence.get("fence_delay", 0)):
                return {"node": node, "state": "fence"}
            target = ha_rules.select_node(sid, None, online, rules, placement, stay=False)
            if target is None:
                self._note(f"recovering service '{sid}' from fenced node '{node}' failed, "
                           "no recovery node found")
                return {"node": node, "state": "recovery"}
            self._note(f"recover service '{sid}' from fenced node '{node}' to node '{target}'")
            self._steal(vmid, node, target)
            placement[sid] = target
            if request == "started":
                self._task(sid, target, "vzstart", vmid, lambda log: self._start(target, vmid, log))
            return {"node": target, "state": "started" if request == "started" else "stopped"}
        running = store.is_running(app, vmid)
        if request in ("stopped", "disabled"):
            if running and self._idle(sid):
                self._task(sid, node, "vzstop", vmid, lambda log: app.backend.stop(vmid, log))
            return {"node": node, "state": "stopped" if not running else "request_stop"}
        if not self._idle(sid):
            return {"node": node, "state": "started" if running else "request_start"}
        target = ha_rules.select_node(sid, node, online, rules, placement)
        if target is None:
            self._note(f"service '{sid}': no node allowed by the HA rules; not starting it")
            return {"node": node, "state": "error" if not running else "started"}
        if target != node:
            self._note(f"service '{sid}': node '{node}' breaks a resource-affinity rule, "
                       f"relocate to '{target}'")
            placement[sid] = target
            self._task(sid, node, "vzstop" if running else "hamigrate", vmid,
                       lambda log: self._relocate(vmid, node, target, running, log))
            return {"node": node, "state": "relocate", "target": target}
        if not running:
            self._task(sid, node, "vzstart", vmid, lambda log: self._start(node, vmid, log))
            return {"node": node, "state": "request_start"}
        return {"node": node, "state": "started"}

    def _task(self, sid: str, node: str, kind: str, vmid: int, work: Any) -> None:
        self.busy[sid] = self.app.tasks.start(node, kind, str(vmid), "root@pam", work, vmid=vmid)

    def _start(self, node: str, vmid: int, log: Log) -> None:
        from pvesim.handlers_lxc import start_container

        start_container(self.app, node, vmid, log)

    def _steal(self, vmid: int, source: str, target: str) -> None:
        """Env/PVE2.pm steal_service: the config moves to the target node's directory."""
        app = self.app
        with app.conf_lock:
            src, dst = app.state.lxc_conf(source, vmid), app.state.lxc_conf(target, vmid)
            dst.parent.mkdir(parents=True, exist_ok=True)
            src.rename(dst)

    def _relocate(self, vmid: int, source: str, target: str, running: bool, log: Log) -> None:
        if running:
            self.app.backend.stop(vmid, log)
        log(f"moving CT {vmid} from {source} to {target}")
        self._steal(vmid, source, target)
        self._start(target, vmid, log)

    def _node_back(self, node: str) -> None:
        """A node that comes back boots: its onboot containers that are not HA resources start."""
        from pvesim.handlers_lxc import start_onboot

        self._note(f"node '{node}' is online again")
        managed = {_vmid(s) for s in self.files.read("resources").ids}
        start_onboot(self.app, only=[node], skip=managed)


def start(app: App) -> Crm:
    """Run the CRM in a daemon thread; a failing round is logged and the next one runs."""
    crm = Crm(app)

    def loop() -> None:
        while True:
            try:
                crm.round()
            except Exception as e:  # the manager must keep running, as pve-ha-crm does
                print(f"ha: round failed: {e}", file=sys.stderr, flush=True)
            time.sleep(ROUND_SECONDS)

    threading.Thread(target=loop, daemon=True, name="ha-crm").start()
    return crm
