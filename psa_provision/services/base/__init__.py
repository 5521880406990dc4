"""Base of every guest: apt proxy, extra CA certificates, the packages every other component needs."""

COMPONENT = "base"
APT_PROXY = "/etc/apt/apt.conf.d/01psa-proxy"
CA_DIR = "/usr/local/share/ca-certificates"
KEYRINGS = "/etc/apt/keyrings"
PACKAGES = ("ca-certificates", "curl", "sudo", "cron", "gzip", "tar")
FILES: tuple[str, ...] = (APT_PROXY,)
UNITS = ("cron",)
TEMPLATES = {APT_PROXY: "apt-proxy.conf.j2"}
APT_SOURCE_TEMPLATE = "apt-source.list.j2"  # every component's apt repository (common.apt_repo)
