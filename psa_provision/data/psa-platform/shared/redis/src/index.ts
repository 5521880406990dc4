/**
 * Redis for the services: an ioredis client from the REDIS_* variables. It reconnects
 * forever with capped backoff; commands fail fast while it is down instead of queueing.
 *
 * With REDIS_SENTINELS (host:port,host:port,...) it asks the Sentinels for the primary named
 * REDIS_SENTINEL_NAME (default psa-redis) instead of REDIS_HOST/PORT, follows a failover
 * (Sentinel's +switch-master, and a reconnect on a READONLY reply from a demoted primary), and
 * authenticates to the Sentinels with REDIS_PASSWORD too.
 */

import { Redis, RedisOptions } from 'ioredis';
import { backoffDelay, env, envInt, errorText, Logger, parseAddresses } from '@psa/utils';

export type { Redis } from 'ioredis';

/** A client for REDIS_HOST/PORT/PASSWORD that logs (throttled) instead of crashing on errors. */
export function createRedis(log: Logger): Redis {
  let lastLogged = '';
  const where = target();
  // Behind Sentinel a new primary is elected within seconds: retry at most once a second to find it.
  const maxDelay = where.sentinels === undefined ? 10_000 : 1_000;
  const client = new Redis({
    ...where,
    password: process.env.REDIS_PASSWORD || undefined,
    connectTimeout: 3000,
    // While disconnected, commands fail at once (no offline queue) and a command without an
    // answer fails after 2 s: callers fall back or answer 503 instead of hanging.
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    commandTimeout: envInt('REDIS_COMMAND_TIMEOUT_MS', 2000),
    retryStrategy: (times: number) => backoffDelay(times, 200, maxDelay),
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
  // Behind Sentinel, ioredis 5 can give a connection up ('end') in the middle of a failover (seen here:
  // the old primary timing out while the failover detector disconnects, then "Connection is closed."),
  // and an ended client never connects again by itself. Unless closeRedis ended it, connect again.
  client.on('end', () => {
    if (closing.has(client)) return;
    log.warn('redis connection ended: connecting again', { after_ms: maxDelay });
    setTimeout(() => {
      if (client.status === 'end' && !closing.has(client)) client.connect().catch(() => undefined);
    }, maxDelay).unref();
  });
  return client;
}

/** The clients closeRedis is closing: their 'end' is the goal, not a connection to restore. */
const closing = new WeakSet<Redis>();

/** Where the primary is: REDIS_HOST/PORT, or the Sentinels of REDIS_SENTINELS when set. */
function target(): RedisOptions {
  const sentinels = parseAddresses(process.env.REDIS_SENTINELS ?? '', 26379);
  if (sentinels.length === 0) {
    return { host: env('REDIS_HOST', '127.0.0.1'), port: envInt('REDIS_PORT', 6379) };
  }
  return {
    sentinels,
    name: env('REDIS_SENTINEL_NAME', 'psa-redis'),
    role: 'master',
    sentinelPassword: process.env.REDIS_PASSWORD || undefined,
    sentinelRetryStrategy: (times: number) => backoffDelay(times, 200, 2_000),
    failoverDetector: true,
    // A primary demoted by a failover answers writes with READONLY: reconnect, Sentinel names the new one.
    reconnectOnError: (err: Error) => (err.message.startsWith('READONLY') ? 2 : false),
  };
}

/** Resolves when Redis answers PING. */
export async function checkRedis(client: Redis): Promise<void> {
  if (client.status !== 'ready') throw new Error(`redis connection is ${client.status}`);
  const reply = await client.ping();
  if (reply !== 'PONG') throw new Error(`unexpected PING reply ${reply}`);
}

/** Close the connection, waiting for pending replies. */
export async function closeRedis(client: Redis): Promise<void> {
  closing.add(client);
  if (client.status === 'end') return;
  await client.quit().catch(() => client.disconnect());
}
