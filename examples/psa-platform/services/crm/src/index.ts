/**
 * crm (port 3020): Customers in PostgreSQL table crm_customers, created at start-up.
 * Routes (JWT required): POST /api/crm/customers, GET /api/crm/customers, GET /api/crm/customers/:id.
 */

import { checkPostgres, createPool, crudRoutes, crudSchema, CrudResource, ensureSchema } from '@psa/database';
import { createLogger, env, loadConfig, Router, runService, StartupTask } from '@psa/utils';

const SERVICE = 'crm';

const RESOURCE: CrudResource = {
  table: 'crm_customers',
  path: '/api/crm/customers',
  fields: [
    { name: 'name', type: 'text', required: true },
    { name: 'email', type: 'text' },
    { name: 'phone', type: 'text' },
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
  defaultPort: 3020,
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
