"""Read elasticsearch.yml (a small YAML subset) and jvm.options(.d) the way Elasticsearch does.

Runs inside the guest: Python stdlib only, no PyYAML, no pvesim imports.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, field
from pathlib import Path

ES_VERSION = "8.15.0"
SETTING_KEYS = (
    "cluster.name",
    "node.name",
    "network.host",
    "http.port",
    "transport.port",
    "discovery.seed_hosts",
    "cluster.initial_master_nodes",
    "node.roles",
    "path.data",
    "path.logs",
    "path.repo",
    "discovery.type",
)
Value = str | list[str]


class ConfigError(Exception):
    """A setting the stand-in cannot use; Elasticsearch would refuse to start too."""


def _scalar(text: str) -> str:
    """One YAML scalar without quotes or trailing comment."""
    text = text.strip()
    if text and text[0] in "\"'":
        quote = text[0]
        end = text.find(quote, 1)
        return text[1:end] if end > 0 else text[1:]
    return re.sub(r"\s+#.*$", "", text).strip()


def _flow_list(text: str) -> list[str]:
    """`[a, "b"]` -> ['a', 'b']."""
    inner = text.strip()[1:-1]
    return [_scalar(item) for item in inner.split(",") if item.strip()]


def parse_yaml_subset(text: str) -> dict[str, Value]:
    """Flat `key: value` lines, flow lists `[a, b]`, block lists (`key:` then `- item`), and
    nested mappings flattened to dotted keys (`path:` / `  data: x` -> path.data)."""
    result: dict[str, Value] = {}
    parents: list[tuple[int, str]] = []
    pending_list: str | None = None
    for raw in text.splitlines():
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        indent = len(raw) - len(raw.lstrip(" "))
        line = raw.strip()
        if line.startswith("- ") or line == "-":
            if pending_list is not None:
                listed = result.setdefault(pending_list, [])
                if isinstance(listed, list):
                    listed.append(_scalar(line[1:]))
            continue
        key, sep, rest = line.partition(":")
        if not sep:
            raise ConfigError(f"cannot parse line {raw!r} in elasticsearch.yml")
        while parents and parents[-1][0] >= indent:
            parents.pop()
        full_key = ".".join([p for _, p in parents] + [_scalar(key)])
        value = _scalar(rest) if not rest.strip().startswith("[") else rest.strip()
        pending_list = None
        if value == "":
            parents.append((indent, _scalar(key)))
            pending_list = full_key
        elif value.startswith("["):
            result[full_key] = _flow_list(value)
        else:
            result[full_key] = value
    return result


_HEAP_RE = re.compile(r"^-Xm([sx])(\d+)([kKmMgGtT]?)$")
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_heap_options(texts: list[str]) -> dict[str, int]:
    """-Xms/-Xmx in bytes from jvm.options contents in order (later files win, like the JVM).

    Lines may carry a JDK range prefix (`17-:-Xmx1g`); comments start with #.
    """
    heap: dict[str, int] = {}
    for text in texts:
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            line = re.sub(r"^\d+(-\d*)?:", "", line)
            match = _HEAP_RE.match(line)
            if match:
                kind, number, unit = match.groups()
                heap["Xms" if kind == "s" else "Xmx"] = int(number) * _UNITS[unit.lower()]
    return heap


def read_jvm_options(conf_dir: Path) -> dict[str, int]:
    """jvm.options then jvm.options.d/*.options in lexicographic order (Elasticsearch's rule)."""
    texts = []
    main = conf_dir / "jvm.options"
    if main.is_file():
        texts.append(main.read_text())
    extra = conf_dir / "jvm.options.d"
    if extra.is_dir():
        texts += [p.read_text() for p in sorted(extra.glob("*.options"))]
    return parse_heap_options(texts)


def format_bytes(size: int) -> str:
    """Elasticsearch's ByteSizeValue text: 4294967296 -> '4gb', 536870912 -> '512mb'."""
    for unit, factor in (("tb", 1024**4), ("gb", 1024**3), ("mb", 1024**2), ("kb", 1024)):
        if size >= factor:
            value = size / factor
            return f"{value:.0f}{unit}" if value == int(value) else f"{value:.1f}{unit}"
    return f"{size}b"


def resolve_host(value: str) -> str:
    """network.host special values (`_local_`, `_site_`) and names -> one IP address to bind."""
    if value in ("_local_", "localhost"):
        return "127.0.0.1"
    if value in ("_site_", "_global_"):
        value = socket.gethostname()  # a PVE guest's /etc/hosts maps its name to its address
    try:
        return socket.gethostbyname(value)
    except OSError as err:
        raise ConfigError(f"network.host [{value}] cannot be resolved: {err}") from err


@dataclass
class Settings:
    """The settings the stand-in honours, with Elasticsearch's defaults for the deb package."""

    cluster_name: str = "elasticsearch"
    node_name: str = field(default_factory=socket.gethostname)
    network_host: str = "127.0.0.1"  # comma-separated when network.host is a list
    http_port: int = 9200
    transport_port: int = 9300
    seed_hosts: list[str] = field(default_factory=list)  # host or host:port (port: transport.port)
    initial_master_nodes: list[str] = field(default_factory=list)
    roles: list[str] = field(default_factory=lambda: ["data", "ingest", "master"])
    path_data: Path = Path("/var/lib/elasticsearch")
    path_logs: Path = Path("/var/log/elasticsearch")
    path_repo: list[Path] = field(default_factory=list)
    discovery_type: str = ""
    heap_min: int = 1024**3
    heap_max: int = 1024**3
    raw: dict[str, Value] = field(default_factory=dict)

    @property
    def single_node(self) -> bool:
        """A cluster of this node alone: `discovery.type: single-node`, or no discovery settings at all
        (Elasticsearch then forms a cluster from itself alone)."""
        return self.discovery_type == "single-node" or not (self.seed_hosts or self.initial_master_nodes)


def _as_str(value: Value) -> str:
    return value[0] if isinstance(value, list) else value


def _as_list(value: Value) -> list[str]:
    """A list setting written as a YAML list or as comma-separated text."""
    items = value if isinstance(value, list) else value.split(",")
    return [item.strip() for item in items if item.strip()]


def _port(values: dict[str, Value], key: str, default: int) -> int:
    if key not in values:
        return default
    port = _as_str(values[key]).split("-")[0]
    if not port.isdigit():
        raise ConfigError(f"{key} [{port}] is not a port number")
    return int(port)


def settings_from(values: dict[str, Value], heap: dict[str, int]) -> Settings:
    """Build Settings from parsed yml values and heap options."""
    settings = Settings(raw=values)
    if "cluster.name" in values:
        settings.cluster_name = _as_str(values["cluster.name"])
    if "node.name" in values:
        settings.node_name = _as_str(values["node.name"])
    if "network.host" in values:
        host = values["network.host"]
        settings.network_host = ",".join(host) if isinstance(host, list) else host
    settings.http_port = _port(values, "http.port", settings.http_port)
    settings.transport_port = _port(values, "transport.port", settings.transport_port)
    settings.seed_hosts = _as_list(values.get("discovery.seed_hosts", []))
    settings.initial_master_nodes = _as_list(values.get("cluster.initial_master_nodes", []))
    if "node.roles" in values:
        settings.roles = _as_list(values["node.roles"])
    if "path.data" in values:
        settings.path_data = Path(_as_str(values["path.data"]))
    if "path.logs" in values:
        settings.path_logs = Path(_as_str(values["path.logs"]))
    repo = values.get("path.repo", [])
    repo_list = repo if isinstance(repo, list) else [r for r in repo.split(",") if r.strip()]
    settings.path_repo = [Path(r.strip()) for r in repo_list]
    settings.discovery_type = _as_str(values.get("discovery.type", ""))
    settings.heap_max = heap.get("Xmx", settings.heap_max)
    settings.heap_min = heap.get("Xms", settings.heap_min if "Xmx" not in heap else settings.heap_max)
    return settings


def load_settings(conf_dir: Path) -> Settings:
    """Read <conf_dir>/elasticsearch.yml and the jvm options next to it."""
    yml = conf_dir / "elasticsearch.yml"
    values = parse_yaml_subset(yml.read_text()) if yml.is_file() else {}
    return settings_from(values, read_jvm_options(conf_dir))


def bootstrap_errors(settings: Settings) -> list[str]:
    """Elasticsearch's bootstrap checks that the stand-in enforces (empty list = may start)."""
    errors = []
    if settings.discovery_type == "single-node" and settings.initial_master_nodes:
        errors.append(
            "setting [cluster.initial_master_nodes] is not allowed when [discovery.type] is set to "
            "[single-node]"
        )
    if settings.heap_min != settings.heap_max:
        errors.append(
            f"initial heap size [{settings.heap_min}] not equal to maximum heap size "
            f"[{settings.heap_max}]; this can cause resize pauses"
        )
    return errors
