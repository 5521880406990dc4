"""psa-provision: the PSA platform on Proxmox VE as code (phases 0-3, migrations, verification)."""

__version__ = "0.1.0"
