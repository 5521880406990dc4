"""Operations scripts from the seed: health-check.sh, backup-psa.sh and its daily cron entry (02:00)."""

COMPONENT = "scripts"
HEALTH = "/usr/local/bin/health-check.sh"
BACKUP = "/usr/local/bin/backup-psa.sh"
CRON = "/etc/cron.d/psa-backup"
FILES = (HEALTH, BACKUP, CRON)
TEMPLATES = {HEALTH: "health-check.sh.j2", BACKUP: "backup-psa.sh.j2", CRON: "cron-psa-backup.j2"}
