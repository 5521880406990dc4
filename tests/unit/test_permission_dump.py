"""proxmox.inherited_privileges: a path's privileges from ONE GET /access/permissions dump."""

from __future__ import annotations

from psa_provision.proxmox import inherited_privileges

DUMP = {
    "/": {"Sys.Audit": 0},
    "/vms": {"VM.Audit": 1, "VM.PowerMgmt": 1, "VM.Allocate": 0},
    "/vms/300": {"VM.Audit": 0},
    "/storage/local-lvm": {"Datastore.AllocateSpace": 1},
}


def test_own_entry_counts_every_privilege_whatever_its_propagate_flag() -> None:
    assert inherited_privileges(DUMP, "/vms") == {"VM.Audit", "VM.PowerMgmt", "VM.Allocate"}
    assert inherited_privileges(DUMP, "/") == {"Sys.Audit"}


def test_a_path_without_entry_inherits_only_what_the_nearest_ancestor_propagates() -> None:
    assert inherited_privileges(DUMP, "/vms/200") == {"VM.Audit", "VM.PowerMgmt"}
    assert inherited_privileges(DUMP, "/storage/local-lvm") == {"Datastore.AllocateSpace"}
    assert inherited_privileges(DUMP, "/storage/local") == set()  # "/" propagates nothing


def test_the_most_specific_entry_wins() -> None:
    assert inherited_privileges(DUMP, "/vms/300") == {"VM.Audit"}


def test_empty_dump_grants_nothing() -> None:
    assert inherited_privileges({}, "/vms/200") == set()
