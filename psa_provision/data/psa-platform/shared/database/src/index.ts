/**
 * PostgreSQL for the services: a pg Pool from the POSTGRES_* variables that survives the
 * server restarting (broken clients are dropped, new ones connect on the next query), and
 * schema set-up under an advisory lock because several cluster instances start at once; the
 * PostgreSQL health check and the runner of the one-table CRUD services (crm, projects, assets).
 */

import type { Server } from 'node:http';
import { Pool, PoolClient } from 'pg';
import {
  createLogger, env, envInt, errorText, HealthCheck, loadConfig, Logger, Router, runService, StartupTask,
} from '@psa/utils';
import { crudRoutes, crudSchema, CrudResource } from './crud';

export type { Pool, PoolClient } from 'pg';

/** Key of the advisory lock every service's schema set-up holds (one lock: DDL is rare). */
const SCHEMA_LOCK_KEY = 'psa-platform:schema';

/** A pool for POSTGRES_HOST/PORT/DB/USER/PASSWORD; PG_POOL_MAX sizes it (default 5 per process). */
export function createPool(log: Logger, applicationName: string): Pool {
  const pool = new Pool({
    host: env('POSTGRES_HOST', '127.0.0.1'),
    port: envInt('POSTGRES_PORT', 5432),
    database: env('POSTGRES_DB', 'psa_platform'),
    user: env('POSTGRES_USER', 'psa_app'),
    password: env('POSTGRES_PASSWORD'),
    application_name: applicationName,
    max: envInt('PG_POOL_MAX', 5),
    connectionTimeoutMillis: envInt('PG_CONNECT_TIMEOUT_MS', 3000),
    idleTimeoutMillis: 30_000,
    query_timeout: envInt('PG_QUERY_TIMEOUT_MS', 10_000),
  });
  // An idle client whose server went away emits here; without a listener the process dies.
  pool.on('error', (err) => log.warn('postgres idle client error', { error: errorText(err) }));
  return pool;
}

/** Resolves when PostgreSQL answers a query. */
export async function checkPostgres(pool: Pool): Promise<void> {
  await pool.query('SELECT 1');
}

/** The /health check of a service's PostgreSQL: healthy once its schema is set up and a query answers. */
export function postgresCheck(pool: Pool, schema: StartupTask): HealthCheck {
  return async () => {
    await schema.check();
    await checkPostgres(pool);
  };
}

/** A statement for ensureSchema: plain SQL, or SQL with $1.. parameters (e.g. a seed row). */
export type Statement = string | { text: string; values: unknown[] };

/** Run statements (CREATE TABLE IF NOT EXISTS ...) in one transaction under the schema lock. */
export async function ensureSchema(pool: Pool, statements: Statement[]): Promise<void> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    await client.query('SELECT pg_advisory_xact_lock(hashtext($1))', [SCHEMA_LOCK_KEY]);
    for (const statement of statements) {
      if (typeof statement === 'string') await client.query(statement);
      else await client.query(statement.text, statement.values);
    }
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    client.release();
  }
}

/** Run fn inside BEGIN/COMMIT on one client, rolling back when it throws. */
export async function inTransaction<T>(pool: Pool, fn: (client: PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const result = await fn(client);
    await client.query('COMMIT');
    return result;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    client.release();
  }
}

export interface CrudServiceOptions extends CrudResource {
  name: string;
  defaultPort: number;
}

/** Run a service that only serves one CRUD table (crm, projects, assets): JWT_SECRET, PostgreSQL, schema at start-up. */
export function runCrudService(options: CrudServiceOptions): Server {
  const { name, defaultPort, ...resource } = options;
  const log = createLogger(name);
  const { jwtSecret, pool } = loadConfig(log, () => ({
    jwtSecret: env('JWT_SECRET'),
    pool: createPool(log, `psa-${name}`),
  }));
  const schema = new StartupTask('schema', log);
  return runService({
    name,
    defaultPort,
    log,
    router: crudRoutes(new Router(jwtSecret), pool, resource, () => schema.check()),
    checks: { postgres: postgresCheck(pool, schema) },
    start: () => schema.run(() => ensureSchema(pool, [crudSchema(resource)])),
    stop: () => pool.end(),
  });
}

export * from './crud';
