"""PostgreSQL mover: database psa_platform, schema + data + sequences, dump streamed into restore.

`pg_dump -Fc` on the source pipes into `pg_restore --single-transaction --exit-on-error` on the
target, both as the postgres superuser over the local socket (peer authentication: no password is
needed or sent). The target's app objects are dropped first, so a re-run after an interruption
starts from the same empty state; the single transaction means a failed restore leaves it empty.
Owners and grants come from the dump (psa_app owns its tables on both sides); the extensions
provisioning created stay (the dump's CREATE EXTENSION IF NOT EXISTS is a no-op on them).
"""

from __future__ import annotations

from collections.abc import Callable

from psa_provision.secrets import Secrets
from psa_provision.services.mover import Check, CopyMover, compare, tab_lines
from psa_provision.services.postgresql import DATABASE
from psa_provision.ssh import Connection

PSQL = f"cd /tmp && runuser -u postgres -- psql -X -q -A -t -v ON_ERROR_STOP=1 -d {DATABASE}"
DUMP = f"set -o pipefail\ncd /tmp && runuser -u postgres -- pg_dump -Fc -d {DATABASE}\n"
RESTORE = (f"cd /tmp && runuser -u postgres -- pg_restore -d {DATABASE} --single-transaction "
           "--exit-on-error\n")

# Objects of the app: anything outside the system schemas that no extension owns.
APP_OBJECT = """n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = '{catalog}'::regclass AND d.objid = {oid}
                  AND d.deptype = 'e')"""

# Drop the app's schemas (but public), relations, routines, types and large objects; database, roles,
# grants on the database, default privileges and extensions stay. CASCADE + IF EXISTS: order does not
# matter (names are spelled from the catalog row: a regclass of an object a CASCADE dropped is its oid).
# S608: module constants only, no input reaches this SQL.
DISCARD_SQL = f"""DO $$
DECLARE r record;
BEGIN
  FOR r IN SELECT quote_ident(n.nspname) AS name FROM pg_namespace n
           WHERE n.nspname <> 'public' AND {APP_OBJECT.format(catalog='pg_namespace', oid='n.oid')}
  LOOP EXECUTE 'DROP SCHEMA IF EXISTS ' || r.name || ' CASCADE'; END LOOP;
  FOR r IN SELECT format('%I.%I', n.nspname, c.relname) AS name,
                  CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                                 WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE'
                                 ELSE 'TABLE' END AS kind
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
             AND {APP_OBJECT.format(catalog='pg_class', oid='c.oid')}
  LOOP EXECUTE 'DROP ' || r.kind || ' IF EXISTS ' || r.name || ' CASCADE'; END LOOP;
  FOR r IN SELECT format('%I.%I(%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)) AS name
           FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
           WHERE {APP_OBJECT.format(catalog='pg_proc', oid='p.oid')}
  LOOP EXECUTE 'DROP ROUTINE IF EXISTS ' || r.name || ' CASCADE'; END LOOP;
  FOR r IN SELECT format('%I.%I', n.nspname, t.typname) AS name
           FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
           WHERE t.typtype IN ('e', 'd', 'r', 'm', 'c') AND t.typelem = 0
             AND (t.typrelid = 0 OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')
             AND {APP_OBJECT.format(catalog='pg_type', oid='t.oid')}
  LOOP EXECUTE 'DROP TYPE IF EXISTS ' || r.name || ' CASCADE'; END LOOP;
  PERFORM lo_unlink(oid) FROM pg_largeobject_metadata;  -- the dump carries large objects too
END $$;
"""  # noqa: S608

# One line per fact: KIND<TAB>NAME<TAB>VALUE. Each row's text in a fixed session setting (UTC, ISO
# dates, exact floats) is hashed; the md5 of those hashes in byte order stands for the table's rows
# (32 bytes a row in memory whatever the row's size: no 1 GB text limit on big tables).
VERIFY_SQL = f"""SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SET IntervalStyle = 'postgres';
SET extra_float_digits = 3;
SET bytea_output = 'hex';
SELECT format('SELECT %L || E''\\t'' || count(*) || '' rows, md5 '' || '
              'md5(coalesce(string_agg(h, '''' ORDER BY h COLLATE "C"), '''')) '
              'FROM (SELECT md5(t::text) AS h FROM %s t) r',
              'table' || E'\\t' || c.oid::regclass::text, c.oid::regclass)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'm') AND {APP_OBJECT.format(catalog='pg_class', oid='c.oid')}
ORDER BY 1 \\gexec
SELECT 'sequence' || E'\\t' || quote_ident(schemaname) || '.' || quote_ident(sequencename) || E'\\t'
       || coalesce(last_value::text, 'not used yet')
FROM pg_sequences ORDER BY 1;
SELECT 'schema' || E'\\t' || 'objects' || E'\\t' || count(*) || ', md5 '
       || md5(coalesce(string_agg(line, E'\\n' ORDER BY line COLLATE "C"), ''))
FROM (SELECT c.relkind::text || ' ' || c.oid::regclass::text || ' ' || pg_get_userbyid(c.relowner) AS line
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'i', 'I')
        AND {APP_OBJECT.format(catalog='pg_class', oid='c.oid')}
      UNION ALL
      SELECT 'c ' || conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(k.oid)
      FROM pg_constraint k JOIN pg_namespace n ON n.oid = k.connamespace
      WHERE {APP_OBJECT.format(catalog='pg_constraint', oid='k.oid')}) objects;
"""  # noqa: S608


class PostgresqlMover(CopyMover):
    """Moves database psa_platform (see the module docstring)."""

    component = "postgresql"

    def move(self, src: Connection, dst: Connection, secrets: Secrets, log: Callable[[str], None]) -> None:
        """Empty the target's app objects, then stream pg_dump -Fc into one-transaction pg_restore."""
        self.discard(dst, secrets, log)
        log(f"postgresql: streaming pg_dump of {DATABASE} from {src.host} into pg_restore on {dst.host}")
        streamed = src.stream_to(DUMP, dst, RESTORE)
        log(f"postgresql: {streamed.bytes} bytes of custom-format dump restored on {dst.host}")

    def verify(self, src: Connection, dst: Connection, secrets: Secrets) -> list[Check]:
        """Per table rows + md5 of the ordered rows, sequence values, the app's objects and constraints."""
        return checks(probe(src), probe(dst))

    def discard(self, dst: Connection, secrets: Secrets, log: Callable[[str], None]) -> None:
        """Drop the app's tables, sequences, views, routines, types, schemas, large objects on dst (keep
        the database, roles, grants and extensions)."""
        log(f"postgresql: dropping the app's objects in {DATABASE} on {dst.host}")
        dst.run(f"{PSQL}\n", stdin=DISCARD_SQL)


def probe(conn: Connection) -> str:
    """VERIFY_SQL's output on one side (SQL on stdin)."""
    return conn.run(f"{PSQL}\n", stdin=VERIFY_SQL).stdout


def checks(source: str, target: str) -> list[Check]:
    """Checks from the two sides' probe outputs: tables, sequences, then the schema objects."""
    out: list[Check] = []
    for kind in ("table", "sequence", "schema"):
        out += compare(f"postgresql {kind}", tab_lines(source, kind), tab_lines(target, kind))
    return out


MOVER = PostgresqlMover()
