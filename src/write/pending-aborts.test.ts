import { pino } from 'pino';
import { describe, expect, it } from 'vitest';

import { AccessDeniedError } from '../store/errors.js';
import { MemoryStore } from '../store/memory.js';
import { PendingAborts } from './pending-aborts.js';

const logger = pino({ level: 'silent' });

/** A memory store whose abort requests are denied while `denied` is set. */
class DenyingStore extends MemoryStore {
  denied = true;
  abortAttempts = 0;

  override async abortMultipartUpload(key: string, uploadId: string): Promise<void> {
    this.abortAttempts += 1;
    if (this.denied) throw new AccessDeniedError('abort denied', { operation: 'abortMultipartUpload', bucket: this.bucket, key });
    return super.abortMultipartUpload(key, uploadId);
  }
}

async function waitFor(condition: () => boolean, timeoutMs = 2000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

describe('PendingAborts', () => {
  it('retries a denied abort until it succeeds', async () => {
    const store = new DenyingStore();
    const uploadId = await store.createMultipartUpload('big.bin');
    const aborts = new PendingAborts({ store, logger, initialDelayMs: 5, maxDelayMs: 10 });

    aborts.add('big.bin', uploadId, new Error('first abort failed'));
    await waitFor(() => store.abortAttempts >= 2);
    expect(store.pendingUploadCount()).toBe(1);
    expect(aborts.size).toBe(1);

    store.denied = false;
    await waitFor(() => aborts.size === 0);
    expect(store.pendingUploadCount()).toBe(0);
    aborts.stop();
  });

  it('counts an upload that is already gone as aborted', async () => {
    const store = new DenyingStore();
    store.denied = false;
    const aborts = new PendingAborts({ store, logger, initialDelayMs: 5, maxDelayMs: 10 });

    aborts.add('gone.bin', 'no-such-upload', new Error('abort failed'));
    await waitFor(() => aborts.size === 0);
    expect(store.abortAttempts).toBe(1);
  });

  it('gives up after the maximum age', async () => {
    const store = new DenyingStore();
    const uploadId = await store.createMultipartUpload('stuck.bin');
    let now = 0;
    const aborts = new PendingAborts({ store, logger, initialDelayMs: 5, maxDelayMs: 10, maxAgeMs: 1000, now: () => now });

    aborts.add('stuck.bin', uploadId, new Error('abort failed'));
    now = 1000;
    await waitFor(() => aborts.size === 0);
    expect(store.pendingUploadCount()).toBe(1);
  });

  it('flush tries every pending abort once', async () => {
    const store = new DenyingStore();
    const uploadId = await store.createMultipartUpload('late.bin');
    const aborts = new PendingAborts({ store, logger, initialDelayMs: 60_000, maxDelayMs: 60_000, random: () => 1 });

    aborts.add('late.bin', uploadId, new Error('abort failed'));
    store.denied = false;
    await aborts.flush();
    expect(store.pendingUploadCount()).toBe(0);
    expect(aborts.size).toBe(0);
    aborts.stop();
  });
});
