/**
 * tickets (port 3030): a ticket is answered 201 only once its INSERT is committed in
 * PostgreSQL. After the commit it is published to RabbitMQ (`ticket.created` on psa.events),
 * cached in Redis (ticket:<id>) and indexed in Elasticsearch (index `tickets`); a failure
 * of any of those is logged and reported in the reply, never loses the ticket: the row keeps
 * published_at / indexed_at empty and a sweeper (one instance at a time, under an advisory lock)
 * publishes and indexes it again later. Billing counts by message id, so a re-publish is harmless.
 * Ids are bigserial (numbers): ordered, compact, easy to count and compare when migrating.
 */

import { randomUUID } from 'node:crypto';
import { createPool, ensureSchema, postgresCheck } from '@psa/database';
import { RabbitClient } from '@psa/rabbitmq';
import { checkRedis, closeRedis, createRedis } from '@psa/redis';
import {
  createLogger, Elasticsearch, env, errorText, HttpError, isStopping, loadConfig, optionalStringField, Router, runService,
  StartupTask, stringField, withTimeout,
} from '@psa/utils';

const SERVICE = 'tickets';
const INDEX = 'tickets';
const CACHE_TTL_SECONDS = 3600;
const SIDE_EFFECT_TIMEOUT_MS = 5000;
const SWEEP_INTERVAL_MS = 15_000;
const SWEEP_LOCK = 'psa-platform:tickets-sweeper';

const log = createLogger(SERVICE);
const { jwtSecret, pool, redis, rabbit, search } = loadConfig(log, () => ({
  jwtSecret: env('JWT_SECRET'),
  pool: createPool(log, `psa-${SERVICE}`),
  redis: createRedis(log),
  rabbit: new RabbitClient(log),
  search: Elasticsearch.fromEnv(),
}));
const schema = new StartupTask('schema', log);
const searchIndex = new StartupTask('elasticsearch index', log);

const SCHEMA = [
  `CREATE TABLE IF NOT EXISTS tickets (
     id bigserial PRIMARY KEY,
     title text NOT NULL,
     body text NOT NULL,
     status text NOT NULL DEFAULT 'open',
     created_by text,
     created_at timestamptz NOT NULL DEFAULT now()
   )`,
  'CREATE INDEX IF NOT EXISTS tickets_created_at_idx ON tickets (created_at)',
  // When the ticket.created event was confirmed by RabbitMQ / the document indexed; NULL = still to do.
  'ALTER TABLE tickets ADD COLUMN IF NOT EXISTS published_at timestamptz, ADD COLUMN IF NOT EXISTS indexed_at timestamptz',
  `CREATE INDEX IF NOT EXISTS tickets_unpropagated_idx ON tickets (id)
     WHERE published_at IS NULL OR indexed_at IS NULL`,
];

const MAPPINGS = {
  properties: {
    id: { type: 'long' },
    title: { type: 'text' },
    body: { type: 'text' },
    status: { type: 'keyword' },
    created_by: { type: 'keyword' },
    created_at: { type: 'date' },
  },
};

interface Ticket {
  id: number;
  title: string;
  body: string;
  status: string;
  created_by: string | null;
  created_at: string;
}

interface TicketRow {
  id: string;
  title: string;
  body: string;
  status: string;
  created_by: string | null;
  created_at: Date;
}

const COLUMNS = 'id, title, body, status, created_by, created_at';

function toTicket(row: TicketRow): Ticket {
  const { id, title, body, status, created_by: createdBy, created_at: createdAt } = row;
  return { id: Number(id), title, body, status, created_by: createdBy, created_at: createdAt.toISOString() };
}

function ticketId(raw: string | undefined): number {
  if (raw === undefined || !/^[1-9][0-9]{0,15}$/.test(raw)) throw new HttpError(404, 'no such ticket');
  return Number(raw);
}

function pageSize(query: URLSearchParams): number {
  const raw = query.get('size');
  if (raw === null) return 20;
  const size = Number(raw);
  if (!Number.isInteger(size) || size < 1 || size > 100) throw new HttpError(400, 'size must be an integer from 1 to 100');
  return size;
}

type Step = 'rabbitmq' | 'redis' | 'elasticsearch';

/**
 * Publish, cache and index a committed ticket (or only the given steps); each outcome is "ok"
 * or the logged error. Successful publish/index are marked on the row for the sweeper.
 */
async function propagate(ticket: Ticket, only: Step[] = ['rabbitmq', 'redis', 'elasticsearch']): Promise<Record<string, string>> {
  const all: Record<Step, () => Promise<unknown>> = {
    rabbitmq: () => rabbit.publish('ticket.created', {
      event: 'ticket.created', event_id: randomUUID(), occurred_at: new Date().toISOString(), ticket,
    }, `ticket.created:${ticket.id}`),
    redis: () => redis.set(`ticket:${ticket.id}`, JSON.stringify(ticket), 'EX', CACHE_TTL_SECONDS),
    elasticsearch: () => search.indexDocument(INDEX, String(ticket.id), ticket),
  };
  const steps = Object.fromEntries(only.map((step) => [step, all[step]]));
  const names = Object.keys(steps);
  const results = await Promise.allSettled(
    names.map((name) => withTimeout((steps[name] as () => Promise<unknown>)(), SIDE_EFFECT_TIMEOUT_MS, name)),
  );
  const outcome: Record<string, string> = {};
  results.forEach((result, i) => {
    const name = names[i] as string;
    if (result.status === 'fulfilled') {
      outcome[name] = 'ok';
    } else {
      outcome[name] = `error: ${errorText(result.reason)}`;
      log.error('ticket saved but not propagated', { ticket_id: ticket.id, store: name, error: errorText(result.reason) });
    }
  });
  if (outcome.rabbitmq === 'ok' || outcome.elasticsearch === 'ok') {
    await pool.query(
      `UPDATE tickets SET published_at = CASE WHEN $2 THEN now() ELSE published_at END,
                          indexed_at = CASE WHEN $3 THEN now() ELSE indexed_at END WHERE id = $1`,
      [ticket.id, outcome.rabbitmq === 'ok', outcome.elasticsearch === 'ok'],
    ).catch((err: unknown) => log.warn('could not mark the ticket propagated (the sweeper retries)', { ticket_id: ticket.id, error: errorText(err) }));
  }
  return outcome;
}

interface PendingRow extends TicketRow {
  published: boolean;
  indexed: boolean;
}

/** Publish/index tickets older than a few seconds that missed it; one instance at a time. */
async function sweep(): Promise<void> {
  const client = await pool.connect();
  try {
    const lock = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock(hashtext($1)) AS ok', [SWEEP_LOCK]);
    if (lock.rows[0]?.ok !== true) return;
    try {
      const pending = await client.query<PendingRow>(
        `SELECT ${COLUMNS}, published_at IS NOT NULL AS published, indexed_at IS NOT NULL AS indexed FROM tickets
          WHERE (published_at IS NULL OR indexed_at IS NULL) AND created_at < now() - interval '10 seconds'
          ORDER BY id LIMIT 100`,
      );
      for (const row of pending.rows) {
        const steps: Step[] = [...(row.published ? [] : ['rabbitmq' as const]), ...(row.indexed ? [] : ['elasticsearch' as const])];
        const outcome = await propagate(toTicket(row), steps);
        log.info('sweeper retried ticket propagation', { ticket_id: Number(row.id), ...outcome });
      }
    } finally {
      await client.query('SELECT pg_advisory_unlock(hashtext($1))', [SWEEP_LOCK]);
    }
  } finally {
    client.release();
  }
}

function startSweeper(): void {
  let running = false;
  setInterval(() => {
    if (running || isStopping()) return;
    running = true;
    sweep()
      .catch((err: unknown) => log.warn('sweep failed', { error: errorText(err) }))
      .finally(() => {
        running = false;
      });
  }, SWEEP_INTERVAL_MS).unref();
}

async function cachedTicket(id: number): Promise<Ticket | undefined> {
  try {
    const cached = await redis.get(`ticket:${id}`);
    return cached === null ? undefined : (JSON.parse(cached) as Ticket);
  } catch (err) {
    log.warn('redis read failed, using postgres', { ticket_id: id, error: errorText(err) });
    return undefined;
  }
}

const router = new Router(jwtSecret)
  .add('POST', '/api/tickets', async (req) => {
    const title = stringField(req.body, 'title', 500);
    const body = optionalStringField(req.body, 'body', 100_000) ?? '';
    await schema.check().catch(() => {
      throw new HttpError(503, 'tickets is starting');
    });
    // A single INSERT runs in its own transaction: when the query resolves, the row is committed.
    const result = await pool.query<TicketRow>(
      `INSERT INTO tickets (title, body, created_by) VALUES ($1, $2, $3) RETURNING ${COLUMNS}`,
      [title, body, req.user?.email ?? null],
    );
    const ticket = toTicket(result.rows[0] as TicketRow);
    log.info('ticket created', { ticket_id: ticket.id });
    const propagation = await propagate(ticket);
    return { status: 201, body: { ...ticket, propagation } };
  })
  .add('GET', '/api/tickets/:id', async (req) => {
    const id = ticketId(req.params.id);
    const cached = await cachedTicket(id);
    if (cached !== undefined) return { status: 200, body: cached };
    const result = await pool.query<TicketRow>(`SELECT ${COLUMNS} FROM tickets WHERE id = $1`, [id]);
    const row = result.rows[0];
    if (row === undefined) throw new HttpError(404, 'no such ticket');
    const ticket = toTicket(row);
    await redis.set(`ticket:${id}`, JSON.stringify(ticket), 'EX', CACHE_TTL_SECONDS)
      .catch((err: unknown) => log.warn('redis cache write failed', { ticket_id: id, error: errorText(err) }));
    return { status: 200, body: ticket };
  })
  .add('GET', '/api/tickets', async (req) => {
    const size = pageSize(req.query);
    const q = req.query.get('q');
    if (q !== null && q.trim() !== '') {
      await search.refresh(INDEX);
      const found = await search.search<Ticket>(INDEX, { multi_match: { query: q, fields: ['title', 'body'] } }, size);
      return { status: 200, body: { items: found.hits.map((hit) => hit.source), total: found.total, source: 'elasticsearch' } };
    }
    const [rows, count] = await Promise.all([
      pool.query<TicketRow>(`SELECT ${COLUMNS} FROM tickets ORDER BY id DESC LIMIT $1`, [size]),
      pool.query<{ n: string }>('SELECT count(*) AS n FROM tickets'),
    ]);
    return { status: 200, body: { items: rows.rows.map(toTicket), total: Number(count.rows[0]?.n ?? 0), source: 'postgres' } };
  });

runService({
  name: SERVICE,
  defaultPort: 3030,
  log,
  router,
  checks: {
    postgres: postgresCheck(pool, schema),
    redis: () => checkRedis(redis),
    rabbitmq: () => rabbit.check(),
    elasticsearch: async () => {
      await searchIndex.check();
      await search.health();
    },
  },
  start: async () => {
    rabbit.start();
    await Promise.all([
      schema.run(() => ensureSchema(pool, SCHEMA)).then(startSweeper),
      searchIndex.run(() => search.ensureIndex(INDEX, MAPPINGS)),
    ]);
  },
  stop: async () => {
    await Promise.allSettled([rabbit.close(), closeRedis(redis), pool.end()]);
  },
});
