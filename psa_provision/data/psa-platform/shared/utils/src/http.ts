/** A small JSON router over node:http: path patterns, JSON bodies, Bearer JWT checks. */

import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import { bearerToken, JwtClaims, JwtError, verifyJwt } from './jwt';

export interface ApiRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  headers: IncomingHttpHeaders;
  params: Record<string, string>;
  body: unknown;
  user: JwtClaims | undefined;
}

export interface ApiReply {
  status: number;
  body: unknown;
}

export type Handler = (req: ApiRequest) => Promise<ApiReply>;

/** An error whose status and message are safe to show the client (400, 401, 404, 503 ...). */
export class HttpError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

export interface RouteOptions {
  /** Reachable without a Bearer token (login). Every other route needs a valid JWT. */
  public?: boolean;
}

interface Route {
  method: string;
  regex: RegExp;
  names: string[];
  handler: Handler;
  options: RouteOptions;
}

const MAX_BODY_BYTES = 1024 * 1024;

/** Send body as JSON with the status. */
export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** The request body parsed as JSON (undefined when empty); HttpError 400/413 when it is not. */
export async function readJson(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    const buf = chunk as Buffer;
    size += buf.length;
    if (size > MAX_BODY_BYTES) throw new HttpError(413, 'request body too large');
    chunks.push(buf);
  }
  const text = Buffer.concat(chunks).toString('utf8').trim();
  if (text === '') return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new HttpError(400, 'request body is not valid JSON');
  }
}

/** The claims of the request's Bearer token; HttpError 401 when missing or invalid. */
export function authenticate(headers: IncomingHttpHeaders, secret: string): JwtClaims {
  const token = bearerToken(headers.authorization);
  if (token === undefined) throw new HttpError(401, 'missing Bearer token');
  try {
    return verifyJwt(token, secret);
  } catch (err) {
    throw new HttpError(401, err instanceof JwtError ? err.message : 'invalid token');
  }
}

/** A required non-empty string field of a JSON object body; HttpError 400 otherwise. */
export function stringField(body: unknown, name: string, maxLength = 10_000): string {
  const value = typeof body === 'object' && body !== null ? (body as Record<string, unknown>)[name] : undefined;
  if (typeof value !== 'string' || value.trim() === '') {
    throw new HttpError(400, `field "${name}" must be a non-empty string`);
  }
  if (value.length > maxLength) throw new HttpError(400, `field "${name}" is longer than ${maxLength} characters`);
  return value;
}

/** An optional string field; undefined when absent, HttpError 400 when not a string. */
export function optionalStringField(body: unknown, name: string, maxLength = 10_000): string | undefined {
  const value = typeof body === 'object' && body !== null ? (body as Record<string, unknown>)[name] : undefined;
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string' || value.length > maxLength) {
    throw new HttpError(400, `field "${name}" must be a string of at most ${maxLength} characters`);
  }
  return value;
}

/**
 * Routes like `GET /api/tickets/:id`. Every route needs a valid JWT unless added with
 * `{ public: true }`, so a service stays safe even when reached without the gateway.
 */
export class Router {
  private readonly routes: Route[] = [];

  constructor(private readonly jwtSecret: string) {}

  add(method: string, pattern: string, handler: Handler, options: RouteOptions = {}): this {
    const names: string[] = [];
    const source = pattern.replace(/\/:([A-Za-z_]+)/g, (_, name: string) => {
      names.push(name);
      return '/([^/]+)';
    });
    this.routes.push({ method, regex: new RegExp(`^${source}/?$`), names, handler, options });
    return this;
  }

  /** Answer the request if a route matches its path; false when none does. */
  async handle(req: IncomingMessage, res: ServerResponse, url: URL): Promise<boolean> {
    const candidates = this.routes.filter((r) => r.regex.test(url.pathname));
    if (candidates.length === 0) return false;
    const route = candidates.find((r) => r.method === req.method);
    if (route === undefined) {
      sendJson(res, 405, { error: `method ${req.method ?? '?'} not allowed on ${url.pathname}` });
      return true;
    }
    const match = route.regex.exec(url.pathname) ?? [];
    const params: Record<string, string> = {};
    route.names.forEach((name, i) => {
      params[name] = decodeURIComponent(match[i + 1] ?? '');
    });
    const user = route.options.public ? undefined : authenticate(req.headers, this.jwtSecret);
    const body = req.method === 'GET' || req.method === 'HEAD' ? undefined : await readJson(req);
    const reply = await route.handler({
      method: route.method, path: url.pathname, query: url.searchParams, headers: req.headers, params, body, user,
    });
    sendJson(res, reply.status, reply.body);
    return true;
  }
}
