/**
 * One service process: HTTP server on PORT, GET /health from named store checks, JSON
 * request logs, and graceful shutdown on SIGINT/SIGTERM (PM2 cluster reloads send them).
 */

import { createServer, IncomingMessage, Server, ServerResponse } from 'node:http';
import { env, envInt } from './config';
import { HttpError, Router, sendJson } from './http';
import { errorText, Logger } from './log';
import { fromLoopback, RequestMetrics } from './metrics';
import { retryUntilDone, TimeoutError, withTimeout } from './retry';

export type HealthCheck = () => Promise<void>;

export interface HealthReport {
  status: number;
  body: unknown;
}

export interface ServiceOptions {
  name: string;
  /** Port when PORT is unset (the seed's table: gateway 3000, auth 3010 ... reports 3070). */
  defaultPort: number;
  /** Variable naming the listen address: SERVICE_BIND (default 127.0.0.1) or GATEWAY_BIND. */
  bindVariable?: string;
  defaultBind?: string;
  log: Logger;
  router?: Router;
  /** Store checks for GET /health, e.g. { postgres: () => pool.query('SELECT 1') }. */
  checks?: Record<string, HealthCheck>;
  /** Replaces the store checks (the gateway aggregates the other services instead). */
  health?: () => Promise<HealthReport>;
  /** Answers requests no route matched (the gateway's proxy); false for a 404. */
  fallback?: (req: IncomingMessage, res: ServerResponse, url: URL) => Promise<boolean>;
  /** Background start-up (schema, connections); retried inside, never blocks listening. */
  start?: () => Promise<void>;
  /** Closes store clients on shutdown, after the server stopped taking requests. */
  stop?: () => Promise<void>;
  /** Counts /api/ requests and answers GET /metrics to loopback clients (the gateway). */
  metrics?: RequestMetrics;
}

let stopping = false;

/**
 * Build the service's configuration and clients from the environment; on a missing or bad
 * variable log one JSON line naming it and exit 1 (PM2 shows the process errored).
 */
export function loadConfig<T>(log: Logger, build: () => T): T {
  try {
    return build();
  } catch (err) {
    log.error('configuration error, exiting', { error: errorText(err) });
    process.exit(1);
  }
}

/** True once shutdown began: reconnect loops use it to give up. */
export function isStopping(): boolean {
  return stopping;
}

/**
 * Start-up work that must succeed before a store counts as healthy (schema, seed rows).
 * run() retries with backoff until done or shutdown; check() throws until it is done.
 */
export class StartupTask {
  private done = false;
  private lastError = 'not started';

  constructor(private readonly what: string, private readonly log: Logger) {}

  async run(fn: () => Promise<void>): Promise<void> {
    this.lastError = 'in progress';
    const finished = await retryUntilDone(fn, (err, attempt, delay) => {
      this.lastError = errorText(err);
      if (attempt === 1 || attempt % 10 === 0) {
        this.log.warn(`${this.what} failed, retrying`, { error: this.lastError, attempt, delay_ms: delay });
      }
    }, isStopping);
    if (finished) {
      this.done = true;
      this.log.info(`${this.what} done`);
    }
  }

  async check(): Promise<void> {
    if (!this.done) throw new Error(`${this.what} not done: ${this.lastError}`);
  }
}

const CHECK_TIMEOUT_MS = 2500;

/** Run every check in parallel: 200 with all "ok", else 503 with each failing check's error. */
export async function runChecks(service: string, checks: Record<string, HealthCheck>): Promise<HealthReport> {
  const names = Object.keys(checks);
  const results = await Promise.allSettled(
    names.map((name) => withTimeout((checks[name] as HealthCheck)(), CHECK_TIMEOUT_MS, `${name} check`)),
  );
  const report: Record<string, string> = {};
  let healthy = true;
  results.forEach((result, i) => {
    const name = names[i] as string;
    if (result.status === 'fulfilled') {
      report[name] = 'ok';
    } else {
      healthy = false;
      report[name] = `error: ${errorText(result.reason)}`;
    }
  });
  return { status: healthy ? 200 : 503, body: { status: healthy ? 'ok' : 'error', service, checks: report } };
}

const UNAVAILABLE_CODES = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EPIPE', 'ENOTFOUND', 'EAI_AGAIN',
  '57P01', '57P02', '57P03', '08000', '08003', '08006', '08001', '08004', // PostgreSQL shutdown / connection classes
]);

/** Whether err means a store could not be reached (answer 503) rather than a bug (500). */
export function isStoreUnavailable(err: unknown): boolean {
  if (err instanceof TimeoutError) return true;
  if (typeof err !== 'object' || err === null) return false;
  const { code, name, message } = err as { code?: unknown; name?: unknown; message?: unknown };
  if (typeof code === 'string' && UNAVAILABLE_CODES.has(code)) return true;
  if (name === 'MaxRetriesPerRequestError' || name === 'TimeoutError' || name === 'AbortError') return true;
  const { cause } = err as { cause?: unknown };
  if (cause !== undefined && cause !== err && isStoreUnavailable(cause)) return true;
  const text = typeof message === 'string' ? message : '';
  return /Connection terminated|timeout exceeded when trying to connect|Stream isn't writeable|Connection is closed|Command timed out|rabbitmq unavailable/i.test(text)
    || (err instanceof AggregateError && err.errors.some(isStoreUnavailable));
}

async function dispatch(options: ServiceOptions, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://service.invalid');
  if (url.pathname === '/health' && (req.method === 'GET' || req.method === 'HEAD')) {
    const report = options.health ? await options.health() : await runChecks(options.name, options.checks ?? {});
    sendJson(res, report.status, report.body);
    return;
  }
  if (options.metrics && url.pathname === '/metrics' && req.method === 'GET' && fromLoopback(req)) {
    sendJson(res, 200, options.metrics.summary());
    return;
  }
  if (options.router && (await options.router.handle(req, res, url))) return;
  if (options.fallback && (await options.fallback(req, res, url))) return;
  sendJson(res, 404, { error: `no route for ${req.method ?? '?'} ${url.pathname}` });
}

function handler(options: ServiceOptions): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    const started = process.hrtime.bigint();
    res.on('finish', () => {
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      const path = (req.url ?? '').split('?')[0] ?? '';
      const fields = { method: req.method, path, status: res.statusCode, ms: Math.round(ms * 10) / 10 };
      options.metrics?.count(path, res.statusCode);
      // Health probes (PM2 checks, health-check.sh, the gateway) would drown the other lines.
      if (path === '/health' && res.statusCode === 200) options.log.debug('request', fields);
      else options.log.info('request', fields);
    });
    dispatch(options, req, res).catch((err: unknown) => {
      if (res.headersSent) {
        res.destroy();
      } else if (err instanceof HttpError) {
        sendJson(res, err.status, { error: err.message });
      } else if (isStoreUnavailable(err)) {
        options.log.warn('store unavailable', { method: req.method, path: req.url?.split('?')[0], error: errorText(err) });
        sendJson(res, 503, { error: `a store is unavailable: ${errorText(err)}` });
      } else {
        options.log.error('request failed', { method: req.method, path: req.url?.split('?')[0], error: errorText(err) });
        sendJson(res, 500, { error: 'internal error' });
      }
    });
  };
}

function installShutdown(server: Server, options: ServiceOptions): void {
  const shutdown = (reason: string): void => {
    if (stopping) return;
    stopping = true;
    options.log.info('shutting down', { reason });
    const deadline = envInt('SHUTDOWN_TIMEOUT_MS', 8000);
    setTimeout(() => {
      options.log.warn('shutdown deadline passed, exiting', { deadline_ms: deadline });
      process.exit(1);
    }, deadline).unref();
    server.close();
    server.closeIdleConnections();
    options.metrics?.stop();
    (options.stop ? options.stop() : Promise.resolve())
      .catch((err: unknown) => options.log.warn('error while closing stores', { error: errorText(err) }))
      .finally(() => {
        options.log.info('stopped');
        process.exit(0);
      });
  };
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  // PM2 sends this message instead of a signal when shutdown_with_message is set.
  process.on('message', (message) => {
    if (message === 'shutdown') shutdown('pm2 shutdown message');
  });
}

/** Start the service: listen, then run options.start in the background. Exits 1 on a config error. */
export function runService(options: ServiceOptions): Server {
  const { log } = options;
  process.on('unhandledRejection', (reason) => log.error('unhandled rejection', { error: errorText(reason) }));
  process.on('uncaughtException', (err) => {
    log.error('uncaught exception, exiting so PM2 restarts the process', { error: errorText(err), stack: err.stack });
    process.exit(1);
  });
  const port = envInt('PORT', options.defaultPort);
  const host = env(options.bindVariable ?? 'SERVICE_BIND', options.defaultBind ?? '127.0.0.1');
  const server = createServer(handler(options));
  server.keepAliveTimeout = 65_000;
  server.headersTimeout = 66_000;
  installShutdown(server, options);
  server.on('error', (err) => {
    log.error('server error', { error: errorText(err), host, port });
    process.exit(1);
  });
  server.listen(port, host, () => {
    log.info('listening', { host, port, node: process.version });
    options.metrics?.start();
    options.start?.().catch((err: unknown) => log.error('start-up failed', { error: errorText(err) }));
  });
  return server;
}
