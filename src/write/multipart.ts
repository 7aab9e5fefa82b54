/**
 * One multipart upload with parts sent in parallel and bounded memory.
 *
 * `addPart` starts a part upload in the background and returns once the part
 * is in flight. Backpressure: it first waits, while this upload already has
 * parts in flight, until fewer than `maxConcurrentParts` parts and at most
 * `maxInFlightBytes` bytes would be in flight and the shared memory budget is
 * not exceeded. The caller's write therefore waits for the network, and the
 * memory of one writer stays bounded.
 *
 * The first failed part is kept and returned by the next `addPart` and by
 * `complete`. `abort` cancels the parts in flight and aborts the upload in the
 * store, so no incomplete upload remains. It does not reject, because callers
 * abort while handling an earlier error and must return that one; a failed
 * abort request goes to `pendingAborts` to be retried in the background.
 *
 * Concurrency: the caller serialises calls (the writer's mutex); only part
 * completions run concurrently, and they only update `inFlight`, `completed`
 * and `failure`.
 */

import type { Logger } from 'pino';

import type { CompletedPart, ObjectInfo, ObjectStore } from '../store/types.js';
import type { MemoryBudget } from './memory-budget.js';
import type { PendingAborts } from './pending-aborts.js';

/** How often a running completion reports progress: well within any sensible --request-timeout. */
const COMPLETION_HEARTBEAT_MS = 1_000;

export interface MultipartUploadOptions {
  store: ObjectStore;
  key: string;
  logger: Logger;
  budget: MemoryBudget;
  maxConcurrentParts: number;
  maxInFlightBytes: number;
  /** Aborted at shutdown; aborts this upload's requests too. */
  signal: AbortSignal;
  /** Where a failed abort request goes to be retried; without it the failure is only logged. */
  pendingAborts?: PendingAborts;
  /**
   * Called when a part is in the bucket, and every second while the
   * completion request runs: the signs that a long close is still moving.
   */
  onProgress?: () => void;
}

export class MultipartUpload {
  private readonly options: MultipartUploadOptions;
  private readonly controller = new AbortController();
  private readonly inFlight = new Map<number, Promise<void>>();
  private readonly completed: CompletedPart[] = [];
  private uploadIdPromise: Promise<string> | undefined;
  private uploadId: string | undefined;
  private inFlightBytes = 0;
  private failure: unknown;
  private finished = false;

  constructor(options: MultipartUploadOptions) {
    this.options = options;
    const onShutdown = () => this.controller.abort(options.signal.reason);
    if (options.signal.aborted) onShutdown();
    else options.signal.addEventListener('abort', onShutdown, { once: true });
  }

  get key(): string {
    return this.options.key;
  }

  get partsInFlight(): number {
    return this.inFlight.size;
  }

  /**
   * Waits for room, then starts uploading one part; rejects with the first
   * earlier part failure. `uploaded` runs once the part is in the bucket, when
   * nothing refers to `body` any more.
   */
  async addPart(partNumber: number, body: Buffer, uploaded?: () => void): Promise<void> {
    this.throwIfFailed();
    const uploadId = await this.ensureCreated();

    while (this.inFlight.size > 0 && this.mustWait(body.length)) {
      await Promise.race(this.inFlight.values());
      this.throwIfFailed();
    }

    const { store, key, budget } = this.options;
    this.inFlightBytes += body.length;
    budget.reserve(body.length);

    const upload = store
      .uploadPart(key, uploadId, partNumber, body, { signal: this.controller.signal })
      .then(
        (part) => {
          this.completed.push(part);
          uploaded?.();
          this.options.onProgress?.();
        },
        (error: unknown) => {
          this.failure ??= error;
        },
      )
      .finally(() => {
        this.inFlight.delete(partNumber);
        this.inFlightBytes -= body.length;
        budget.release(body.length);
      });
    this.inFlight.set(partNumber, upload);
  }

  /** Waits for every part and completes the upload; aborts it and rejects if any part failed. */
  async complete(): Promise<ObjectInfo> {
    const uploadId = await this.ensureCreated();
    await Promise.all(this.inFlight.values());

    if (this.failure !== undefined) {
      await this.abort();
      throw this.failure;
    }

    const parts = [...this.completed].sort((left, right) => left.partNumber - right.partNumber);

    // The completion counts as progress while it runs: S3 may take minutes to
    // complete an upload of many parts, and fake-gcs-server copies every byte
    // of a compose. The store's own request timeouts and retries bound it.
    const onProgress = this.options.onProgress;
    const heartbeat = onProgress === undefined ? undefined : setInterval(onProgress, COMPLETION_HEARTBEAT_MS);
    try {
      const info = await this.options.store.completeMultipartUpload(this.options.key, uploadId, parts, { signal: this.controller.signal });
      this.finished = true;
      return info;
    } catch (error) {
      await this.abort();
      throw error;
    } finally {
      clearInterval(heartbeat);
    }
  }

  /** Cancels parts in flight and aborts the upload in the store; idempotent, never rejects. */
  async abort(): Promise<void> {
    if (this.finished) return;
    this.finished = true;
    this.controller.abort(new Error(`multipart upload of ${this.options.key} aborted`));
    await Promise.allSettled(this.inFlight.values());

    let uploadId = this.uploadId;
    if (uploadId === undefined && this.uploadIdPromise !== undefined) {
      uploadId = await this.uploadIdPromise.catch(() => undefined);
    }
    if (uploadId === undefined) return;

    const { store, key, logger } = this.options;
    try {
      // No signal: this upload's own signal is aborted by now, and the abort request must still go out.
      await store.abortMultipartUpload(key, uploadId);
      logger.info({ bucket: store.bucket, key, uploadId }, 'aborted multipart upload');
    } catch (error) {
      if (this.options.pendingAborts !== undefined) {
        this.options.pendingAborts.add(key, uploadId, error);
      } else {
        logger.error({ bucket: store.bucket, key, uploadId, err: error }, 'failed to abort multipart upload; the bucket keeps an incomplete upload until a lifecycle rule removes it');
      }
    }
  }

  private mustWait(nextBytes: number): boolean {
    const { maxConcurrentParts, maxInFlightBytes, budget } = this.options;
    return this.inFlight.size >= maxConcurrentParts || this.inFlightBytes + nextBytes > maxInFlightBytes || budget.exceeded;
  }

  private throwIfFailed(): void {
    if (this.failure !== undefined) throw this.failure;
  }

  private ensureCreated(): Promise<string> {
    if (this.uploadIdPromise === undefined) {
      const { store, key } = this.options;
      this.uploadIdPromise = store.createMultipartUpload(key, { signal: this.controller.signal }).then((uploadId) => {
        this.uploadId = uploadId;
        return uploadId;
      });
    }
    return this.uploadIdPromise;
  }
}
