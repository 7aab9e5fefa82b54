/**
 * Multipart uploads whose abort request failed, retried in the background.
 *
 * An upload usually fails for the same reason its abort then fails: access
 * was revoked, the credentials expired, the server is down. Without a retry
 * the bucket would keep the incomplete upload (and pay for its parts) until a
 * lifecycle rule removes it. Each failed abort is retried with exponential
 * backoff and full jitter, from 1 s up to 60 s between attempts, for at most
 * `maxAgeMs` (one hour by default: long enough to outlast a revoked policy
 * that an operator restores, short enough that a daemon does not retry
 * forever for a bucket it lost). An upload that is already gone counts as
 * aborted. `flush()` tries every pending abort once more at shutdown.
 *
 * Concurrency: everything runs on the event loop. `pending` maps each upload
 * id to its entry; an entry is removed when its abort succeeds or it expires,
 * and at most one attempt per entry is in flight (`attempting`).
 */

import type { Logger } from 'pino';

import { NotFoundError } from '../store/errors.js';
import type { ObjectStore } from '../store/types.js';

export interface PendingAbortsOptions {
  store: ObjectStore;
  logger: Logger;
  maxAgeMs?: number;
  initialDelayMs?: number;
  maxDelayMs?: number;
  now?: () => number;
  random?: () => number;
}

interface PendingAbort {
  key: string;
  uploadId: string;
  firstFailureAt: number;
  attempts: number;
  timer: NodeJS.Timeout | undefined;
  attempting: boolean;
}

export class PendingAborts {
  private readonly options: Required<Omit<PendingAbortsOptions, 'store' | 'logger'>> & Pick<PendingAbortsOptions, 'store' | 'logger'>;
  private readonly pending = new Map<string, PendingAbort>();
  private stopped = false;

  constructor(options: PendingAbortsOptions) {
    this.options = {
      maxAgeMs: 3_600_000,
      initialDelayMs: 1_000,
      maxDelayMs: 60_000,
      now: () => Date.now(),
      random: Math.random,
      ...options,
    };
  }

  get size(): number {
    return this.pending.size;
  }

  /** Records an abort that failed with `error` and schedules its first retry. */
  add(key: string, uploadId: string, error: unknown): void {
    if (this.stopped || this.pending.has(uploadId)) return;

    const entry: PendingAbort = { key, uploadId, firstFailureAt: this.options.now(), attempts: 0, timer: undefined, attempting: false };
    this.pending.set(uploadId, entry);
    this.options.logger.warn(
      { bucket: this.options.store.bucket, key, uploadId, err: error },
      'failed to abort a multipart upload; retrying in the background so that no incomplete upload remains',
    );
    this.schedule(entry);
  }

  /** Tries every pending abort once now; used at shutdown. */
  async flush(): Promise<void> {
    await Promise.all([...this.pending.values()].map((entry) => this.attempt(entry, false)));
  }

  /** Cancels the retries; the uploads left are logged so an operator can remove them. */
  stop(): void {
    this.stopped = true;
    for (const entry of this.pending.values()) {
      clearTimeout(entry.timer);
      this.options.logger.error(
        { bucket: this.options.store.bucket, key: entry.key, uploadId: entry.uploadId },
        'stopped retrying the abort of a multipart upload; it stays until the next start cleans it or a bucket lifecycle rule removes it',
      );
    }
    this.pending.clear();
  }

  private schedule(entry: PendingAbort): void {
    const bound = Math.min(this.options.maxDelayMs, this.options.initialDelayMs * 2 ** entry.attempts);
    const delay = Math.round(this.options.random() * bound);
    entry.timer = setTimeout(() => void this.attempt(entry, true), delay);
    entry.timer.unref();
  }

  private async attempt(entry: PendingAbort, rescheduleOnFailure: boolean): Promise<void> {
    if (entry.attempting || !this.pending.has(entry.uploadId)) return;
    entry.attempting = true;
    clearTimeout(entry.timer);
    entry.attempts += 1;

    const { store, logger } = this.options;
    try {
      await store.abortMultipartUpload(entry.key, entry.uploadId);
      this.pending.delete(entry.uploadId);
      logger.info({ bucket: store.bucket, key: entry.key, uploadId: entry.uploadId, attempts: entry.attempts }, 'aborted multipart upload after retrying');
    } catch (error) {
      if (error instanceof NotFoundError) {
        this.pending.delete(entry.uploadId);
        logger.info({ bucket: store.bucket, key: entry.key, uploadId: entry.uploadId }, 'multipart upload to abort is already gone');
      } else if (this.options.now() - entry.firstFailureAt >= this.options.maxAgeMs) {
        this.pending.delete(entry.uploadId);
        logger.error(
          { bucket: store.bucket, key: entry.key, uploadId: entry.uploadId, attempts: entry.attempts, err: error },
          'gave up aborting a multipart upload; it stays until the next start cleans it or a bucket lifecycle rule removes it',
        );
      } else {
        logger.debug({ bucket: store.bucket, key: entry.key, uploadId: entry.uploadId, attempts: entry.attempts, err: error }, 'abort retry failed');
        if (rescheduleOnFailure && !this.stopped) this.schedule(entry);
      }
    } finally {
      entry.attempting = false;
    }
  }
}
