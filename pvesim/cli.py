"""`pvesim up|status|down|credentials|fault|daemon`: the sandbox's command line (argparse, stdlib)."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pvesim import backup_fault, daemon, lxc, network, node_fault, npmproxy, preflight, proxy, repos
from pvesim.backend import BackendError
from pvesim.faults import Faults
from pvesim.paths import DEFAULT_STATE_DIR, StateDir


def _say(line: str) -> None:
    print(line, flush=True)


def _step(what: str, fn: Callable[[], Any]) -> Any:
    _say(f"- {what}")
    return fn()


PROXY_KEYS = ("guest_proxy", "port", "addresses", "cache_dir")


def _stable(proxy_status: dict[str, Any]) -> dict[str, Any]:
    """What clients need from the proxy's status (not its pid), so credentials.json stays put."""
    return {k: proxy_status[k] for k in PROXY_KEYS if k in proxy_status}


def cmd_preflight(args: argparse.Namespace) -> int:
    """Check what the sandbox needs from this machine; change nothing."""
    if not preflight.report(say=_say):
        return 1
    _say(f"preflight: ok ({len(preflight.COMMANDS)} commands, {len(preflight.FILES)} files, "
         "kernel features, apt and npm configuration)")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    """Bring the sandbox up; idempotent (a second run changes nothing). Preflight first: a missing
    package stops it before anything on the host is changed."""
    if not preflight.report(say=_say):
        return 1
    state = StateDir(Path(args.state_dir))
    state.root.mkdir(parents=True, exist_ok=True)
    # 0711: unprivileged containers (host uid 100000) must traverse it to reach their rootfs;
    # nothing in it is listable, and secrets inside are 0600.
    state.root.chmod(0o711)
    settings = daemon.load_settings(state)
    if args.nodes:
        settings["nodes"] = [n.strip() for n in args.nodes.split(",") if n.strip()]
    nodes_changed = daemon.save_settings(state, settings)
    if daemon.ensure_ca(state):
        _say("- created the sandbox CA and the API certificate")
    daemon.ensure_secrets(state)
    extra: dict[str, Any] = {}
    _step("network: bridges vmbr20/vmbr30, unreachable route, nft rules",
          lambda: network.setup_network(state))
    _step("package proxy (apt-cacher-ng)", lambda: proxy.start_proxy(state))
    extra["proxy_service"] = _stable(proxy.status(state))
    npm = npmproxy.status(state)
    _step(f"npm registry proxy (port {npm['port']}, caching {npm['upstream']})",
          lambda: npmproxy.start(state))
    extra["npm_registry"] = npm["registry"]
    extra["npm_proxy_service"] = {k: npm[k] for k in ("port", "upstream", "cache_dir", "access_log")}
    _step("local apt repositories", lambda: repos.build_repos(state, _say))
    extra.update(repos.client_info(state))
    if daemon.write_credentials(state, extra):
        _say(f"- wrote {state.credentials}")
    if nodes_changed and daemon.daemon_pid(state) is not None:
        daemon.stop(state)
    if daemon.start_detached(state):
        _say(f"- started the API daemon (log {state.api_log})")
    _say(f"pvesim is up: https://127.0.0.1:8006/api2/json  nodes={','.join(settings['nodes'])}  "
         f"credentials: pvesim credentials --json")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Print what runs: daemon, nodes, containers, proxy."""
    state = StateDir(Path(args.state_dir))
    pid = daemon.daemon_pid(state)
    info: dict[str, Any] = {
        "state_dir": str(state.root),
        "api": {"pid": pid, "answers": daemon.answers(state) if pid else False},
        "nodes": daemon.load_settings(state)["nodes"],
        "containers": {n: sorted(p.stem for p in (state.node_dir(n) / "lxc").glob("*.conf"))
                       for n in daemon.load_settings(state)["nodes"]},
    }
    info["proxy"] = proxy.status(state)
    info["npm_proxy"] = npmproxy.status(state)
    print(json.dumps(info, indent=1))
    return 0 if info["api"]["answers"] else 1


def cmd_down(args: argparse.Namespace) -> int:
    """Stop the API; with --purge also containers, the package proxies, network and the state dir."""
    state = StateDir(Path(args.state_dir))
    if daemon.stop(state):
        _say("- stopped the API daemon")
    if not args.purge:
        # containers keep running, like a pveproxy restart; the proxy and repos stay for them
        _say("pvesim API is down (containers, proxy and network left running; --purge removes all)")
        return 0
    _step("destroying the sandbox's containers", lambda: lxc.destroy_all(state))
    _step("stopping the package proxy", lambda: proxy.stop_proxy(state))
    _step("stopping the npm registry proxy", lambda: npmproxy.stop(state))
    _step("removing bridges, route and nft rules", lambda: network.teardown_network(state))
    if state.root.exists():
        shutil.rmtree(state.root)
        _say(f"- removed {state.root}")
    _say("pvesim purged")
    return 0


def cmd_credentials(args: argparse.Namespace) -> int:
    """Print credentials.json (after `pvesim up`)."""
    state = StateDir(Path(args.state_dir))
    if not state.credentials.exists():
        print(f"no credentials in {state.root}: run `pvesim up` first", file=sys.stderr)
        return 1
    data = json.loads(state.credentials.read_text())
    if args.json:
        print(json.dumps(data, indent=1))
    else:
        for k, v in data.items():
            print(f"{k}: {v}")
    return 0


def cmd_fault(args: argparse.Namespace) -> int:
    """Set, list or clear fault injection rules."""
    state = StateDir(Path(args.state_dir))
    faults = Faults(state.faults)
    kind = args.kind
    if kind == "list":
        print(json.dumps(faults.read(args.owner), indent=1))
    elif kind == "clear":
        faults.clear(args.owner, args.id)
        if args.owner is None and args.id is None:
            faults.set_ticket_lifetime(None)
        backup_fault.release(state, args.owner, args.id)
        for node in node_fault.release(state, args.owner, args.id):
            _say(f"- node {node} is back online")
    elif kind == "backup-lock":
        print(backup_fault.lock(state, args.vmid, args.multi, args.owner))
    elif kind == "expire-tickets":
        faults.expire_tickets()
    elif kind == "ticket-lifetime":
        faults.set_ticket_lifetime(args.seconds)
    elif kind == "node-down":
        backend = lxc.LxcBackend(state)

        def power_off(vmid: int) -> bool:
            if not backend.is_running(vmid):
                return False
            backend.stop(vmid, lambda line: None)
            return True

        print(node_fault.down(state, args.node, daemon.load_settings(state)["nodes"], args.fence_delay,
                              args.owner, stop=power_off, say=_say))
    elif kind == "node-up":
        if not node_fault.up(state, args.node):
            raise ValueError(f"node {args.node} is not down")
    elif kind == "kill-guest":
        lxc.LxcBackend(state).stop(args.vmid, _say)
    else:
        rule: dict[str, Any] = {"kind": kind, "count": args.count}
        for key in ("type", "id", "message", "seconds", "status", "path", "vmid", "user", "prefix", "owner"):
            value = getattr(args, key, None)
            if value is not None:
                rule[key] = value
        print(faults.add(rule))
    return 0


def cmd_present_as(args: argparse.Namespace) -> int:
    """Present the API as PVE 8 (HA groups, no HA rules) or PVE 9 (the default); the API reads it live."""
    state = StateDir(Path(args.state_dir))
    settings = daemon.load_settings(state)
    settings["pve_version"] = int(args.major)
    daemon.save_settings(state, settings)
    _say(f"the API presents itself as Proxmox VE {args.major}")
    return 0


def cmd_npm_proxy(args: argparse.Namespace) -> int:
    """Run the npm registry proxy in the foreground (what `up` starts detached)."""
    npmproxy.serve(StateDir(Path(args.state_dir)), args.port)
    return 0


def cmd_daemon(args: argparse.Namespace) -> int:
    """Run the API in the foreground (what `up` starts detached)."""
    daemon.serve(StateDir(Path(args.state_dir)))
    return 0


def _fault_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("fault", parents=[common], help="fault injection for tests")
    kinds = p.add_subparsers(dest="kind", required=True)
    owner = argparse.ArgumentParser(add_help=False)
    owner.add_argument("--owner", help="tag the rule, so that `fault clear --owner` removes only yours")
    scope = argparse.ArgumentParser(add_help=False, parents=[owner])
    scope.add_argument("--vmid", type=int, help="only API paths under /lxc/VMID (task-fail: tasks of VMID)")
    scope.add_argument("--user", help="only requests and tasks of this user@realm or user@realm!token")
    k = kinds.add_parser("task-fail", parents=[scope], help="fail the next task(s)")
    k.add_argument("--type", help="only tasks of this type (vzcreate, vzstart, download, ...)")
    k.add_argument("--id", help="only tasks of this guest (vmid): tests sharing the sandbox stay apart")
    k.add_argument("--message", default="injected failure (pvesim fault)")
    k.add_argument("--count", type=int, default=1)
    request = argparse.ArgumentParser(add_help=False, parents=[scope])
    request.add_argument("--prefix", help="only API paths at or under this one (/nodes/pve1/lxc/200)")
    k = kinds.add_parser("delay", parents=[request], help="delay responses")
    k.add_argument("--seconds", type=float, required=True)
    k.add_argument("--count", type=int, default=1)
    k.add_argument("--path", help="regex on the request path")
    k = kinds.add_parser("http-error", parents=[request], help="answer 5xx")
    k.add_argument("--status", type=int, default=500)
    k.add_argument("--message")
    k.add_argument("--count", type=int, default=1)
    k.add_argument("--path", help="regex on the request path")
    k = kinds.add_parser("drop", parents=[request], help="drop the connection without an answer")
    k.add_argument("--count", type=int, default=1)
    k.add_argument("--path", help="regex on the request path")
    kinds.add_parser("expire-tickets", help="every ticket issued until now is expired")
    k = kinds.add_parser("ticket-lifetime", help="override the 2 h ticket lifetime")
    k.add_argument("seconds", type=int)
    k = kinds.add_parser("kill-guest", help="hard-stop a container behind the API's back (a crash)")
    k.add_argument("vmid", type=int)
    k = kinds.add_parser("node-down", parents=[owner],
                         help="a node loses power: its containers stop at once, it shows offline, calls to "
                              "it fail, HA resources are recovered elsewhere after the fence delay")
    k.add_argument("node")
    k.add_argument("--fence-delay", type=float, default=node_fault.DEFAULT_FENCE_DELAY,
                   help=f"seconds before the HA manager fences the node and recovers its resources (default "
                        f"{node_fault.DEFAULT_FENCE_DELAY:g}; real Proxmox VE takes about "
                        f"{node_fault.PVE_FENCE_SECONDS} s)")
    k = kinds.add_parser("node-up", help="the node is back online (HA resources stay where they were "
                                         "recovered)")
    k.add_argument("node")
    k = kinds.add_parser("backup-lock", parents=[owner],
                         help="a running vzdump holds `lock: backup` until `fault clear`")
    k.add_argument("vmid", type=int)
    k.add_argument("--multi", action="store_true", help="the job covers several guests: the task has no id")
    k = kinds.add_parser("clear", help="remove rules and end simulated backups: all, or --owner's, or --id's")
    k.add_argument("--owner", help="only the rules and backups tagged with this owner")
    k.add_argument("--id", type=int, help="only the rule (or backup) with this number, as printed when added")
    k = kinds.add_parser("list", help="show the rules")
    k.add_argument("--owner", help="only the rules and backups tagged with this owner")


def parser() -> argparse.ArgumentParser:
    """The argument parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", default=str(DEFAULT_STATE_DIR),
                        help="state directory (default /var/lib/pvesim or $PVESIM_STATE_DIR)")
    p = argparse.ArgumentParser(prog="pvesim",
                                description="Proxmox VE API sandbox backed by real LXC containers")
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", parents=[common], help="start the sandbox (idempotent)")
    up.add_argument("--nodes", help="comma-separated node names (default pve1,pve2,pve3)")
    up.set_defaults(func=cmd_up)
    sub.add_parser("preflight", parents=[common],
                   help="check the host's packages, files and kernel features; change nothing").set_defaults(
        func=cmd_preflight)
    sub.add_parser("status", parents=[common], help="show what runs").set_defaults(func=cmd_status)
    down = sub.add_parser("down", parents=[common], help="stop the API (and with --purge remove everything)")
    down.add_argument("--purge", action="store_true")
    down.set_defaults(func=cmd_down)
    cred = sub.add_parser("credentials", parents=[common], help="print what clients need")
    cred.add_argument("--json", action="store_true")
    cred.set_defaults(func=cmd_credentials)
    present = sub.add_parser("present-as", parents=[common],
                             help="answer as Proxmox VE 8 (HA groups) or 9 (HA rules, the default)")
    present.add_argument("major", choices=["8", "9"])
    present.set_defaults(func=cmd_present_as)
    _fault_parser(sub, common)
    sub.choices["fault"].set_defaults(func=cmd_fault)
    sub.add_parser("daemon", parents=[common], help=argparse.SUPPRESS).set_defaults(func=cmd_daemon)
    npm = sub.add_parser("npm-proxy", parents=[common], help=argparse.SUPPRESS)
    npm.add_argument("--port", type=int, default=4873)
    npm.set_defaults(func=cmd_npm_proxy)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `pvesim` console script."""
    args = parser().parse_args(argv)
    try:
        rc: int = args.func(args)
    except (BackendError, OSError, RuntimeError, TimeoutError, ValueError) as e:
        print(f"pvesim: {e}", file=sys.stderr)
        return 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
