"""The sandbox's node-down fault: a power loss stops what runs on the node, leaves a stopped container
stopped, and reports a stop that failed after trying every other; the drill's side runs pvesim and says
what it answered."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from psa_provision.errors import ProvisionError
from psa_provision.testing.nodefault import node_fault
from pvesim import node_fault as pvesim_node
from pvesim.backend import BackendError
from pvesim.faults import Faults
from pvesim.paths import StateDir

NODES = ["pve1", "pve2", "pve3"]


def _state(tmp_path: Path, vmids: list[int]) -> StateDir:
    state = StateDir(tmp_path)
    lxc = state.node_dir("pve2") / "lxc"
    lxc.mkdir(parents=True)
    for vmid in vmids:
        (lxc / f"{vmid}.conf").write_text("hostname: ct\n")
    return state


def test_a_stopped_container_stays_stopped_and_the_running_ones_lose_power(tmp_path: Path) -> None:
    state = _state(tmp_path, [101, 250])
    stopped: list[int] = []
    said: list[str] = []

    def stop(vmid: int) -> bool:
        if vmid == 250:  # a container that was not running (a backup container left stopped)
            return False
        stopped.append(vmid)
        return True

    number = pvesim_node.down(state, "pve2", NODES, owner="drill-x", stop=stop, say=said.append)
    assert stopped == [101]
    assert said == ["- CT 101 on pve2: power lost", "- CT 250 on pve2: was stopped already"]
    down = Faults(state.faults).read(None)["nodes_down"]
    assert [(d["node"], d["owner"], d["rule_id"]) for d in down] == [("pve2", "drill-x", number)]


def test_a_failed_stop_is_named_after_every_other_container_stopped(tmp_path: Path) -> None:
    state = _state(tmp_path, [101, 102, 103])
    stopped: list[int] = []

    def stop(vmid: int) -> bool:
        if vmid == 102:
            raise BackendError("CT 102: lxc-stop: exit 1")
        stopped.append(vmid)
        return True

    with pytest.raises(BackendError, match=r"node pve2 is down, but .*CT 102: CT 102: lxc-stop: exit 1"):
        pvesim_node.down(state, "pve2", NODES, owner="drill-x", stop=stop, say=lambda line: None)
    assert stopped == [101, 103]
    assert pvesim_node.release(state, owner="drill-x") == ["pve2"]  # what the drill's release does


@pytest.fixture
def fake_pvesim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `pvesim` on PATH that records its arguments and fails when asked to bring a node up."""
    log = tmp_path / "calls"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "pvesim"
    script.write_text(f"""#!/bin/sh
echo "$*" >> {log}
case "$*" in *node-up*) echo "pvesim: node pve2 is not down" >&2; exit 1;; esac
""")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return log


def test_the_drill_takes_a_node_down_releases_by_owner_and_names_pvesims_refusal(fake_pvesim: Path) -> None:
    assert node_fault("down", "pve2", "drill-x")
    assert node_fault("release", "pve2", "drill-x")
    refused = r"`pvesim fault node-up pve2` failed: pvesim: node pve2 is not down"
    with pytest.raises(ProvisionError, match=refused):
        node_fault("up", "pve2", "drill-x")
    assert fake_pvesim.read_text().splitlines() == [
        "fault node-down pve2 --owner drill-x", "fault clear --owner drill-x", "fault node-up pve2"]
