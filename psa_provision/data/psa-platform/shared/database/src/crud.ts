/** Minimal create/list/get routes over one table, for the crm, projects and assets services. */

import type { Pool } from 'pg';
import { HttpError, Router } from '@psa/utils';

export interface CrudField {
  name: string;
  type: 'text' | 'integer';
  required?: boolean;
}

export interface CrudResource {
  /** Table, created by the service at start-up (see crudSchema). */
  table: string;
  /** Collection path, e.g. /api/crm/customers. */
  path: string;
  fields: CrudField[];
}

/** CREATE TABLE IF NOT EXISTS for the resource: bigserial id, its fields, created_at. */
export function crudSchema(resource: CrudResource): string {
  const columns = resource.fields.map((f) => `${f.name} ${f.type === 'integer' ? 'bigint' : 'text'}${f.required ? ' NOT NULL' : ''}`);
  return `CREATE TABLE IF NOT EXISTS ${resource.table} (
     id bigserial PRIMARY KEY,
     ${columns.join(',\n     ')},
     created_at timestamptz NOT NULL DEFAULT now()
   )`;
}

function fieldValue(body: Record<string, unknown>, field: CrudField): string | number | null {
  const value = body[field.name];
  if (value === undefined || value === null || value === '') {
    if (field.required) throw new HttpError(400, `field "${field.name}" is required`);
    return null;
  }
  if (field.type === 'integer') {
    if (typeof value !== 'number' || !Number.isSafeInteger(value)) throw new HttpError(400, `field "${field.name}" must be an integer`);
    return value;
  }
  if (typeof value !== 'string' || value.length > 10_000) throw new HttpError(400, `field "${field.name}" must be a string`);
  return value;
}

type Row = Record<string, unknown>;

function toJson(row: Row): Row {
  const out: Row = {};
  for (const [key, value] of Object.entries(row)) {
    out[key] = value instanceof Date ? value.toISOString() : key === 'id' || key.endsWith('_id') ? (value === null ? null : Number(value)) : value;
  }
  return out;
}

/** Add POST path, GET path (?size=, newest first) and GET path/:id to the router. */
export function crudRoutes(router: Router, pool: Pool, resource: CrudResource, ready: () => Promise<void>): Router {
  const names = resource.fields.map((f) => f.name);
  const columns = ['id', ...names, 'created_at'].join(', ');
  const root = resource.path.split('/').slice(0, 3).join('/');
  if (root !== resource.path) {
    // e.g. GET /api/crm lists what the service offers, so the bare prefix answers too.
    router.add('GET', root, async () => ({ status: 200, body: { resources: [resource.path] } }));
  }
  return router
    .add('POST', resource.path, async (req) => {
      if (typeof req.body !== 'object' || req.body === null || Array.isArray(req.body)) throw new HttpError(400, 'body must be a JSON object');
      const values = resource.fields.map((f) => fieldValue(req.body as Record<string, unknown>, f));
      await ready().catch(() => {
        throw new HttpError(503, 'service is starting');
      });
      const placeholders = values.map((_, i) => `$${i + 1}`).join(', ');
      const result = await pool.query<Row>(
        `INSERT INTO ${resource.table} (${names.join(', ')}) VALUES (${placeholders}) RETURNING ${columns}`, values,
      );
      return { status: 201, body: toJson(result.rows[0] as Row) };
    })
    .add('GET', resource.path, async (req) => {
      const size = Math.min(Math.max(Number(req.query.get('size') ?? 50) || 50, 1), 500);
      const [rows, count] = await Promise.all([
        pool.query<Row>(`SELECT ${columns} FROM ${resource.table} ORDER BY id DESC LIMIT $1`, [size]),
        pool.query<{ n: string }>(`SELECT count(*) AS n FROM ${resource.table}`),
      ]);
      return { status: 200, body: { items: rows.rows.map(toJson), total: Number(count.rows[0]?.n ?? 0) } };
    })
    .add('GET', `${resource.path}/:id`, async (req) => {
      const id = req.params.id ?? '';
      if (!/^[1-9][0-9]{0,15}$/.test(id)) throw new HttpError(404, 'not found');
      const result = await pool.query<Row>(`SELECT ${columns} FROM ${resource.table} WHERE id = $1`, [id]);
      const row = result.rows[0];
      if (row === undefined) throw new HttpError(404, 'not found');
      return { status: 200, body: toJson(row) };
    });
}
