/**
 * GETs repeated after failures that a later attempt can get past.
 *
 * The S3 store retries a request until its response headers arrive (the
 * SDK's standard retry mode), but a body that is cut short or reset after
 * that rejects with `TransientError` and is not repeated there. The GCS store
 * sends each download once, so there every failure, a 503 included, costs
 * one attempt here. Throttling that outlasted the store's own attempts rejects
 * with `ThrottledError`. Both are repeated here, with exponential backoff and
 * full jitter (a delay drawn from zero to the doubling bound), until the
 * attempt limit or the time budget is reached. Everything else, such as
 * `PreconditionFailedError` after the object changed or `NotFoundError`, is
 * returned at once, and so is any failure after the caller's signal fired.
 *
 * A GET has no side effects, so repeating it is always safe.
 *
 * The time budget counts the attempts themselves, not only the delays
 * between them, so it must be longer than one attempt can take. The stores
 * end an attempt whose connection stays idle for 30 s (GcsStore
 * `downloadIdleTimeoutMs`, S3Store `requestTimeoutMs`). A budget no longer
 * than that would let one stalled attempt use it up, so the GET would fail
 * with EIO at its first failure. A budget of 60 s leaves room for retries
 * after one stall, and the last retry starts before 60 s and, if it stalls
 * too, ends by about 90 s, below the kernel request timeout of the mount
 * (120 s by default). A reader therefore gets an errno, not ETIMEDOUT, when
 * storage stays down.
 * NOTE: a read that waited for another reader's failed fetch of the same
 * bytes starts its own fetch with a fresh budget, so when storage stays
 * down that read can reach the kernel deadline and get ETIMEDOUT.
 */

import type { Logger } from 'pino';

import { isStoreError } from '../store/errors.js';
import type { GetRequest, GetResult, ObjectStore } from '../store/types.js';

export interface GetRetryPolicy {
  /** Attempts in total, the first included. */
  maxAttempts: number;
  /** Upper bound of the first retry delay, in milliseconds. */
  initialDelayMs: number;
  /** Cap of the retry delay bound, in milliseconds. */
  maxDelayMs: number;
  /** No retry starts later than this many milliseconds after the first attempt. */
  budgetMs: number;
}

// Eight attempts: when one request in six fails, all eight fail for about one
// GET in 1.7 million (6^8), and the delays of seven retries add up to at most 16.2 s.
// The budget is twice the stores' 30 s idle timeout; see the file comment.
export const DEFAULT_GET_RETRY_POLICY: GetRetryPolicy = {
  maxAttempts: 8,
  initialDelayMs: 200,
  maxDelayMs: 5_000,
  budgetMs: 60_000,
};

export interface GetRetryOptions {
  logger: Logger;
  policy?: Partial<GetRetryPolicy>;
  /** Returns a number in [0, 1) for the jitter; default Math.random. */
  random?: () => number;
  now?: () => number;
}

/** Whether a failed GET may succeed when repeated unchanged. */
export function isRetryableGetFailure(error: unknown): boolean {
  return isStoreError(error) && (error.code === 'Transient' || error.code === 'Throttled');
}

/** Calls `store.get`, repeating it after transient failures and throttling; see the file comment. */
export async function getWithRetry(store: ObjectStore, key: string, request: GetRequest, options: GetRetryOptions): Promise<GetResult> {
  const policy = { ...DEFAULT_GET_RETRY_POLICY, ...options.policy };
  const random = options.random ?? Math.random;
  const now = options.now ?? Date.now;
  const startedAt = now();

  for (let attempt = 1; ; attempt += 1) {
    try {
      const result = await store.get(key, request);
      if (attempt > 1) {
        options.logger.info({ bucket: store.bucket, key, range: request.range, attempts: attempt }, 'GET succeeded after retrying');
      }
      return result;
    } catch (error) {
      const elapsedMs = now() - startedAt;
      const retryable = isRetryableGetFailure(error) && request.signal?.aborted !== true;
      if (!retryable || attempt >= policy.maxAttempts || elapsedMs >= policy.budgetMs) {
        if (retryable) {
          options.logger.warn({ bucket: store.bucket, key, range: request.range, attempts: attempt, elapsedMs, err: error }, 'GET failed after retrying; returning the error');
        }
        throw error;
      }

      const bound = Math.min(policy.maxDelayMs, policy.initialDelayMs * 2 ** (attempt - 1));
      const delayMs = Math.floor(random() * bound);
      options.logger.info(
        { bucket: store.bucket, key, range: request.range, attempt, delayMs, code: (error as { code?: string }).code, reason: (error as Error).message },
        'GET failed with a transient error or throttling; retrying',
      );
      await sleep(delayMs, request.signal);
      if (request.signal?.aborted === true) throw error;
    }
  }
}

/** Waits `delayMs`, or less when `signal` aborts; never rejects. */
function sleep(delayMs: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted === true || delayMs <= 0) {
      resolve();
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, delayMs);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
