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
