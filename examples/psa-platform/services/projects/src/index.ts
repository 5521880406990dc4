/**
 * projects (port 3050): Projects in PostgreSQL table projects, created at start-up.
 * Routes (JWT required): POST /api/projects, GET /api/projects, GET /api/projects/:id.
 */

import { checkPostgres, createPool, crudRoutes, crudSchema, CrudResource, ensureSchema } from '@psa/database';
import { createLogger, env, loadConfig, Router, runService, StartupTask } from '@psa/utils';

const SERVICE = 'projects';

const RESOURCE: CrudResource = {
  table: 'projects',
  path: '/api/projects',
  fields: [
    { name: 'name', type: 'text', required: true },
    { name: 'customer_id', type: 'integer' },
    { name: 'status', type: 'text' },
  ],
};

const log = createLogger(SERVICE);
const { jwtSecret, pool } = loadConfig(log, () => ({
  jwtSecret: env('JWT_SECRET'),
  pool: createPool(log, `psa-${SERVICE}`),
}));
const schema = new StartupTask('schema', log);
const router = crudRoutes(new Router(jwtSecret), pool, RESOURCE, () => schema.check());

runService({
  name: SERVICE,
  defaultPort: 3050,
  log,
  router,
  checks: {
    postgres: async () => {
      await schema.check();
      await checkPostgres(pool);
    },
  },
  start: () => schema.run(() => ensureSchema(pool, [crudSchema(RESOURCE)])),
  stop: () => pool.end(),
});
