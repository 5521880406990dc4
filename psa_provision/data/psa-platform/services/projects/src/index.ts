/**
 * projects (port 3050): Projects in PostgreSQL table projects, created at start-up.
 * Routes (JWT required): POST /api/projects, GET /api/projects, GET /api/projects/:id.
 */

import { runCrudService } from '@psa/database';

runCrudService({
  name: 'projects',
  defaultPort: 3050,
  table: 'projects',
  path: '/api/projects',
  fields: [{ name: 'name', type: 'text', required: true }, { name: 'customer_id', type: 'integer' }, { name: 'status', type: 'text' }],
});
