/**
 * assets (port 3060): Assets (devices, licences) in PostgreSQL table assets, created at start-up.
 * Routes (JWT required): POST /api/assets, GET /api/assets, GET /api/assets/:id.
 */

import { checkPostgres, createPool, crudRoutes, crudSchema, CrudResource, ensureSchema } from '@psa/database';
import { createLogger, env, loadConfig, Router, runService, StartupTask } from '@psa/utils';

const SERVICE = 'assets';

const RESOURCE: CrudResource = {
  table: 'assets',
  path: '/api/assets',
  fields: [
    { name: 'name', type: 'text', required: true },
    { name: 'kind', type: 'text' },
    { name: 'serial_number', type: 'text' },
    { name: 'customer_id', type: 'integer' },
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
  defaultPort: 3060,
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
