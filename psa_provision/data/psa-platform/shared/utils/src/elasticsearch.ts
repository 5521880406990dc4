/**
 * Elasticsearch over its REST API with global fetch. Uses only PUT/HEAD /{index},
 * PUT/GET /{index}/_doc/{id}, POST /{index}/_refresh, POST /{index}/_search and
 * GET /_cluster/health — the calls the sandbox's stand-in implements.
 *
 * A cluster (ELASTICSEARCH_NODES=host[:port],...) is reached through any member, as Elastic's own
 * client does: requests stay on the node that last answered; one that does not answer (refused,
 * unreachable, timed out) or answers 502/503/504 is set aside for DEAD_MS and the request goes to the
 * next. Every call here is idempotent (a document is PUT under its id), so a retry on another node
 * cannot duplicate anything.
 */

import { env, envInt, parseAddresses } from './config';

export interface SearchHit<T> {
  id: string;
  source: T;
}

export interface SearchResult<T> {
  total: number;
  hits: SearchHit<T>[];
}

interface EsResponse {
  status: number;
  body: unknown;
}

export class ElasticsearchError extends Error {}

function field(value: unknown, ...path: string[]): unknown {
  let current = value;
  for (const key of path) {
    if (typeof current !== 'object' || current === null) return undefined;
    current = (current as Record<string, unknown>)[key];
  }
  return current;
}

const DEAD_MS = 30_000; // a node that failed is tried again after this, or sooner when no other answers
const RETRY_STATUSES = new Set([502, 503, 504]); // a node that cannot serve now: ask another

export class Elasticsearch {
  private current = 0; // index of the node that answered last
  private readonly deadUntil: number[];

  constructor(readonly baseUrls: string[], private readonly timeoutMs = 5000) {
    if (baseUrls.length === 0) throw new Error('Elasticsearch: no node to connect to');
    this.deadUntil = baseUrls.map(() => 0);
  }

  /** The client for the nodes of ELASTICSEARCH_NODES, or http://ELASTICSEARCH_HOST:ELASTICSEARCH_PORT. */
  static fromEnv(): Elasticsearch {
    const port = envInt('ELASTICSEARCH_PORT', 9200);
    const nodes = parseAddresses(process.env.ELASTICSEARCH_NODES ?? '', port);
    const hosts = nodes.length > 0 ? nodes : [{ host: env('ELASTICSEARCH_HOST', '127.0.0.1'), port }];
    return new Elasticsearch(hosts.map((n) => `http://${n.host}:${n.port}`));
  }

  /** The nodes in the order to try them: from the current one on, those set aside last. */
  private order(): number[] {
    const now = Date.now();
    const all = this.baseUrls.map((_, i) => (this.current + i) % this.baseUrls.length);
    return [...all.filter((i) => (this.deadUntil[i] ?? 0) <= now), ...all.filter((i) => (this.deadUntil[i] ?? 0) > now)];
  }

  private async call(method: string, path: string, body?: unknown): Promise<EsResponse> {
    let failure: unknown;
    for (const i of this.order()) {
      try {
        const response = await this.once(this.baseUrls[i] as string, method, path, body);
        if (RETRY_STATUSES.has(response.status) && this.baseUrls.length > 1) {
          failure = new ElasticsearchError(`${this.baseUrls[i]}: HTTP ${response.status}`);
          this.deadUntil[i] = Date.now() + DEAD_MS;
          continue;
        }
        this.current = i;
        this.deadUntil[i] = 0;
        return response;
      } catch (err) {
        failure = err;
        this.deadUntil[i] = Date.now() + DEAD_MS;
      }
    }
    throw failure;
  }

  private async once(baseUrl: string, method: string, path: string, body?: unknown): Promise<EsResponse> {
    const response = await fetch(`${baseUrl}${path}`, {
      method,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(this.timeoutMs),
    });
    const text = method === 'HEAD' ? '' : await response.text();
    let parsed: unknown = text;
    try {
      parsed = text === '' ? undefined : JSON.parse(text);
    } catch {
      // keep the raw text for the error message
    }
    return { status: response.status, body: parsed };
  }

  private fail(what: string, response: EsResponse): never {
    const reason = field(response.body, 'error', 'reason') ?? field(response.body, 'error') ?? response.body;
    throw new ElasticsearchError(`${what}: HTTP ${response.status} ${typeof reason === 'string' ? reason : JSON.stringify(reason)}`);
  }

  /** Resolves when the cluster answers with status green or yellow. */
  async health(): Promise<void> {
    const response = await this.call('GET', '/_cluster/health');
    const status = field(response.body, 'status');
    if (response.status !== 200) this.fail('cluster health', response);
    if (status !== 'green' && status !== 'yellow') throw new ElasticsearchError(`cluster status is ${String(status)}`);
  }

  /** Create the index with the mappings unless it exists (several instances may race here). */
  async ensureIndex(index: string, mappings: unknown): Promise<void> {
    const head = await this.call('HEAD', `/${encodeURIComponent(index)}`);
    if (head.status === 200) return;
    const created = await this.call('PUT', `/${encodeURIComponent(index)}`, { mappings });
    const type = field(created.body, 'error', 'type');
    if (created.status >= 300 && type !== 'resource_already_exists_exception') this.fail(`create index ${index}`, created);
  }

  async indexDocument(index: string, id: string, document: unknown): Promise<void> {
    const response = await this.call('PUT', `/${encodeURIComponent(index)}/_doc/${encodeURIComponent(id)}`, document);
    if (response.status !== 200 && response.status !== 201) this.fail(`index ${index}/${id}`, response);
  }

  /** The document's _source, or undefined when it (or the index) does not exist. */
  async getDocument<T>(index: string, id: string): Promise<T | undefined> {
    const response = await this.call('GET', `/${encodeURIComponent(index)}/_doc/${encodeURIComponent(id)}`);
    if (response.status === 404) return undefined;
    if (response.status !== 200) this.fail(`get ${index}/${id}`, response);
    return field(response.body, '_source') as T;
  }

  /** Make recent writes searchable; a missing index is not an error. */
  async refresh(index: string): Promise<void> {
    const response = await this.call('POST', `/${encodeURIComponent(index)}/_refresh`);
    if (response.status !== 200 && response.status !== 404) this.fail(`refresh ${index}`, response);
  }

  /** Run a query ({"multi_match": ...}, {"match_all": {}} ...); a missing index yields no hits. */
  async search<T>(index: string, query: unknown, size: number): Promise<SearchResult<T>> {
    const response = await this.call('POST', `/${encodeURIComponent(index)}/_search`, { query, size });
    if (response.status === 404) return { total: 0, hits: [] };
    if (response.status !== 200) this.fail(`search ${index}`, response);
    const total = field(response.body, 'hits', 'total');
    const rawHits = field(response.body, 'hits', 'hits');
    const hits = (Array.isArray(rawHits) ? rawHits : []).map((hit: unknown) => ({
      id: String(field(hit, '_id')),
      source: field(hit, '_source') as T,
    }));
    const count = typeof total === 'number' ? total : Number(field(total, 'value') ?? hits.length);
    return { total: count, hits };
  }
}
