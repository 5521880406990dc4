"""The inventory: where Proxmox is, how to reach it and the guests, where packages come from.

Strict pydantic models (unknown keys are errors); `load_inventory(path)` reports every problem as
`file:line: key: what is wrong -> what to write`. Relative paths resolve against the inventory
file's directory. No network here: secrets for the API are read only when asked (`Auth.secret()`).
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, model_validator

from . import seams
from .errors import InputError
from .loader import load_model
from .packaged import PHASES_DIR

PROJECT_INVENTORY = Path("inventory.yml")  # what `init` writes; the CLI's inventory when no -i is given
_FINGERPRINT = re.compile(r"^([0-9A-Fa-f]{2}:){31}[0-9A-Fa-f]{2}$")
_SIZE = re.compile(r"^[0-9]+(kB|MB|GB|TB)$")
_REDIS_SIZE = re.compile(r"^[0-9]+(kb|mb|gb)$")
_HEAP = re.compile(r"^[0-9]+[mg]$")
_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
_STORAGE_ID = r"^[A-Za-z][A-Za-z0-9._-]*$"  # PVE's pve-storage-id


def _resolve(value: Path, info: ValidationInfo) -> Path:
    """Resolve a relative path against the inventory file's directory (validation context)."""
    base = (info.context or {}).get("base_dir")
    if value.is_absolute() or base is None:
        return value
    return (Path(base) / value).resolve()


RelPath = Annotated[Path, AfterValidator(_resolve)]


def _ip(value: str) -> str:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        raise ValueError(f"'{value}' is not an IPv4 address -> write four numbers 0-255, "
                         "e.g. 10.0.20.1") from None
    return value


IPv4 = Annotated[str, AfterValidator(_ip)]


class Strict(BaseModel):
    """Base of every inventory model: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Auth(Strict):
    """API token (from an env var or a file) or a ticket login (user + password env/file)."""

    token_id: str | None = Field(default=None, pattern=r"^[^@\s]+@[^!\s]+![A-Za-z0-9_.-]+$",
                                 description="an API token id USER@REALM!TOKENID",
                                 examples=["root@pam!psa-provision"])
    token_secret_env: str | None = Field(default=None, pattern=_ENV_NAME, description="an environment "
                                         "variable name", examples=["PSA_PVE_TOKEN_SECRET"])
    token_secret_file: RelPath | None = None
    user: str | None = Field(default=None, pattern=r"^[^@\s]+@\S+$", description="a user USER@REALM",
                             examples=["root@pam"])
    password_env: str | None = Field(default=None, pattern=_ENV_NAME, description="an environment "
                                     "variable name", examples=["PSA_PVE_PASSWORD"])
    password_file: RelPath | None = None

    @model_validator(mode="after")
    def _one_method(self) -> Auth:
        token = self.token_id is not None
        login = self.user is not None
        if token == login:
            raise ValueError("give either token_id (API token, e.g. root@pam!psa-provision) or user "
                             "(ticket login, e.g. root@pam), not both or neither -> keep exactly one")
        if token and (self.token_secret_env is None) == (self.token_secret_file is None):
            raise ValueError("an API token needs exactly one of token_secret_env or token_secret_file "
                             "-> add e.g. token_secret_env: PSA_PVE_TOKEN_SECRET")
        if login and (self.password_env is None) == (self.password_file is None):
            raise ValueError("a ticket login needs exactly one of password_env or password_file "
                             "-> add e.g. password_env: PSA_PVE_PASSWORD")
        if token and (self.password_env or self.password_file):
            raise ValueError("password_env/password_file belong to a user login -> remove them")
        if login and (self.token_secret_env or self.token_secret_file):
            raise ValueError("token_secret_env/token_secret_file belong to token_id -> remove them")
        return self

    @property
    def kind(self) -> Literal["token", "ticket"]:
        return "token" if self.token_id else "ticket"

    def secret(self) -> str:
        """The token secret or password, read now from its env var or file (InputError if absent)."""
        env = self.token_secret_env or self.password_env
        file = self.token_secret_file or self.password_file
        if env is not None:
            value = os.environ.get(env)
            if not value:
                raise InputError(f"environment variable {env} is not set",
                                 hint=f"export {env}=... (the Proxmox {self.kind} secret)")
            return value
        assert file is not None
        try:
            return file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise InputError(f"{file}: cannot read the Proxmox {self.kind} secret: {exc.strerror}",
                             hint="check proxmox.auth in the inventory") from None


class Tls(Strict):
    """TLS is verified unless `insecure: true` is spelled out; a CA file or fingerprint pins it."""

    verify: bool = True
    ca_file: RelPath | None = None
    fingerprint: str | None = None
    insecure: bool = False

    @model_validator(mode="after")
    def _check(self) -> Tls:
        if self.fingerprint is not None and not _FINGERPRINT.match(self.fingerprint):
            raise ValueError("fingerprint must be a SHA-256 fingerprint like 'AA:BB:...' (32 hex pairs) "
                             "-> copy it from `openssl x509 -noout -fingerprint -sha256 -in CERT` "
                             "or the node's Certificates panel")
        if not self.verify and not self.insecure:
            raise ValueError("to turn TLS verification off write `insecure: true` (verify: false alone "
                             "is refused) -> better: set ca_file or fingerprint")
        if self.insecure and (self.ca_file or self.fingerprint):
            raise ValueError("insecure: true cannot be combined with ca_file or fingerprint -> remove "
                             "insecure (pinning already verifies)")
        if self.ca_file and self.fingerprint:
            raise ValueError("give ca_file or fingerprint, not both -> keep ca_file for a CA you trust, "
                             "fingerprint to pin one self-signed certificate")
        return self

    @property
    def verifies(self) -> bool:
        return not self.insecure


class Proxmox(Strict):
    """The Proxmox VE API endpoint and the node to create containers on."""

    url: str | None = Field(default=None, pattern=r"^https://[^/\s]+/?$",
                            description="an https:// URL of the API without a path (Proxmox serves "
                            "only https)", examples=["https://pve1.example.lan:8006"])
    host: str | None = Field(default=None, pattern=r"^[A-Za-z0-9.:-]+$",
                             description="a host name or IP address", examples=["pve1.example.lan"])
    port: int = Field(default=8006, ge=1, le=65535, examples=[8006])
    node: str = Field(pattern=r"^[a-zA-Z0-9][a-zA-Z0-9-]*$", description="a Proxmox node name",
                      examples=["pve1"])
    auth: Auth
    tls: Tls = Tls()
    http_timeout_s: float = Field(default=30.0, gt=0, le=3600, examples=[30])
    task_timeout_s: float = Field(default=1800.0, gt=0, le=86400, examples=[1800])

    @model_validator(mode="after")
    def _endpoint(self) -> Proxmox:
        if (self.url is None) == (self.host is None):
            raise ValueError("give either url or host (+ port), not both or neither -> keep one, "
                             "e.g. url: https://pve1.example.lan:8006")
        return self

    @property
    def base_url(self) -> str:
        """`https://host:port` (no trailing slash, no /api2/json)."""
        return self.url.rstrip("/") if self.url else f"https://{self.host}:{self.port}"


class Storage(Strict):
    rootfs: str = Field(default="local-lvm", pattern=_STORAGE_ID, description="a Proxmox storage id",
                        examples=["local-lvm"])
    templates: str = Field(default="local", pattern=_STORAGE_ID, description="a Proxmox storage id",
                           examples=["local"])
    backups: str = Field(default="local", pattern=_STORAGE_ID, description="a Proxmox storage id "
                         "(content type backup: where vzdump writes whole-container backups)",
                         examples=["local"])


class Network(Strict):
    bridge: str = Field(pattern=r"^vmbr[0-9]+$", description="a Linux bridge name vmbrN",
                        examples=["vmbr20"])
    gateway: IPv4 = Field(examples=["10.0.20.1"])
    nameserver: IPv4 = Field(examples=["10.0.20.1"])
    searchdomain: str | None = Field(default=None, pattern=r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$",
                                     description="a DNS domain", examples=["example.lan"])


class Ssh(Strict):
    user: str = Field(default="root", pattern=r"^[a-z_][a-z0-9_-]*$", description="a Unix user name",
                      examples=["root"])
    key_file: RelPath = Field(examples=["keys/sandbox_ed25519"])
    jump_host: str | None = Field(default=None, pattern=r"^([a-z_][a-z0-9_-]*@)?[A-Za-z0-9.-]+(:[0-9]+)?$",
                                 description="[USER@]HOST[:PORT]", examples=["root@pve1.example.lan"])

    @property
    def public_key_file(self) -> Path:
        return self.key_file.with_name(self.key_file.name + ".pub")


class AptRepo(Strict):
    """An upstream apt repository: `deb [signed-by=KEY] repo_url suite component`."""

    repo_url: str = Field(pattern=r"^https?://\S+$", description="an http(s):// URL without spaces",
                          examples=["https://deb.nodesource.com/node_20.x"])
    suite: str = Field(pattern=r"^[A-Za-z0-9._/-]+$", description="an apt suite name",
                       examples=["nodistro"])
    component: str = Field(default="main", pattern=r"^[A-Za-z0-9._-]+$",
                           description="an apt component name", examples=["main"])
    key_url: str = Field(pattern=r"^https?://\S+$", description="an http(s):// URL without spaces",
                         examples=["https://deb.nodesource.com/gpgkey/nodesource-repo.gpg.key"])


def _nodesource() -> AptRepo:
    return AptRepo(repo_url="https://deb.nodesource.com/node_20.x", suite="nodistro",
                   key_url="https://deb.nodesource.com/gpgkey/nodesource-repo.gpg.key")


def _elastic() -> AptRepo:
    return AptRepo(repo_url="https://artifacts.elastic.co/packages/8.x/apt", suite="stable",
                   key_url="https://artifacts.elastic.co/GPG-KEY-elasticsearch")


class RabbitmqSource(Strict):
    source: Literal["debian"] = "debian"


NoProxyHost = Annotated[str, Field(pattern=r"^[A-Za-z0-9.*:/_-]+$", examples=["10.0.20.1"],
                                   description="a host, .domain or CIDR (no spaces or quotes)")]


class Packages(Strict):
    """Where guests get packages: an optional proxy, extra CAs, per-component repositories, and the npm
    registry (`npm_registry`; default: npm's own default registry) for pm2 and the app."""

    proxy: str | None = Field(default=None, pattern=r"^https?://[A-Za-z0-9._~%:@\[\]-]+/?$",
                              description="an http://HOST:PORT proxy URL", examples=["http://10.0.20.1:3142"])
    no_proxy: list[NoProxyHost] = Field(default=[], examples=["[10.0.20.1, localhost]"])
    npm_registry: str | None = Field(default=None, pattern=r"^https?://[A-Za-z0-9._~%:@\[\]/-]+$",
                                     description="an http(s):// npm registry URL (no spaces or quotes)",
                                     examples=["http://10.0.20.1:4873/"])
    extra_ca_files: list[RelPath] = []
    nodejs: AptRepo = Field(default_factory=_nodesource)
    elasticsearch: AptRepo = Field(default_factory=_elastic)
    rabbitmq: RabbitmqSource = RabbitmqSource()


PgSize = Annotated[str, Field(pattern=_SIZE.pattern)]


class PostgresTuning(Strict):
    """Overrides for the memory-derived PostgreSQL settings (PostgreSQL units, e.g. 4GB, 20MB)."""

    shared_buffers: PgSize | None = Field(default=None, examples=["4GB"])
    effective_cache_size: PgSize | None = Field(default=None, examples=["12GB"])
    maintenance_work_mem: PgSize | None = Field(default=None, examples=["1GB"])
    work_mem: PgSize | None = Field(default=None, examples=["20MB"])
    max_connections: int | None = Field(default=None, ge=10, le=10000, examples=[200])


class RedisTuning(Strict):
    maxmemory: Annotated[str, Field(pattern=_REDIS_SIZE.pattern)] | None = Field(default=None,
                                                                                 examples=["2gb"])


class ElasticsearchTuning(Strict):
    heap: Annotated[str, Field(pattern=_HEAP.pattern)] | None = Field(default=None, examples=["4g"])


class Tuning(Strict):
    postgresql: PostgresTuning = PostgresTuning()
    redis: RedisTuning = RedisTuning()
    elasticsearch: ElasticsearchTuning = ElasticsearchTuning()


class Inventory(Strict):
    """One site: Proxmox endpoint, network, template, SSH, package sources, secrets, tuning."""

    proxmox: Proxmox
    storage: Storage = Storage()
    network: Network
    template: str = Field(pattern=r"^[A-Za-z0-9._+-]+\.tar\.(zst|gz|xz)$",
                          description="a template file name ending in .tar.zst/.tar.gz/.tar.xz",
                          examples=["debian-12-standard_12.7-1_amd64.tar.zst"])
    ssh: Ssh
    packages: Packages = Packages()
    secrets_file: RelPath = Field(examples=["sandbox.secrets.yml"])
    phases_dir: RelPath = PHASES_DIR  # default: the phase files shipped in the package
    tuning: Tuning = Tuning()
    path: Path | None = Field(default=None, exclude=True)

    @property
    def template_volid(self) -> str:
        """`local:vztmpl/debian-12-standard_...tar.zst`"""
        return f"{self.storage.templates}:vztmpl/{self.template}"


def load_inventory(path: Path) -> Inventory:
    """Load and validate an inventory file; InputError `file:line: ...` on any problem. No network."""
    path = Path(path)
    inv = load_model(path, Inventory, context={"base_dir": str(path.resolve().parent)})
    seams.note_target(inv.proxmox.base_url)  # test hooks act only for a sandbox (loopback) target
    return inv.model_copy(update={"path": path.resolve()})

