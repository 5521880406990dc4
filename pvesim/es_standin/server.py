"""The stand-in's process: read the config, run the bootstrap checks, serve HTTP until SIGTERM.

Usage (as the systemd unit runs it): ES_PATH_CONF=/etc/elasticsearch python3 -m es_standin
Settings can be overridden like Elasticsearch's `-E key=value`.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import threading
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .api import Api
from .cluster import Member
from .config import (
    ES_VERSION,
    ConfigError,
    Settings,
    bootstrap_errors,
    parse_yaml_subset,
    read_jvm_options,
    resolve_host,
    settings_from,
)
from .node import ClusterNode
from .repositories import Repositories
from .snapshots import Snapshots
from .store import EsError, Store, write_json

log = logging.getLogger("o.e.n.Node")


def make_handler(api: Api) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to one Api."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "pvesim-es-standin"

        def _serve(self) -> None:
            url = urlsplit(self.path)
            params = dict(parse_qsl(url.query, keep_blank_values=True))
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            try:
                status, payload = api.handle(self.command, url.path, params, body)
            except Exception as err:  # a bug must answer 500, not drop the connection
                log.exception("unexpected error for %s %s", self.command, self.path)
                status, payload = 500, {"error": {"type": "exception", "reason": str(err)}, "status": 500}
            if isinstance(payload, str):
                data, ctype = payload.encode(), "text/plain; charset=UTF-8"
            else:
                indent = 2 if "pretty" in params else None
                data = b"" if payload is None else json.dumps(payload, indent=indent).encode()
                ctype = "application/json"
            self.send_response(status)
            self.send_header("X-Elastic-Product", "Elasticsearch")
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _serve

        def log_message(self, format: str, *args: Any) -> None:
            logging.getLogger("o.e.h.AccessLog").debug(format, *args)

    return Handler


def make_transport_handler(api: Api) -> type[BaseHTTPRequestHandler]:
    """The stand-in's transport (JSON over HTTP, not Elasticsearch's protocol): POST /_standin/<op>."""
    node = api.cluster

    def rest(body: dict[str, Any]) -> dict[str, Any]:
        """A REST request another member hands on to this one (it holds the data)."""
        status, payload = api.handle(body["method"], body["path"], body["params"],
                                     base64.b64decode(body["body"]), True)
        return {"status": status, "body": payload}

    ops: dict[str, Callable[[dict[str, Any]], Any]] = {
        "ping": node.on_ping, "state": node.on_state, "recover": node.on_recover, "docs": node.on_docs,
        "apply": node.on_apply, "master": lambda body: node.on_master(body.pop("op"), body), "rest": rest,
        **api.repositories.transport_ops(),
    }

    class Transport(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            op = self.path.removeprefix("/_standin/")
            length = int(self.headers.get("Content-Length") or 0)
            try:
                if op not in ops:
                    raise EsError(400, "action_not_found_transport_exception", f"no action [{op}]")
                status, payload = 200, ops[op](json.loads(self.rfile.read(length) or b"{}"))
            except EsError as err:
                status, payload = err.status, err.body()
            except Exception as err:  # a bug answers 500 to the other node, and is logged here
                log.exception("transport action [%s] failed", op)
                status, payload = 500, {"error": {"type": "exception", "reason": str(err)}, "status": 500}
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            logging.getLogger("o.e.t.TransportService").debug(format, *args)

    return Transport


def _setup_logging(settings: Settings) -> None:
    """Log to path.logs/<cluster.name>.log (like Elasticsearch) and to stderr (the journal)."""
    fmt = logging.Formatter(
        "[%(asctime)s][%(levelname)-5s][%(name)s] [" + settings.node_name + "] %(message)s"
    )
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(fmt)
    root = logging.getLogger()
    root.handlers = [stderr]
    root.setLevel(logging.INFO)
    settings.path_logs.mkdir(parents=True, exist_ok=True)
    logfile = logging.FileHandler(settings.path_logs / f"{settings.cluster_name}.log")
    logfile.setFormatter(fmt)
    root.addHandler(logfile)


def _node_identity(data_dir: Path) -> tuple[str, str]:
    """Node id and cluster uuid, kept across restarts in path.data."""
    ident = data_dir / "node.json"
    if ident.is_file():
        data = json.loads(ident.read_text())
        return str(data["node_id"]), str(data["cluster_uuid"])
    node_id, cluster_uuid = uuid.uuid4().hex[:22], uuid.uuid4().hex[:22]
    write_json(ident, {"node_id": node_id, "cluster_uuid": cluster_uuid})
    return node_id, cluster_uuid


def _notify_ready() -> None:
    """sd_notify(READY=1) so `systemctl start` returns once HTTP is bound (unit Type=notify)."""
    target = os.environ.get("NOTIFY_SOCKET")
    if not target:
        return
    address = "\0" + target[1:] if target.startswith("@") else target
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(b"READY=1")


def _read_settings(conf_dir: Path, overrides: list[str]) -> Settings:
    yml = conf_dir / "elasticsearch.yml"
    values = parse_yaml_subset(yml.read_text()) if yml.is_file() else {}
    for item in overrides:
        key, _, value = item.partition("=")
        values[key] = value
    return settings_from(values, read_jvm_options(conf_dir))


def _bind(hosts: list[str], port: int) -> list[ThreadingHTTPServer]:
    """One HTTP server per network.host address (a list binds each, like Elasticsearch)."""
    servers: list[ThreadingHTTPServer] = []
    for host in hosts:
        try:
            servers.append(ThreadingHTTPServer((host, port), BaseHTTPRequestHandler))
        except OSError as err:
            for server in servers:
                server.server_close()
            raise ConfigError(f"BindHttpException: Failed to bind to [{host}:{port}]: {err}") from err
        port = port or servers[0].server_address[1]
    return servers


def start(settings: Settings) -> tuple[list[ThreadingHTTPServer], Api]:
    """Run the bootstrap checks, bind HTTP (and the transport unless single-node) and open the data;
    raises ConfigError to refuse starting. The first server is the REST API of the first address."""
    errors = bootstrap_errors(settings)
    if errors:
        lines = [f"bootstrap check failure [{n}] of [{len(errors)}]: {e}" for n, e in enumerate(errors, 1)]
        raise ConfigError(
            f"[{len(errors)}] bootstrap checks failed. You must address the points described in "
            "the following lines before starting Elasticsearch.\n" + "\n".join(lines)
        )
    hosts = list(
        dict.fromkeys(resolve_host(h.strip()) for h in settings.network_host.split(",") if h.strip())
    )
    servers = _bind(hosts, settings.http_port)
    data_dir = settings.path_data / "standin"
    data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(data_dir)
    node_id, cluster_uuid = _node_identity(data_dir)
    address = f"{hosts[0]}:{servers[0].server_address[1]}"
    transports = [] if settings.single_node else _bind(hosts, settings.transport_port)
    transport = f"{hosts[0]}:{transports[0].server_address[1]}" if transports else ""
    me = Member(node_id, settings.node_name, transport, address, tuple(settings.roles))
    node = ClusterNode(settings, store, me, cluster_uuid, data_dir)
    api = Api(settings, store, Repositories(node, Snapshots(settings.path_repo)), node)
    for server in servers:
        server.RequestHandlerClass = make_handler(api)
        server.daemon_threads = True
    for server in transports:
        server.RequestHandlerClass = make_transport_handler(api)
        server.daemon_threads = True
    return servers + transports, api


def main(argv: list[str] | None = None) -> int:
    """Entry point: exit 1 with a clear log line when the config cannot be honoured."""
    parser = argparse.ArgumentParser(prog="elasticsearch", description="pvesim Elasticsearch STAND-IN")
    parser.add_argument("-E", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--conf-dir", default=os.environ.get("ES_PATH_CONF", "/etc/elasticsearch"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(levelname)-5s][%(name)s] %(message)s")
    try:
        settings = _read_settings(Path(args.conf_dir), args.overrides)
        _setup_logging(settings)
        servers, api = start(settings)
    except (ConfigError, OSError) as err:
        log.error("node validation exception / fatal error: %s", err)
        return 1
    main_server, *others = servers
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=main_server.shutdown).start())
    log.info(
        "pvesim Elasticsearch STAND-IN (not Elasticsearch) version[%s], cluster[%s], heap max[%s], "
        "path.data[%s], path.repo%s, seed_hosts%s",
        ES_VERSION,
        settings.cluster_name,
        settings.heap_max,
        settings.path_data,
        [str(p) for p in settings.path_repo],
        settings.seed_hosts,
    )
    bound = ", ".join(f"{s.server_address[0]!s}:{s.server_address[1]}" for s in servers)
    log.info("publish_address {%s}, bound_addresses {%s}", api.address, bound)
    log.info("started")
    for other in others:
        threading.Thread(target=other.serve_forever, daemon=True).start()
    threading.Thread(target=api.cluster.run, daemon=True).start()
    _notify_ready()
    with contextlib.suppress(KeyboardInterrupt):
        main_server.serve_forever()
    api.cluster.stop()
    for other in others:
        other.shutdown()
    for server in servers:
        server.server_close()
    log.info("stopped")
    return 0
