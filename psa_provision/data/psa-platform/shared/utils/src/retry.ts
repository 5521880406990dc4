/** Waiting helpers: timeouts around store calls and backoff between reconnect attempts. */

export class TimeoutError extends Error {}

/** Resolve after ms milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The promise's result, or a TimeoutError naming `what` after ms milliseconds. */
export async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new TimeoutError(`${what} timed out after ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Exponential backoff with jitter: attempt 1 -> ~initialMs, doubling, capped at maxMs. */
export function backoffDelay(attempt: number, initialMs = 250, maxMs = 15_000): number {
  const base = Math.min(maxMs, initialMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(base * (0.8 + Math.random() * 0.4));
}

/**
 * Run fn until it succeeds, sleeping with backoff between failures; gives up only when
 * stopped() turns true (shutdown). onError sees each failure, e.g. to log it.
 */
export async function retryUntilDone(
  fn: () => Promise<void>,
  onError: (err: unknown, attempt: number, delayMs: number) => void,
  stopped: () => boolean,
): Promise<boolean> {
  for (let attempt = 1; !stopped(); attempt += 1) {
    try {
      await fn();
      return true;
    } catch (err) {
      const delay = backoffDelay(attempt);
      onError(err, attempt, delay);
      await sleep(delay);
    }
  }
  return false;
}
