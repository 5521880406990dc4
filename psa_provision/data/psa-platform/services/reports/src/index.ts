/**
 * reports (port 3070): GET /api/reports/tickets counts tickets in PostgreSQL (the tickets
 * service's table) and in Elasticsearch (index `tickets`), so an operator sees whether the
 * search index caught up. Each run is recorded in report_runs.
 */

import { createPool, ensureSchema, postgresCheck } from '@psa/database';
import { createLogger, Elasticsearch, env, errorText, loadConfig, Router, runService, StartupTask } from '@psa/utils';

const SERVICE = 'reports';

const log = createLogger(SERVICE);
const { jwtSecret, pool, search } = loadConfig(log, () => ({
  jwtSecret: env('JWT_SECRET'),
  pool: createPool(log, `psa-${SERVICE}`),
  search: Elasticsearch.fromEnv(),
}));
const schema = new StartupTask('schema', log);

const SCHEMA = [
  `CREATE TABLE IF NOT EXISTS report_runs (
     id bigserial PRIMARY KEY,
     report text NOT NULL,
     postgres_count bigint,
     elasticsearch_count bigint,
     generated_by text,
     generated_at timestamptz NOT NULL DEFAULT now()
   )`,
];

const UNDEFINED_TABLE = '42P01';

/** Tickets per status in PostgreSQL; empty before the tickets service created its table. */
async function postgresCounts(): Promise<{ count: number; by_status: Record<string, number> }> {
  try {
    const result = await pool.query<{ status: string; n: string }>('SELECT status, count(*) AS n FROM tickets GROUP BY status');
    const byStatus: Record<string, number> = {};
    let count = 0;
    for (const row of result.rows) {
      byStatus[row.status] = Number(row.n);
      count += Number(row.n);
    }
    return { count, by_status: byStatus };
  } catch (err) {
    if ((err as { code?: unknown }).code === UNDEFINED_TABLE) return { count: 0, by_status: {} };
    throw err;
  }
}

async function elasticsearchCount(): Promise<{ count: number } | { error: string }> {
  try {
    await search.refresh('tickets');
    const result = await search.search('tickets', { match_all: {} }, 0);
    return { count: result.total };
  } catch (err) {
    log.warn('elasticsearch count failed', { error: errorText(err) });
    return { error: errorText(err) };
  }
}

const router = new Router(jwtSecret).add('GET', '/api/reports', async () => ({
  status: 200, body: { reports: ['/api/reports/tickets'] },
})).add('GET', '/api/reports/tickets', async (req) => {
  const [postgres, elasticsearch] = await Promise.all([postgresCounts(), elasticsearchCount()]);
  const esCount = 'count' in elasticsearch ? elasticsearch.count : null;
  await pool.query(
    'INSERT INTO report_runs (report, postgres_count, elasticsearch_count, generated_by) VALUES ($1, $2, $3, $4)',
    ['tickets', postgres.count, esCount, req.user?.email ?? null],
  ).catch((err: unknown) => log.warn('could not record the report run', { error: errorText(err) }));
  return {
    status: 200,
    body: { report: 'tickets', postgres, elasticsearch, in_sync: esCount === postgres.count, generated_at: new Date().toISOString() },
  };
});

runService({
  name: SERVICE,
  defaultPort: 3070,
  log,
  router,
  checks: {
    postgres: postgresCheck(pool, schema),
    elasticsearch: () => search.health(),
  },
  start: () => schema.run(() => ensureSchema(pool, SCHEMA)),
  stop: () => pool.end(),
});
