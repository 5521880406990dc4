/**
 * billing (port 3040): consumes ticket events from RabbitMQ (queue billing.ticket-events,
 * bound to psa.events with ticket.*) and counts them per routing key in PostgreSQL.
 * Each message is recorded by its message id in the same transaction as the count, so a
 * redelivery (after a broker or database restart) is not counted twice.
 */

import { createPool, ensureSchema, inTransaction, postgresCheck } from '@psa/database';
import { RabbitClient } from '@psa/rabbitmq';
import { createLogger, env, loadConfig, Router, runService, StartupTask } from '@psa/utils';

const SERVICE = 'billing';
const QUEUE = 'billing.ticket-events';

const log = createLogger(SERVICE);
const { jwtSecret, pool } = loadConfig(log, () => ({
  jwtSecret: env('JWT_SECRET'),
  pool: createPool(log, `psa-${SERVICE}`),
}));
const schema = new StartupTask('schema', log);

const SCHEMA = [
  `CREATE TABLE IF NOT EXISTS billing_ticket_events (
     message_id text PRIMARY KEY,
     routing_key text NOT NULL,
     ticket_id bigint,
     received_at timestamptz NOT NULL DEFAULT now()
   )`,
  `CREATE TABLE IF NOT EXISTS billing_event_counts (
     routing_key text PRIMARY KEY,
     count bigint NOT NULL DEFAULT 0,
     last_event_at timestamptz
   )`,
];

function ticketIdOf(payload: unknown): number | null {
  const ticket = typeof payload === 'object' && payload !== null ? (payload as { ticket?: { id?: unknown } }).ticket : undefined;
  return typeof ticket?.id === 'number' ? ticket.id : null;
}

const rabbit = new RabbitClient(log, [{
  queue: QUEUE,
  patterns: ['ticket.*'],
  prefetch: 20,
  handler: async (routingKey, payload, message) => {
    const eventId = typeof payload === 'object' && payload !== null ? (payload as { event_id?: unknown }).event_id : undefined;
    const messageId = String(message.properties.messageId ?? eventId ?? `${routingKey}:${message.content.toString('base64')}`);
    const counted = await inTransaction(pool, async (client) => {
      const seen = await client.query(
        `INSERT INTO billing_ticket_events (message_id, routing_key, ticket_id) VALUES ($1, $2, $3)
         ON CONFLICT (message_id) DO NOTHING RETURNING message_id`,
        [messageId, routingKey, ticketIdOf(payload)],
      );
      if (seen.rowCount === 0) return false;
      await client.query(
        `INSERT INTO billing_event_counts (routing_key, count, last_event_at) VALUES ($1, 1, now())
         ON CONFLICT (routing_key) DO UPDATE
           SET count = billing_event_counts.count + 1, last_event_at = now()`,
        [routingKey],
      );
      return true;
    });
    log.info(counted ? 'ticket event counted' : 'duplicate ticket event ignored', { routing_key: routingKey, message_id: messageId });
  },
}]);

interface CountRow {
  routing_key: string;
  count: string;
  last_event_at: Date | null;
}

const eventCounts = async (): Promise<{ status: number; body: unknown }> => {
  const result = await pool.query<CountRow>('SELECT routing_key, count, last_event_at FROM billing_event_counts ORDER BY routing_key');
  const counts: Record<string, number> = {};
  let total = 0;
  for (const row of result.rows) {
    counts[row.routing_key] = Number(row.count);
    total += Number(row.count);
  }
  return { status: 200, body: { counts, total } };
};

const router = new Router(jwtSecret)
  .add('GET', '/api/billing', eventCounts)
  .add('GET', '/api/billing/ticket-events', eventCounts);

runService({
  name: SERVICE,
  defaultPort: 3040,
  log,
  router,
  checks: {
    postgres: postgresCheck(pool, schema),
    rabbitmq: () => rabbit.check(),
  },
  start: async () => {
    await schema.run(() => ensureSchema(pool, SCHEMA));
    // Consume only once the tables exist, so no message is requeued for want of them.
    rabbit.start();
  },
  stop: async () => {
    await rabbit.close();
    await pool.end();
  },
});
