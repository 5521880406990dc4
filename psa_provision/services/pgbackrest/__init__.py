"""pgBackRest (Debian 12's 2.45): WAL archiving and backups of PostgreSQL into a repository host.

The database containers (component `pgbackrest`) push WAL with `archive-push` over SSH, as user
postgres, to user pgbackrest on the phase's backup container (component `backup`), which holds the
repository and runs the backups over SSH back to postgres (pgBackRest user guide, "Dedicated
Repository Host"). Each direction has its own key pair, made by `psa-provision init` next to the
tool's SSH key.
"""

COMPONENT = "pgbackrest"
STANZA = "psa"
PACKAGES = ("pgbackrest",)
CONF = "/etc/pgbackrest/pgbackrest.conf"
REPO_USER = "pgbackrest"
REPO_HOME = "/home/pgbackrest"
REPO_PATH = "/var/lib/pgbackrest"
LOG_PATH = "/var/log/pgbackrest"
PG_HOME = "/var/lib/postgresql"
PG_DATA = "/var/lib/postgresql/15/main"
RETENTION_FULL = 2  # full backups kept (weekly: two weeks of point-in-time recovery)
RETENTION_DIFF = 7  # differential backups kept (daily)
ARCHIVE_TIMEOUT_S = 60  # a WAL segment is archived at least once a minute: RPO <= 60 s
ARCHIVE_COMMAND = f"pgbackrest --stanza={STANZA} archive-push %p"


def archive_command(hostname: str) -> str:
    """archive_command for the container `hostname`: pushes only there. A copy of the container (a
    vzdump restored under another hostname) boots with the same cluster and must never push its WAL
    into production's stanza: there the test fails and PostgreSQL keeps the segment instead."""
    return f'test "$(hostname)" = {hostname} && {ARCHIVE_COMMAND}'


# schedule (systemd calendar events) of the repository host's timers: full weekly, differential daily
SCHEDULE = {"full": "Sun *-*-* 01:00:00", "diff": "Mon..Sat *-*-* 01:00:00"}
UNIT_DIR = "/etc/systemd/system"


def ssh_files(home: str) -> tuple[str, str, str, str]:
    """(.ssh dir, private key, authorized_keys, ssh config) of a user whose home is `home`."""
    return (f"{home}/.ssh", f"{home}/.ssh/id_ed25519", f"{home}/.ssh/authorized_keys", f"{home}/.ssh/config")


def timer_units(kind: str) -> tuple[str, str]:
    """(service unit, timer unit) names of the `full` or `diff` backup."""
    return f"psa-pgbackrest-{kind}.service", f"psa-pgbackrest-{kind}.timer"


DB_SSH_DIR, DB_KEY, DB_AUTHORIZED, DB_SSH_CONFIG = ssh_files(PG_HOME)
REPO_SSH_DIR, REPO_KEY, REPO_AUTHORIZED, REPO_SSH_CONFIG = ssh_files(REPO_HOME)
PRIVATE_FILES = (DB_KEY, REPO_KEY)  # facts carry their checksum, never their content
FILES = (CONF, DB_KEY, DB_AUTHORIZED, DB_SSH_CONFIG)
DIRS = (DB_SSH_DIR,)
TIMERS = tuple(timer_units(kind)[1] for kind in SCHEDULE)
REPO_FILES = (CONF, REPO_KEY, REPO_AUTHORIZED, REPO_SSH_CONFIG,
              *(f"{UNIT_DIR}/{unit}" for kind in SCHEDULE for unit in timer_units(kind)))
REPO_DIRS = (REPO_SSH_DIR, REPO_PATH, LOG_PATH)
TEMPLATES = {"db": "pgbackrest-db.conf.j2", "repo": "pgbackrest-repo.conf.j2",
             "service": "pgbackrest-backup.service.j2", "timer": "pgbackrest-backup.timer.j2",
             "ssh_config": "pgbackrest-ssh-config.j2"}
