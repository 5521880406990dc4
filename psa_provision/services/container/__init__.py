"""The LXC container itself: its Proxmox config reconciled with the phase file (no guest files)."""

COMPONENT = "container"
