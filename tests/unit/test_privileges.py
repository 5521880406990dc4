"""privileges.py is the one source: the README's role commands and table must say exactly what it says."""

from __future__ import annotations

import re
from pathlib import Path

from psa_provision import privileges


def readme_section() -> str:
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    return text[text.index("## Pointing it at a real Proxmox VE"):text.index("## The sandbox")]


def test_the_readme_pveum_commands_are_the_modules() -> None:
    shown = [line.strip() for line in readme_section().splitlines() if line.strip().startswith("pveum ")]
    assert shown == privileges.pveum_commands()


def test_the_readme_table_lists_every_privilege_path_and_command() -> None:
    rows = re.findall(r"^\s*\| ([A-Za-z.]+) \| `([^`]+)` \| ([^|]+) \| ([^|]+) \|$", readme_section(), re.M)
    assert [(p, path, cmds.strip()) for p, path, cmds, _ in rows] == privileges.role_table()


def test_the_role_holds_exactly_what_some_command_needs_and_no_sys_modify() -> None:
    assert set(privileges.ROLE_PRIVILEGES) == {n.privilege for n in privileges.NEEDS}
    assert privileges.SYS_MODIFY not in privileges.ROLE_PRIVILEGES
    assert "VM.Snapshot.Rollback" not in privileges.ROLE_PRIVILEGES  # nothing rolls back through the API


def test_every_needed_path_is_covered_by_a_grant() -> None:
    for need in privileges.NEEDS:
        path = need.path.split("{")[0].rstrip("/") or "/"
        assert any(path == g.path or (g.propagate and path.startswith(g.path.rstrip("/") + "/"))
                   for g in privileges.ROLE_GRANTS), need


def test_required_expands_paths_per_command() -> None:
    target = privileges.Target(vmids=(200,), storages=("local-lvm",), templates="local", bridges=("vmbr20",),
                               nodes=("pve1",), firewall=False)
    plan = privileges.required("plan", target)
    assert plan == {"/vms/200": {"VM.Audit"}, "/storage/local-lvm": {"Datastore.Audit"},
                    "/storage/local": {"Datastore.Audit"}, "/sdn/zones/localnetwork/vmbr20": {"SDN.Use"},
                    "/nodes/pve1": {"Sys.Audit"}}
    assert "VM.Snapshot" in privileges.required("migrate", target)["/vms/200"]
    assert "VM.Snapshot" not in privileges.required("up", target)["/vms/200"]


def test_root_only_features() -> None:
    assert privileges.root_only(True, {"nesting": 1}, "root@pam!psa") is None
    assert "keyctl" in (privileges.root_only(True, {"nesting": 1, "keyctl": 1}, "root@pam!psa") or "")
    assert "privileged" in (privileges.root_only(False, {"nesting": 1}, "root@pam!psa") or "")
    assert privileges.root_only(False, {"fuse": 1}, "root@pam") is None


def test_a_create_refused_without_a_named_privilege_lists_what_a_create_needs() -> None:
    """pve-container's create_vm answers a bare `Permission check failed` without VM.Allocate."""
    needs = privileges.create_needs(990, "local-lvm", "vmbr20")
    assert needs.startswith("VM.Allocate on /vms/990, VM.Config.CPU on /vms/990")
    assert "Datastore.AllocateSpace on /storage/local-lvm" in needs
    assert needs.endswith("SDN.Use on /sdn/zones/localnetwork/vmbr20")
