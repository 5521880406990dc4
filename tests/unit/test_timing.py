"""timing.py: each change's time goes to the right category; the step timer forwards and charges."""

from __future__ import annotations

import pytest

from psa_provision import timing
from psa_provision.changes import ApiCall, Change, Command, Package, PutFile, PutTree, Service


@pytest.mark.parametrize(("change", "category"), [
    (ApiCall("h", "container", "create container 200", action="create", node="pve1"), "proxmox"),
    (Package("h", "redis", "install redis-server", names=("redis-server",)), "packages"),
    (Command("h", "redis", "apt-get update (package lists)", script="apt-get update"), "packages"),
    (Command("h", "nodejs", "fetch apt key http://x/gpgkey -> /etc/apt/keyrings/x.gpg"), "packages"),
    (Command("h", "nodejs", "npm install -g pm2@5.4.3"), "packages"),
    (PutTree("h", "app", "ship app bundle", local_dir="/x", remote_dir="/opt/psa-platform"), "app build"),
    (Command("h", "app", "npm ci && npm run build (as psa)"), "app build"),
    (Command("h", "app", "pm2 start ecosystem.config.js (8 apps)"), "configuration"),
    (PutFile("h", "redis", "create /etc/redis/redis.conf", path="/etc/redis/redis.conf"), "configuration"),
    (Service("h", "redis", "restart redis-server", name="redis-server"), "configuration"),
])
def test_category(change: Change, category: str) -> None:
    assert timing.category(change) == category
    assert category in timing.CATEGORIES


class Recorder:
    """A progress that records the calls it gets (what apply's progress receives)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def begin(self, change: Change) -> None:
        self.calls.append(f"begin {change.summary}")

    def end(self, change: Change, changed: bool) -> None:
        self.calls.append(f"end {change.summary} {changed}")

    def fail(self, change: Change) -> None:
        self.calls.append(f"fail {change.summary}")

    def message(self, text: str) -> None:
        self.calls.append(f"message {text}")


def test_step_timer_forwards_every_call_and_charges_each_category() -> None:
    watch = timing.Stopwatch()
    inner = Recorder()
    timer = timing.StepTimer(inner, watch)
    pkg = Package("h", "redis", "install redis-server", names=("redis-server",))
    conf = PutFile("h", "redis", "create /etc/redis/redis.conf", path="/etc/redis/redis.conf")
    timer.begin(pkg)
    timer.end(pkg, True)
    timer.begin(conf)
    timer.fail(conf)
    timer.message("hello")  # anything else goes to the wrapped progress
    assert inner.calls == ["begin install redis-server", "end install redis-server True",
                           "begin create /etc/redis/redis.conf", "fail create /etc/redis/redis.conf",
                           "message hello"]
    assert set(watch.totals) == {"packages", "configuration"}
    timer.end(pkg, False)  # an end without its begin charges nothing
    assert set(watch.totals) == {"packages", "configuration"}


def test_stopwatch_charges_a_block_that_raises_and_rounds_in_category_order() -> None:
    watch = timing.Stopwatch()
    watch.add("waiting", 1.26)
    with pytest.raises(RuntimeError), watch.timed("proxmox"):
        raise RuntimeError("boom")
    watch.add("waiting", 0.1)
    assert list(watch.rounded()) == ["proxmox", "waiting"]
    assert watch.rounded()["waiting"] == 1.4
