/** JSON-lines logging to stdout, one object per line, so PM2 and log shippers can parse it. */

export type Level = 'debug' | 'info' | 'warn' | 'error';
export type Fields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: Fields): void;
  info(msg: string, fields?: Fields): void;
  warn(msg: string, fields?: Fields): void;
  error(msg: string, fields?: Fields): void;
  child(fields: Fields): Logger;
}

const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

/** Message of any thrown value, for logs and health bodies (never a stack, never a secret). */
export function errorText(err: unknown): string {
  if (err instanceof AggregateError && err.errors.length > 0) {
    return err.errors.map(errorText).join('; ');
  }
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    const msg = err.message || err.name;
    const text = typeof code === 'string' && !msg.includes(code) ? `${code}: ${msg}` : msg;
    // fetch() rejects with "fetch failed" and the real reason (ECONNREFUSED ...) as its cause.
    return err.cause !== undefined && err.cause !== err ? `${text}: ${errorText(err.cause)}` : text;
  }
  return String(err);
}

function minimumLevel(): number {
  const wanted = (process.env.LOG_LEVEL ?? 'info').toLowerCase();
  return wanted in ORDER ? ORDER[wanted as Level] : ORDER.info;
}

/** A logger whose lines carry `service`, `pid` and the given base fields. */
export function createLogger(service: string, base: Fields = {}): Logger {
  const threshold = minimumLevel();
  const write = (level: Level, msg: string, fields?: Fields): void => {
    if (ORDER[level] < threshold) return;
    const line: Fields = { time: new Date().toISOString(), level, service, pid: process.pid, msg, ...base };
    for (const [key, value] of Object.entries(fields ?? {})) {
      line[key] = value instanceof Error ? errorText(value) : value;
    }
    process.stdout.write(`${JSON.stringify(line)}\n`);
  };
  return {
    debug: (msg, fields) => write('debug', msg, fields),
    info: (msg, fields) => write('info', msg, fields),
    warn: (msg, fields) => write('warn', msg, fields),
    error: (msg, fields) => write('error', msg, fields),
    child: (fields) => createLogger(service, { ...base, ...fields }),
  };
}
