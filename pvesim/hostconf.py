"""Mirrors, registries and proxies as this machine has them configured, never written into the code.

The sandbox fetches what guests need through the host's own choices: the Debian archive and
debian-security URIs of its apt sources (one-line `.list` files and deb822 `.sources` files), the
npm registry of its npm configuration, and the proxy environment (http_proxy, https_proxy, no_proxy)
or apt's Acquire::http::Proxy. Parsing is pure (text in, values out); the readers take a root
directory and an environment so tests run them on sample trees.

    python -m pvesim.hostconf debian-mirror    # prints the URI debootstrap should use
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

SUITE = "bookworm"


class HostConfigError(RuntimeError):
    """The host's configuration names no Debian mirror or npm registry."""


@dataclass(frozen=True)
class AptSource:
    """One `deb` entry: a URI with the suites and components it serves."""

    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]


# -- apt sources ---------------------------------------------------------------------------------
def parse_one_line(text: str) -> list[AptSource]:
    """`deb [options] URI SUITE [COMPONENT...]` lines (deb-src, comments and options ignored)."""
    found = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        line = re.sub(r"\[[^\]]*\]", " ", line)  # [arch=amd64 signed-by=...]
        fields = line.split()
        if len(fields) >= 3 and fields[0] == "deb":
            found.append(AptSource(fields[1], (fields[2],), tuple(fields[3:])))
    return found


def parse_deb822(text: str) -> list[AptSource]:
    """deb822 stanzas (Types, URIs, Suites, Components; `Enabled: no` skipped), one entry per URI."""
    found: list[AptSource] = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = ""
        for raw in stanza.splitlines():
            if raw.startswith("#") or not raw.strip():
                continue
            if raw[0] in " \t" and key:  # continuation line
                fields[key] += " " + raw.strip()
                continue
            key, sep, value = raw.partition(":")
            key = key.strip().lower()
            if sep:
                fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
            continue
        suites = tuple(fields.get("suites", "").split())
        components = tuple(fields.get("components", "").split())
        found.extend(AptSource(uri, suites, components) for uri in fields.get("uris", "").split())
    return found


def apt_sources(root: Path = Path("/")) -> list[AptSource]:
    """Every enabled `deb` entry of <root>/etc/apt/sources.list and sources.list.d/*.list|*.sources."""
    etc = root / "etc/apt"
    found = []
    files = [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*"))]
    for path in files:
        if not path.is_file():
            continue
        if path.suffix == ".sources":
            found += parse_deb822(path.read_text(errors="replace"))
        elif path.suffix == ".list" or path.name == "sources.list":
            found += parse_one_line(path.read_text(errors="replace"))
    return found


def debian_mirror(sources: list[AptSource], suite: str = SUITE) -> str:
    """The URI that serves the Debian archive's `suite` (e.g. bookworm), with a trailing slash stripped."""
    for source in sources:
        if suite in source.suites:
            return source.uri.rstrip("/")
    raise HostConfigError(f"no apt source serves Debian {suite} (read /etc/apt/sources.list and "
                          f"/etc/apt/sources.list.d/); add the Debian mirror this machine uses")


def security_mirror(sources: list[AptSource], suite: str = SUITE) -> str:
    """The URI that serves `suite`-security (Debian's security archive)."""
    for source in sources:
        if f"{suite}-security" in source.suites or f"{suite}/updates" in source.suites:
            return source.uri.rstrip("/")
    raise HostConfigError(f"no apt source serves {suite}-security (read /etc/apt/sources.list and "
                          f"/etc/apt/sources.list.d/); add the Debian security mirror this machine uses")


# -- npm -----------------------------------------------------------------------------------------
def parse_npmrc(text: str) -> dict[str, str]:
    """`key=value` lines of an .npmrc (comments `#` and `;`, whitespace around `=` ignored)."""
    found = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        key, sep, value = line.partition("=")
        if sep:
            found[key.strip()] = value.strip().strip("\"'")
    return found


def npm_registry_from(env: Mapping[str, str], npmrc_texts: list[str], npm_says: str | None) -> str:
    """The registry npm would use: npm_config_registry, else what `npm config get registry` printed,
    else the first .npmrc (user before global) that sets it. Always ends with `/`."""
    for key, value in env.items():
        if key.lower() == "npm_config_registry" and value.strip():
            return value.strip().rstrip("/") + "/"
    if npm_says and npm_says.strip().startswith(("http://", "https://")):
        return npm_says.strip().rstrip("/") + "/"
    for text in npmrc_texts:
        registry = parse_npmrc(text).get("registry", "")
        if registry.startswith(("http://", "https://")):
            return registry.rstrip("/") + "/"
    raise HostConfigError("no npm registry configured on this machine: install npm (scripts/setup does) "
                          "or set npm_config_registry")


def npm_config_get() -> str | None:
    if shutil.which("npm") is None:
        return None
    result = subprocess.run(["npm", "config", "get", "registry"], capture_output=True, text=True,
                            check=False, timeout=60)
    return result.stdout if result.returncode == 0 else None


def npm_registry(env: Mapping[str, str] | None = None, root: Path = Path("/"),
                 npm_get: Callable[[], str | None] = npm_config_get) -> str:
    """This machine's npm registry URL (see npm_registry_from)."""
    env = os.environ if env is None else env
    home = Path(env.get("HOME", "/root"))
    files = [root / str(home).lstrip("/") / ".npmrc", root / "etc/npmrc", root / "usr/etc/npmrc"]
    texts = [p.read_text(errors="replace") for p in files if p.is_file()]
    return npm_registry_from(env, texts, npm_get())


# -- proxies -------------------------------------------------------------------------------------
_APT_PROXY = re.compile(r'Acquire::http::Proxy\s+"([^"]+)"\s*;', re.IGNORECASE)


def apt_http_proxy(root: Path = Path("/")) -> str | None:
    """apt's Acquire::http::Proxy from <root>/etc/apt/apt.conf and apt.conf.d/* (last one wins)."""
    etc = root / "etc/apt"
    found = None
    for path in [etc / "apt.conf", *sorted((etc / "apt.conf.d").glob("*"))]:
        if path.is_file():
            for match in _APT_PROXY.finditer(path.read_text(errors="replace")):
                found = None if match[1] in ("DIRECT", "false") else match[1]
    return found


def http_proxy(env: Mapping[str, str] | None = None, root: Path = Path("/")) -> str | None:
    """The HTTP proxy this machine uses for packages: http_proxy (either case), else apt's setting."""
    env = os.environ if env is None else env
    for key in ("http_proxy", "HTTP_PROXY"):
        if env.get(key, "").strip():
            return env[key].strip()
    return apt_http_proxy(root)


@dataclass(frozen=True)
class Mirrors:
    """Where the sandbox fetches from, as this machine is configured."""

    debian: str  # the Debian archive, e.g. http://mirror.example/debian
    security: str  # debian-security
    npm_registry: str  # ends with /
    http_proxy: str | None = None  # the upstream proxy apt and npm use here, if any

    def hosts(self) -> list[str]:
        """The distinct host names of the mirrors and the registry."""
        return sorted({host_of(url) for url in (self.debian, self.security, self.npm_registry)} - {""})


def mirrors(root: Path = Path("/"), env: Mapping[str, str] | None = None,
            npm_get: Callable[[], str | None] = npm_config_get) -> Mirrors:
    """All of this machine's mirror settings at once (HostConfigError names the one missing)."""
    sources = apt_sources(root)
    return Mirrors(debian_mirror(sources), security_mirror(sources), npm_registry(env, root, npm_get),
                   http_proxy(env, root))


def host_of(url: str) -> str:
    """The host name of a URL (no port)."""
    return urlsplit(url).hostname or ""


def host_path(url: str) -> str:
    """`host[:port]/path` without scheme or trailing slash, as apt-cacher-ng names a mirror."""
    parts = urlsplit(url)
    return (parts.netloc + parts.path).rstrip("/")


def main(argv: list[str]) -> int:
    """`python -m pvesim.hostconf debian-mirror|security-mirror|npm-registry|http-proxy`."""
    what = argv[0] if argv else ""
    try:
        if what == "debian-mirror":
            print(debian_mirror(apt_sources()))
        elif what == "security-mirror":
            print(security_mirror(apt_sources()))
        elif what == "npm-registry":
            print(npm_registry())
        elif what == "http-proxy":
            print(http_proxy() or "")
        else:
            print("usage: python -m pvesim.hostconf debian-mirror|security-mirror|npm-registry|http-proxy",
                  file=sys.stderr)
            return 2
    except HostConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
