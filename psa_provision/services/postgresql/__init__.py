"""PostgreSQL 15: the seed's database psa_platform, role psa_app, extensions, tuning and client rules."""

COMPONENT = "postgresql"
VERSION = "15"
CONF_DIR = f"/etc/postgresql/{VERSION}/main"
CONF = f"{CONF_DIR}/conf.d/psa.conf"
HBA = f"{CONF_DIR}/pg_hba.conf"
DATABASE = "psa_platform"
ROLE = "psa_app"
EXTENSIONS = ("uuid-ossp", "pg_trgm", "btree_gin", "pgcrypto")
PACKAGES = (f"postgresql-{VERSION}",)
UNIT = "postgresql"
FILES = (CONF, HBA)
UNITS = (UNIT,)
TEMPLATES = {CONF: "postgresql-psa.conf.j2", HBA: "pg_hba.conf.j2"}
PORT = 5432
