"""Backups in phase 0 (issue 14): the backup container 250 holds pgBackRest's repository and the sets.

Tickets written through the gateway, `backup phase0`, then: pgBackRest lists the backup and WAL keeps
being archived (a segment switched after the backup arrives in the repository), the set's manifest
matches its files byte for byte, and `backups list` shows the set complete. Restore (`restore --at`,
`--drill`, vzdump) is not built yet.
"""

from __future__ import annotations

import json
import time

import pytest

from psa_provision.services import pgbackrest
from psa_provision.services.backup import SETS_DIR
from psa_provision.services.backup.manifest import Manifest, parse_sums, problems
from psa_provision.ssh import Connection
from psa_provision.testing.loadgen import request

from .conftest import VMID, Site, q

PGBACKREST = f"runuser -u {pgbackrest.REPO_USER} -- pgbackrest --stanza={pgbackrest.STANZA}"


def repo_conn(site: Site) -> Connection:
    spec = next((c for c in site.phase.containers if "backup" in c.components), None)
    if spec is None:
        pytest.fail(f"phase 0 has no backup container (PSA_E2E_VMID={VMID} private copies leave it out): "
                    "run this module on the packaged phase 0")
    inv = site.inventory
    return Connection(spec.ip, inv.ssh.user, inv.ssh.key_file, inv.ssh.jump_host)


def write_tickets(site: Site, n: int) -> list[int]:
    base = f"http://{site.container.ip}:3000"
    status, body = request("POST", f"{base}/api/auth/login", {"email": site.secret("app.admin_email"),
                                                               "password": site.secret("app.admin_password")})
    assert status == 200, body
    ids = []
    token = made_token(body)
    for i in range(n):
        status, made = request("POST", f"{base}/api/tickets", {"title": f"backup {i}", "body": "e2e"}, token)
        assert status == 201, made
        ids.append(int(made["id"]))
    return ids


def made_token(body: object) -> str:
    assert isinstance(body, dict)
    return str(body["token"])


def test_backup_phase0_lands_in_the_repository_with_a_matching_manifest(phase0: Site) -> None:
    write_tickets(phase0, 5)
    run = phase0.cli("backup", "phase0", timeout=1800)
    assert run.code == 0, run.output[-4000:]
    set_id = next(line.split()[1] for line in run.stdout.splitlines() if line.startswith("backup ")
                  and line.rstrip().endswith(" s") and "complete" in line)
    repo = repo_conn(phase0)
    try:
        info = json.loads(repo.run(f"{PGBACKREST} info --output=json").stdout)
        assert info[0]["status"]["message"] == "ok" and info[0]["backup"], info
        # archiving continues after the backup: a segment switched now reaches the repository
        db = phase0.ssh()
        psql = "cd / && runuser -u postgres -- psql -XAtq -c "
        segment = db.run(psql + "'SELECT pg_walfile_name(pg_switch_wal())'").stdout.strip()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            archived = db.run(psql + "'SELECT last_archived_wal FROM pg_stat_archiver'").stdout.strip()  # noqa: S608
            if archived >= segment:
                break
            time.sleep(2)
        assert archived >= segment, f"WAL {segment} not archived in 120 s (last archived: {archived})"
        set_dir = f"{SETS_DIR}/{set_id}"
        manifest = Manifest.from_json(repo.run(f"cat {q(set_dir + '/manifest.json')}").stdout, set_dir)
        assert {a.store for a in manifest.artifacts} == {"redis", "rabbitmq", "elasticsearch", "app"}
        assert manifest.postgresql["label"] in {b["label"] for b in info[0]["backup"]}
        sums = repo.run(f"cd {q(set_dir)} && for f in */*; do printf '%s %s %s\\n' \"$(stat -c %s \"$f\")\" "
                        "\"$(sha256sum < \"$f\" | cut -d' ' -f1)\" \"$f\"; done").stdout
        assert problems(manifest, parse_sums(sums)) == []
        rabbit = next(a for a in manifest.artifacts if a.store == "rabbitmq")
        assert rabbit.detail.get("items") is not None  # each queue's depth recorded with the definitions
    finally:
        repo.close()
    listed = phase0.cli("backups", "list", "phase0", timeout=300)
    assert listed.code == 0 and set_id in listed.stdout and "complete" in listed.stdout, listed.output
