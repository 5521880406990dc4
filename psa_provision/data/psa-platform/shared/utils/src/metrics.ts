/**
 * API request counts of one service, summed over its PM2 cluster workers. Each worker counts its
 * /api/ requests per second for the last WINDOW_SECONDS and writes them to
 * data/metrics/<service>/<pid>.json (under the app directory, PM2's cwd) every FLUSH_MS; GET /metrics
 * (loopback clients only, see service.ts) sums the fresh files of every worker, so the figure is the
 * service's whichever worker answers. `psa-provision capacity` reads it over SSH with curl.
 */

import { mkdirSync, readdirSync, readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import { join, resolve } from 'node:path';

const WINDOW_SECONDS = 300;
const FLUSH_MS = 1000; // another worker's counts reach the sums this late at most
/** A worker file not written for this long is a stopped worker's: left out of the sums. */
const STALE_MS = 15_000;
/** A stopped worker's file is removed after this long (workers come and go with PM2 reloads). */
const FORGET_MS = 600_000;

interface WorkerFile {
  pid: number;
  updated_ms: number;
  requests_total: number;
  errors_total: number;
  /** [epoch second, requests, of which 5xx] for the seconds of the window that saw requests */
  seconds: Array<[number, number, number]>;
}

export interface MetricsSummary {
  service: string;
  workers: number;
  window_seconds: number;
  requests_total: number;
  errors_total: number;
  requests_last_minute: number;
  errors_last_minute: number;
  requests_per_minute_5m: number;
  generated_at: string;
}

const LOOPBACK = new Set(['127.0.0.1', '::1', '::ffff:127.0.0.1']);

/** Whether the request comes from the machine itself (the metrics are not for the network). */
export function fromLoopback(req: IncomingMessage): boolean {
  return LOOPBACK.has(req.socket.remoteAddress ?? '');
}

export class RequestMetrics {
  private total = 0;
  private errors = 0;
  private readonly buckets = new Map<number, [number, number]>();
  private readonly dir: string;
  private readonly file: string;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly service: string, dir?: string) {
    this.dir = dir ?? resolve('data', 'metrics', service);
    this.file = join(this.dir, `${process.pid}.json`);
  }

  /** Count one finished request (only /api/ paths: health probes and /metrics are not API load). */
  count(path: string, status: number, now = Date.now()): void {
    if (!path.startsWith('/api/') && path !== '/api') return;
    const second = Math.floor(now / 1000);
    const bucket = this.buckets.get(second) ?? [0, 0];
    bucket[0] += 1;
    this.total += 1;
    if (status >= 500) {
      bucket[1] += 1;
      this.errors += 1;
    }
    this.buckets.set(second, bucket);
  }

  /** Start writing this worker's file every FLUSH_MS (the timer never keeps the process alive). */
  start(): void {
    this.flush();
    this.timer = setInterval(() => this.flush(), FLUSH_MS);
    this.timer.unref();
  }

  /** Remove this worker's file (graceful shutdown: its requests leave the sums at once). */
  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    try {
      unlinkSync(this.file);
    } catch {
      // already gone
    }
  }

  /** Write this worker's counts atomically (temp file + rename). */
  flush(now = Date.now()): void {
    const oldest = Math.floor(now / 1000) - WINDOW_SECONDS;
    for (const second of this.buckets.keys()) {
      if (second < oldest) this.buckets.delete(second);
    }
    const data: WorkerFile = {
      pid: process.pid,
      updated_ms: now,
      requests_total: this.total,
      errors_total: this.errors,
      seconds: [...this.buckets.entries()].map(([second, [n, e]]) => [second, n, e]),
    };
    try {
      mkdirSync(this.dir, { recursive: true });
      const tmp = `${this.file}.tmp`;
      writeFileSync(tmp, JSON.stringify(data));
      renameSync(tmp, this.file);
    } catch {
      // a full or read-only disk must not take requests down; the sums miss this worker meanwhile
    }
  }

  /** The service's counts: every live worker's file, this worker's own counts first written out. */
  summary(now = Date.now()): MetricsSummary {
    this.flush(now);
    const second = Math.floor(now / 1000);
    let workers = 0;
    let total = 0;
    let errors = 0;
    let lastMinute = 0;
    let errorsLastMinute = 0;
    let window = 0;
    let names: string[] = [];
    try {
      names = readdirSync(this.dir);
    } catch {
      // nothing written yet (flush failed): no worker to sum
    }
    for (const name of names) {
      if (!name.endsWith('.json')) continue;
      const path = join(this.dir, name);
      let data: WorkerFile;
      try {
        data = JSON.parse(readFileSync(path, 'utf8')) as WorkerFile;
      } catch {
        continue; // being replaced right now
      }
      const age = now - data.updated_ms;
      if (age > FORGET_MS) {
        try {
          unlinkSync(path);
        } catch {
          // another worker removed it
        }
      }
      if (age > STALE_MS) continue;
      workers += 1;
      total += data.requests_total;
      errors += data.errors_total;
      for (const [at, n, e] of data.seconds) {
        // the current second is still filling: the last minute is the 60 whole seconds before it
        if (at >= second - 60 && at < second) {
          lastMinute += n;
          errorsLastMinute += e;
        }
        if (at >= second - WINDOW_SECONDS && at < second) window += n;
      }
    }
    return {
      service: this.service,
      workers,
      window_seconds: 60,
      requests_total: total,
      errors_total: errors,
      requests_last_minute: lastMinute,
      errors_last_minute: errorsLastMinute,
      requests_per_minute_5m: Math.round((window / (WINDOW_SECONDS / 60)) * 10) / 10,
      generated_at: new Date(now).toISOString(),
    };
  }
}
