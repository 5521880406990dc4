/**
 * auth (port 3010): users in PostgreSQL (passwords hashed by pgcrypto's bcrypt), login
 * issuing HS256 JWTs valid one hour (and recording last_login_at), sessions in Redis under session:<jti>.
 * On start it makes sure the admin user APP_ADMIN_EMAIL / APP_ADMIN_PASSWORD exists.
 */

import { randomUUID } from 'node:crypto';
import { createPool, ensureSchema, postgresCheck } from '@psa/database';
import { checkRedis, closeRedis, createRedis } from '@psa/redis';
import {
  createLogger, env, HttpError, loadConfig, Router, runService, signJwt, StartupTask, stringField,
} from '@psa/utils';

const SERVICE = 'auth';
const TOKEN_TTL_SECONDS = 3600;

const log = createLogger(SERVICE);
const { jwtSecret, admin, pool, redis } = loadConfig(log, () => ({
  jwtSecret: env('JWT_SECRET'),
  admin: { email: env('APP_ADMIN_EMAIL'), password: env('APP_ADMIN_PASSWORD') },
  pool: createPool(log, `psa-${SERVICE}`),
  redis: createRedis(log),
}));
const schema = new StartupTask('schema and admin user', log);

const SCHEMA = [
  `CREATE TABLE IF NOT EXISTS auth_users (
     id bigserial PRIMARY KEY,
     email text NOT NULL UNIQUE,
     password_hash text NOT NULL,
     role text NOT NULL DEFAULT 'user',
     created_at timestamptz NOT NULL DEFAULT now(),
     updated_at timestamptz NOT NULL DEFAULT now()
   )`,
  // The last successful login: users active within a token's lifetime are the platform's
  // concurrent users (`psa-provision capacity` counts them).
  'ALTER TABLE auth_users ADD COLUMN IF NOT EXISTS last_login_at timestamptz',
];

/** Insert the admin, or re-hash its password only when the one in the environment changed. */
function adminSeed(): { text: string; values: unknown[] } {
  return {
    text: `INSERT INTO auth_users (email, password_hash, role)
           VALUES (lower($1), crypt($2, gen_salt('bf')), 'admin')
           ON CONFLICT (email) DO UPDATE
             SET password_hash = crypt($2, gen_salt('bf')), role = 'admin', updated_at = now()
             WHERE auth_users.password_hash IS DISTINCT FROM crypt($2, auth_users.password_hash)
                OR auth_users.role <> 'admin'`,
    values: [admin.email, admin.password],
  };
}

interface UserRow {
  id: string;
  email: string;
  role: string;
}

const router = new Router(jwtSecret)
  .add('GET', '/api/auth', async () => ({
    status: 200, body: { endpoints: ['POST /api/auth/login', 'GET /api/auth/me', 'POST /api/auth/logout'] },
  }))
  .add('POST', '/api/auth/login', async (req) => {
    const email = stringField(req.body, 'email', 320);
    const password = stringField(req.body, 'password', 1024);
    await schema.check().catch(() => {
      throw new HttpError(503, 'auth is starting');
    });
    const result = await pool.query<UserRow>(
      `UPDATE auth_users SET last_login_at = now()
        WHERE email = lower($1) AND password_hash = crypt($2, password_hash)
        RETURNING id, email, role`,
      [email, password],
    );
    const user = result.rows[0];
    if (user === undefined) {
      log.info('login refused', { reason: 'bad email or password' });
      return { status: 401, body: { error: 'invalid email or password' } };
    }
    const jti = randomUUID();
    const token = signJwt({ sub: String(user.id), email: user.email, role: user.role, jti }, jwtSecret, TOKEN_TTL_SECONDS);
    await redis.set(`session:${jti}`, JSON.stringify({ user_id: String(user.id), email: user.email, created_at: new Date().toISOString() }), 'EX', TOKEN_TTL_SECONDS);
    log.info('login', { user_id: String(user.id) });
    return { status: 200, body: { token, token_type: 'Bearer', expires_in: TOKEN_TTL_SECONDS } };
  }, { public: true })
  .add('GET', '/api/auth/me', async (req) => {
    const claims = req.user;
    if (claims === undefined) throw new HttpError(401, 'missing Bearer token');
    if (!/^[1-9][0-9]{0,15}$/.test(claims.sub)) throw new HttpError(401, 'token is not for a user of this service');
    const session = await redis.get(`session:${claims.jti}`);
    if (session === null) throw new HttpError(401, 'session expired or logged out');
    const result = await pool.query<UserRow>('SELECT id, email, role FROM auth_users WHERE id = $1', [claims.sub]);
    const user = result.rows[0];
    if (user === undefined) throw new HttpError(401, 'user no longer exists');
    return { status: 200, body: { id: Number(user.id), email: user.email, role: user.role, expires_at: new Date(claims.exp * 1000).toISOString() } };
  })
  .add('POST', '/api/auth/logout', async (req) => {
    if (req.user !== undefined) await redis.del(`session:${req.user.jti}`);
    return { status: 200, body: { status: 'logged out' } };
  });

runService({
  name: SERVICE,
  defaultPort: 3010,
  log,
  router,
  checks: {
    postgres: postgresCheck(pool, schema),
    redis: () => checkRedis(redis),
  },
  start: () => schema.run(() => ensureSchema(pool, [...SCHEMA, adminSeed()])),
  stop: async () => {
    await closeRedis(redis);
    await pool.end();
  },
});
