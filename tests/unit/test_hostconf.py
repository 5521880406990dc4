"""pvesim.hostconf: mirrors, npm registry and proxy read from sample configuration trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from pvesim import hostconf

DEB822 = """\
Types: deb deb-src
# a comment inside a stanza
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://security.example/debian-security/
Suites: bookworm-security
Components: main

Types: deb
Enabled: no
URIs: http://disabled.example/debian
Suites: bookworm
Components: main
"""

ONE_LINE = """\
# deb http://commented.example/debian bookworm main
deb-src http://src.example/debian bookworm main
deb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] http://old.example/debian/ bookworm main non-free
deb http://old.example/debian-security bookworm/updates main
"""


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_deb822_stanzas_one_entry_per_uri_disabled_ones_left_out() -> None:
    found = hostconf.parse_deb822(DEB822)
    assert [s.uri for s in found] == ["http://mirror.example/debian", "http://security.example/debian-security/"]
    assert found[0].suites == ("bookworm", "bookworm-updates") and found[0].components == ("main", "contrib")


def test_one_line_format_options_comments_and_deb_src_ignored() -> None:
    found = hostconf.parse_one_line(ONE_LINE)
    assert found == [
        hostconf.AptSource("http://old.example/debian/", ("bookworm",), ("main", "non-free")),
        hostconf.AptSource("http://old.example/debian-security", ("bookworm/updates",), ("main",)),
    ]


def test_mirrors_from_a_deb822_host(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"etc/apt/sources.list.d/debian.sources": DEB822,
                            "etc/apt/sources.list.d/other.sources.disabled": "Types: deb\nURIs: http://x.example\n"
                                                                             "Suites: bookworm\n"})
    sources = hostconf.apt_sources(root)
    assert hostconf.debian_mirror(sources) == "http://mirror.example/debian"
    assert hostconf.security_mirror(sources) == "http://security.example/debian-security"


def test_mirrors_from_a_sources_list_host(tmp_path: Path) -> None:
    sources = hostconf.apt_sources(_tree(tmp_path, {"etc/apt/sources.list": ONE_LINE}))
    assert hostconf.debian_mirror(sources) == "http://old.example/debian"
    assert hostconf.security_mirror(sources) == "http://old.example/debian-security"


def test_no_debian_source_is_an_error_that_says_where_it_looked(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"etc/apt/sources.list": "deb http://x.example/ubuntu jammy main\n"})
    with pytest.raises(hostconf.HostConfigError, match=r"serves Debian bookworm .*sources\.list"):
        hostconf.debian_mirror(hostconf.apt_sources(root))
    with pytest.raises(hostconf.HostConfigError, match="bookworm-security"):
        hostconf.security_mirror(hostconf.apt_sources(root))


def test_npmrc_parsing() -> None:
    text = "; comment\n# comment\nregistry = \"https://npm.example/r/\"\nfund=false\nbroken line\n"
    assert hostconf.parse_npmrc(text) == {"registry": "https://npm.example/r/", "fund": "false"}


@pytest.mark.parametrize(("env", "texts", "npm_says", "expected"), [
    ({"NPM_CONFIG_REGISTRY": "https://env.example/r"}, ["registry=https://file.example/"],
     "https://npm.example/", "https://env.example/r/"),
    ({}, ["registry=https://file.example/"], "https://npm.example/\n", "https://npm.example/"),
    ({}, ["fund=false", "registry=https://global.example"], None, "https://global.example/"),
    ({}, ["registry=https://user.example/", "registry=https://global.example/"], "undefined",
     "https://user.example/"),
])
def test_npm_registry_order(env: dict[str, str], texts: list[str], npm_says: str | None,
                            expected: str) -> None:
    assert hostconf.npm_registry_from(env, texts, npm_says) == expected


def test_no_npm_registry_anywhere_is_an_error() -> None:
    with pytest.raises(hostconf.HostConfigError, match=r"install npm .* or set npm_config_registry"):
        hostconf.npm_registry_from({}, ["fund=false"], None)


def test_npm_registry_reads_the_users_and_the_global_npmrc(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"home/ops/.npmrc": "fund=false\n", "etc/npmrc": "registry=https://global.example/\n"})
    assert hostconf.npm_registry({"HOME": "/home/ops"}, root, lambda: None) == "https://global.example/"


def test_proxy_from_environment_else_apt(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"etc/apt/apt.conf.d/01proxy": 'Acquire::http::Proxy "http://apt-proxy.example:3142";\n'})
    assert hostconf.http_proxy({"HTTP_PROXY": "http://env-proxy.example:8080"}, root) == \
        "http://env-proxy.example:8080"
    assert hostconf.http_proxy({}, root) == "http://apt-proxy.example:3142"
    assert hostconf.http_proxy({}, tmp_path / "nothing") is None


def test_mirrors_and_their_hosts(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"etc/apt/sources.list.d/debian.sources": DEB822})
    found = hostconf.mirrors(root, {"npm_config_registry": "https://npm.example:8443/r/"}, lambda: None)
    assert found == hostconf.Mirrors("http://mirror.example/debian", "http://security.example/debian-security",
                                     "https://npm.example:8443/r/", None)
    assert found.hosts() == ["mirror.example", "npm.example", "security.example"]
    assert hostconf.host_path("https://npm.example:8443/r/") == "npm.example:8443/r"
