/** JSON Web Tokens signed with HMAC-SHA256 (HS256) using node:crypto only. */

import { createHmac, timingSafeEqual } from 'node:crypto';

export interface JwtClaims {
  sub: string;
  email: string;
  role: string;
  jti: string;
  iat: number;
  exp: number;
}

export class JwtError extends Error {}

const HEADER = Buffer.from(JSON.stringify({ alg: 'HS256', typ: 'JWT' })).toString('base64url');

function signature(data: string, secret: string): Buffer {
  return createHmac('sha256', secret).update(data).digest();
}

/** A token for the claims, valid for ttlSeconds from now. */
export function signJwt(claims: Omit<JwtClaims, 'iat' | 'exp'>, secret: string, ttlSeconds: number): string {
  const now = Math.floor(Date.now() / 1000);
  const payload = Buffer.from(JSON.stringify({ ...claims, iat: now, exp: now + ttlSeconds })).toString('base64url');
  const data = `${HEADER}.${payload}`;
  return `${data}.${signature(data, secret).toString('base64url')}`;
}

function isClaims(value: unknown): value is JwtClaims {
  if (typeof value !== 'object' || value === null) return false;
  const v = value as Record<string, unknown>;
  return typeof v.sub === 'string' && typeof v.email === 'string' && typeof v.role === 'string'
    && typeof v.jti === 'string' && typeof v.iat === 'number' && typeof v.exp === 'number';
}

/** The claims of a valid, unexpired HS256 token; JwtError saying why otherwise. */
export function verifyJwt(token: string, secret: string): JwtClaims {
  const parts = token.split('.');
  if (parts.length !== 3) throw new JwtError('malformed token');
  const [header, payload, sig] = parts as [string, string, string];
  let alg: unknown;
  try {
    alg = (JSON.parse(Buffer.from(header, 'base64url').toString('utf8')) as { alg?: unknown }).alg;
  } catch {
    throw new JwtError('malformed token header');
  }
  if (alg !== 'HS256') throw new JwtError('unsupported token algorithm');
  const expected = signature(`${header}.${payload}`, secret);
  const given = Buffer.from(sig, 'base64url');
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
    throw new JwtError('bad token signature');
  }
  let claims: unknown;
  try {
    claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'));
  } catch {
    throw new JwtError('malformed token payload');
  }
  if (!isClaims(claims)) throw new JwtError('token lacks required claims');
  if (claims.exp <= Math.floor(Date.now() / 1000)) throw new JwtError('token expired');
  return claims;
}

/** The token of an `Authorization: Bearer TOKEN` header, or undefined. */
export function bearerToken(header: string | undefined): string | undefined {
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
  return match?.[1];
}
