"""No secret value in anything a sandbox run shows or sends where others can read it.

Checked for every value in the secrets file: stdout/stderr of init, plan (text and JSON), up, verify,
status and health; the run journal; the pvesim access log lines written during the run (Proxmox task
parameters); every command line and script the tool sent to the guest (recorded by the
PSA_RECORD_COMMANDS test hook, psa_provision/testing/record.py: those are what can show up in `ps` on
the guest, while stdin data and file contents cannot); and `ps -eo args` on the guest sampled during
`up`.

Before `up`, the guest loses what needs a secret to rebuild (psa_app's PostgreSQL password, the
RabbitMQ user psa_app), so `up` really sends those secrets (on stdin) while we watch.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from psa_provision.journal import state_dir
from psa_provision.seams import ENABLE_ENV
from psa_provision.secrets import load_secrets
from psa_provision.services import app as app_service
from psa_provision.testing.record import RECORD_ENV

from .conftest import CLI, REPO_ROOT, Run, Site

pytestmark = [pytest.mark.sandbox, pytest.mark.phase0]

ACCESS_LOG = Path(os.environ.get("PVESIM_STATE_DIR", "/var/lib/pvesim")) / "access.log"
BREAK_SECRET_STATE = """set -e
cd /
printf "ALTER ROLE psa_app PASSWORD 'not-the-secret';\\n" | runuser -u postgres -- psql -q -v ON_ERROR_STOP=1
rabbitmqctl -q delete_user psa_app </dev/null
"""


def run_recorded(site: Site, record: Path, *args: str, timeout: float = 1800) -> Run:
    argv = [*CLI, "-i", str(site.inventory_path), *args]
    env = {**os.environ, ENABLE_ENV: "1", RECORD_ENV: str(record)}
    env.pop("PSA_KILL_AT", None)
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT,
                          stdin=subprocess.DEVNULL, env=env, check=False)
    return Run(argv, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)


class PsSampler:
    """Reads `ps -eo args` on the guest over its own SSH connection until stopped."""

    def __init__(self, site: Site) -> None:
        self.conn = site.ssh()
        self.samples: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self.stop.is_set():
            self.samples.append(self.conn.run("ps -eo args", check=False, timeout=30).stdout)
            self.stop.wait(0.3)

    def __enter__(self) -> PsSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=60)
        self.conn.close()


def test_no_secret_in_any_output_argv_journal_or_task_params(reset_phase0: Site, tmp_path: Path) -> None:
    site = reset_phase0
    values = load_secrets(site.inventory.secrets_file).values()
    assert len(values) >= 6
    record = tmp_path / "commands.jsonl"
    log_offset = ACCESS_LOG.stat().st_size if ACCESS_LOG.exists() else 0
    guest = site.ssh()
    try:
        guest.run(BREAK_SECRET_STATE)
    finally:
        guest.close()

    runs: dict[str, Run] = {"init": run_recorded(site, record, "init", timeout=120),
                            "plan": run_recorded(site, record, "plan", "phase0"),
                            "plan json": run_recorded(site, record, "plan", "phase0", "--output", "json")}
    with PsSampler(site) as sampler:
        runs["up"] = run_recorded(site, record, "up", "phase0", "--yes")
    for name, args in (("verify", ("verify", "phase0")), ("status", ("status",)),
                       ("health", ("health", "phase0"))):
        runs[name] = run_recorded(site, record, *args, timeout=900)
    assert runs["up"].code == 0, runs["up"].output[-4000:]
    assert runs["plan"].code == 2 and "psa_app" in runs["plan"].output, runs["plan"].output[-3000:]
    assert runs["verify"].code == 0, runs["verify"].output[-4000:]

    commands = record.read_text()
    assert "ALTER ROLE" not in commands  # the SQL with the password went on stdin
    with ACCESS_LOG.open("rb") as handle:
        handle.seek(log_offset)
        access = handle.read().decode(errors="replace")
    texts = {f"{name} output": run.output for name, run in runs.items()}
    texts |= {"journal": (state_dir(site.inventory_path) / "phase0.journal.jsonl").read_text(),
              "commands sent to the guest": commands, "pvesim access log": access,
              "ps on the guest": "\n".join(sampler.samples)}
    assert len(sampler.samples) >= 3 and "rabbitmq" in texts["commands sent to the guest"]
    for name, text in texts.items():
        leaked = [v[:3] + "..." for v in values if v in text]
        assert not leaked, f"{name} shows secrets starting {leaked}"


PM2_PROCESSES = f"""cd /
runuser -u {app_service.APP_USER} -- env HOME={app_service.APP_HOME} \\
  PM2_HOME={app_service.APP_HOME}/.pm2 pm2 jlist \\
  | node -e '
let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{{for(const p of JSON.parse(s))
  console.log(p.name, p.pm_id, p.pid, p.pm2_env.restart_time, p.pm2_env.status)}})'
"""


def pm2_processes(site: Site) -> dict[str, set[tuple[int, int, int, str]]]:
    """Per PM2 app: its processes as (pm_id, pid, restart count, status), names and numbers only."""
    guest = site.ssh()
    try:
        out = guest.run(PM2_PROCESSES).stdout
    finally:
        guest.close()
    apps: dict[str, set[tuple[int, int, int, str]]] = {}
    for line in out.splitlines():
        name, pm_id, pid, restarts, status = line.split()
        apps.setdefault(name, set()).add((int(pm_id), int(pid), int(restarts), status))
    return apps


REDIS_PING = 'read -r PW\nREDISCLI_AUTH="$PW" redis-cli -h 127.0.0.1 --no-auth-warning PING 2>&1 || true\n'


def test_rotate_redis_password(reset_phase0: Site) -> None:
    """rotate-secrets redis: new password in the file, redis and .env; app healthy; old one refused;
    only the PM2 apps that use Redis were reloaded (new pids, restart count up), the others untouched."""
    site = reset_phase0
    secrets_file = site.inventory.secrets_file
    saved = secrets_file.read_bytes()
    old = site.secret("redis.password")
    readers = app_service.env_readers("REDIS_PASSWORD", site.phase.services_on(site.container.vmid))
    before = pm2_processes(site)
    untouched = set(before) - readers
    assert readers and untouched and readers <= set(before), before.keys()
    try:
        rotated = site.cli("rotate-secrets", "redis", "--yes")
        new = site.secret("redis.password")
        assert rotated.code == 0, rotated.output[-4000:]
        assert "rotated redis.password" in rotated.stdout
        assert f"pm2: reload {', '.join(sorted(readers))} (REDIS_PASSWORD changed)" in rotated.output
        after = pm2_processes(site)
        for name in untouched:
            assert after[name] == before[name], f"{name} was restarted: {before[name]} -> {after[name]}"
        for name in readers:
            old_pids = {pid for _, pid, _, _ in before[name]}
            assert not old_pids & {pid for _, pid, _, _ in after[name]}, f"{name} not reloaded: {after[name]}"
            assert min(r for _, _, r, _ in after[name]) > max(r for _, _, r, _ in before[name]), after[name]
            assert {st for *_, st in after[name]} == {"online"}, after[name]
        assert new != old and old not in rotated.output and new not in rotated.output
        assert secrets_file.stat().st_mode & 0o777 == 0o600
        guest = site.ssh()
        try:
            assert guest.run(REDIS_PING, stdin=new + "\n").stdout.strip() == "PONG"
            refused = guest.run(REDIS_PING, stdin=old + "\n").stdout
            assert "PONG" not in refused and ("WRONGPASS" in refused or "NOAUTH" in refused), refused
        finally:
            guest.close()
        health = site.cli("health", "phase0", timeout=600)
        assert health.code == 0, health.output[-3000:]
        again = site.cli("up", "phase0", "--yes")
        assert again.code == 0 and again.summary()[0] == 0, again.output[-4000:]
    finally:
        secrets_file.write_bytes(saved)  # the snapshot reset_phase0 rolls back to has the old password
        secrets_file.chmod(0o600)
