/**
 * Redis for the services: an ioredis client from the REDIS_* variables. It reconnects
 * forever with capped backoff; commands fail fast while it is down instead of queueing.
 */

import { Redis } from 'ioredis';
import { backoffDelay, env, envInt, errorText, Logger } from '@psa/utils';

export type { Redis } from 'ioredis';

/** A client for REDIS_HOST/PORT/PASSWORD that logs (throttled) instead of crashing on errors. */
export function createRedis(log: Logger): Redis {
  let lastLogged = '';
  const client = new Redis({
    host: env('REDIS_HOST', '127.0.0.1'),
    port: envInt('REDIS_PORT', 6379),
    password: process.env.REDIS_PASSWORD || undefined,
    connectTimeout: 3000,
    // While disconnected, commands fail at once (no offline queue) and a command without an
    // answer fails after 2 s: callers fall back or answer 503 instead of hanging.
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    commandTimeout: envInt('REDIS_COMMAND_TIMEOUT_MS', 2000),
    retryStrategy: (times: number) => backoffDelay(times, 200, 10_000),
  });
  client.on('error', (err: Error) => {
    const text = errorText(err);
    if (text !== lastLogged) log.warn('redis error', { error: text });
    lastLogged = text;
  });
  client.on('ready', () => {
    if (lastLogged !== '') log.info('redis connected again');
    lastLogged = '';
  });
  return client;
}

/** Resolves when Redis answers PING. */
export async function checkRedis(client: Redis): Promise<void> {
  if (client.status !== 'ready') throw new Error(`redis connection is ${client.status}`);
  const reply = await client.ping();
  if (reply !== 'PONG') throw new Error(`unexpected PING reply ${reply}`);
}

/** Close the connection, waiting for pending replies. */
export async function closeRedis(client: Redis): Promise<void> {
  if (client.status === 'end') return;
  await client.quit().catch(() => client.disconnect());
}
