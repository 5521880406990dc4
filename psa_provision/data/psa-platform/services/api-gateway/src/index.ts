/**
 * api-gateway (port 3000, binds GATEWAY_BIND, default 0.0.0.0): the platform's front door.
 * Proxies /api/<prefix>... to the service in <PREFIX>_SERVICE_URL (method, path, query,
 * headers, body), checks the Bearer JWT first except for POST /api/auth/login, answers 502
 * (504 on timeout) with JSON when a service is down, and aggregates every GET /health.
 * GET /metrics, to loopback clients only: API requests counted over every PM2 worker (requests in
 * the last minute, per minute over five, 5xx answers), which `psa-provision capacity` reads.
 */

import { Agent, IncomingMessage, OutgoingHttpHeaders, request, ServerResponse } from 'node:http';
import {
  authenticate, createLogger, env, envInt, errorText, loadConfig, RequestMetrics, runService, sendJson, withTimeout,
} from '@psa/utils';

const SERVICE = 'api-gateway';

interface Upstream {
  name: string;
  prefix: string;
  url: URL;
}

const log = createLogger(SERVICE);

const UPSTREAMS: Array<[name: string, prefix: string, variable: string, port: number]> = [
  ['auth', '/api/auth', 'AUTH_SERVICE_URL', 3010],
  ['crm', '/api/crm', 'CRM_SERVICE_URL', 3020],
  ['tickets', '/api/tickets', 'TICKETS_SERVICE_URL', 3030],
  ['billing', '/api/billing', 'BILLING_SERVICE_URL', 3040],
  ['projects', '/api/projects', 'PROJECTS_SERVICE_URL', 3050],
  ['assets', '/api/assets', 'ASSETS_SERVICE_URL', 3060],
  ['reports', '/api/reports', 'REPORTS_SERVICE_URL', 3070],
];

const config = loadConfig(log, () => ({
  jwtSecret: env('JWT_SECRET'),
  timeoutMs: envInt('GATEWAY_TIMEOUT_MS', 15_000),
  upstreams: UPSTREAMS.map(([name, prefix, variable, port]): Upstream => ({
    name, prefix, url: new URL(env(variable, `http://127.0.0.1:${port}`)),
  })),
}));

const PUBLIC_ROUTES = new Set(['POST /api/auth/login']);

const HOP_BY_HOP = new Set([
  'connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer',
  'transfer-encoding', 'upgrade', 'host',
]);

const agent = new Agent({ keepAlive: true, maxSockets: 128 });

function upstreamFor(path: string): Upstream | undefined {
  return config.upstreams.find((u) => path === u.prefix || path.startsWith(`${u.prefix}/`));
}

function forwardHeaders(req: IncomingMessage): OutgoingHttpHeaders {
  const headers: OutgoingHttpHeaders = {};
  for (const [key, value] of Object.entries(req.headers)) {
    if (!HOP_BY_HOP.has(key) && value !== undefined) headers[key] = value;
  }
  const client = req.socket.remoteAddress ?? '';
  const prior = req.headers['x-forwarded-for'];
  headers['x-forwarded-for'] = prior ? `${String(prior)}, ${client}` : client;
  return headers;
}

/** Stream the request to the upstream and its answer back; JSON 502/504 when that fails. */
function proxy(req: IncomingMessage, res: ServerResponse, url: URL, upstream: Upstream): Promise<void> {
  return new Promise((resolve) => {
    const target = new URL(`${url.pathname}${url.search}`, upstream.url);
    const outgoing = request(target, { method: req.method, headers: forwardHeaders(req), agent });
    let timedOut = false;
    outgoing.setTimeout(config.timeoutMs, () => {
      timedOut = true;
      outgoing.destroy(new Error(`no answer within ${config.timeoutMs} ms`));
    });
    outgoing.on('response', (answer) => {
      const headers: OutgoingHttpHeaders = {};
      for (const [key, value] of Object.entries(answer.headers)) {
        if (!HOP_BY_HOP.has(key) && value !== undefined) headers[key] = value;
      }
      res.writeHead(answer.statusCode ?? 502, headers);
      answer.pipe(res);
      answer.on('end', resolve);
      answer.on('error', () => {
        res.destroy();
        resolve();
      });
    });
    outgoing.on('error', (err) => {
      log.warn('upstream failed', { upstream: upstream.name, path: url.pathname, error: errorText(err) });
      if (res.headersSent) {
        res.destroy();
      } else {
        sendJson(res, timedOut ? 504 : 502, { error: `${upstream.name} service unavailable: ${errorText(err)}`, service: upstream.name });
      }
      resolve();
    });
    req.pipe(outgoing);
  });
}

async function route(req: IncomingMessage, res: ServerResponse, url: URL): Promise<boolean> {
  const upstream = upstreamFor(url.pathname);
  if (upstream === undefined) return false;
  if (!PUBLIC_ROUTES.has(`${req.method ?? ''} ${url.pathname.replace(/\/$/, '')}`)) {
    authenticate(req.headers, config.jwtSecret);
  }
  await proxy(req, res, url, upstream);
  return true;
}

/** Every service's /health: 200 only when all answer ok; the body lists each one. */
async function aggregateHealth(): Promise<{ status: number; body: unknown }> {
  const results = await Promise.all(config.upstreams.map(async (upstream) => {
    try {
      const response = await withTimeout(
        fetch(new URL('/health', upstream.url), { signal: AbortSignal.timeout(4000) }), 4500, `${upstream.name} health`,
      );
      const body = (await response.json().catch(() => ({}))) as unknown;
      const ok = response.status === 200;
      return { name: upstream.name, ok, check: ok ? 'ok' : `error: HTTP ${response.status}`, body };
    } catch (err) {
      const text = errorText(err instanceof Error && err.cause !== undefined ? err.cause : err);
      return { name: upstream.name, ok: false, check: `error: ${text}`, body: { status: 'error', error: text } };
    }
  }));
  const healthy = results.every((r) => r.ok);
  return {
    status: healthy ? 200 : 503,
    body: {
      status: healthy ? 'ok' : 'error',
      service: SERVICE,
      checks: Object.fromEntries(results.map((r) => [r.name, r.check])),
      services: Object.fromEntries(results.map((r) => [r.name, r.body])),
    },
  };
}

runService({
  name: SERVICE,
  defaultPort: 3000,
  bindVariable: 'GATEWAY_BIND',
  defaultBind: '0.0.0.0',
  log,
  health: aggregateHealth,
  fallback: route,
  metrics: new RequestMetrics(SERVICE),
  stop: async () => {
    agent.destroy();
  },
});
