/**
 * assets (port 3060): Assets (devices, licences) in PostgreSQL table assets, created at start-up.
 * Routes (JWT required): POST /api/assets, GET /api/assets, GET /api/assets/:id.
 */

import { runCrudService } from '@psa/database';

runCrudService({
  name: 'assets',
  defaultPort: 3060,
  table: 'assets',
  path: '/api/assets',
  fields: [
    { name: 'name', type: 'text', required: true }, { name: 'kind', type: 'text' },
    { name: 'serial_number', type: 'text' }, { name: 'customer_id', type: 'integer' },
  ],
});
