/** Configuration read only from process.env (PM2 loads /opt/psa-platform/.env into it). */

export class ConfigError extends Error {}

/** The variable's value, the fallback when unset or empty, or a ConfigError naming it. */
export function env(name: string, fallback?: string): string {
  const value = process.env[name];
  if (value !== undefined && value !== '') return value;
  if (fallback !== undefined) return fallback;
  throw new ConfigError(`environment variable ${name} is not set`);
}

/** An integer variable (port, timeout), with a ConfigError when it is not a number. */
export function envInt(name: string, fallback?: number): number {
  const raw = env(name, fallback === undefined ? undefined : String(fallback));
  const value = Number.parseInt(raw, 10);
  if (!Number.isFinite(value) || String(value) !== raw.trim()) {
    throw new ConfigError(`environment variable ${name} must be an integer, got ${JSON.stringify(raw)}`);
  }
  return value;
}

/** host:port pairs from a comma-separated list (RABBITMQ_NODES, REDIS_SENTINELS...); `port` where none is given. */
export function parseAddresses(text: string, port: number): { host: string; port: number }[] {
  return text.split(',').map((item) => item.trim()).filter((item) => item !== '').map((item) => {
    const at = item.lastIndexOf(':');
    if (at <= 0) return { host: item, port };
    const value = Number.parseInt(item.slice(at + 1), 10);
    if (!Number.isInteger(value) || value < 1 || value > 65535) throw new ConfigError(`bad port in address ${item}`);
    return { host: item.slice(0, at), port: value };
  });
}
