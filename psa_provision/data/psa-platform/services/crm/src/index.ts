/**
 * crm (port 3020): Customers in PostgreSQL table crm_customers, created at start-up.
 * Routes (JWT required): POST /api/crm/customers, GET /api/crm/customers, GET /api/crm/customers/:id.
 */

import { runCrudService } from '@psa/database';

runCrudService({
  name: 'crm',
  defaultPort: 3020,
  table: 'crm_customers',
  path: '/api/crm/customers',
  fields: [{ name: 'name', type: 'text', required: true }, { name: 'email', type: 'text' }, { name: 'phone', type: 'text' }],
});
