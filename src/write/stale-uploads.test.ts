import { describe, expect, it } from 'vitest';

import { silentLogger } from '../fs/test-support.js';
import { FaultyStore } from '../store/faulty.js';
import { MemoryStore } from '../store/memory.js';
import { abortStaleUploads } from './stale-uploads.js';

const HOUR = 3_600_000;

function storeWithClock(): { memory: MemoryStore; advance: (ms: number) => void; now: () => number } {
  let nowMs = Date.UTC(2026, 0, 1);
  const memory = new MemoryStore({ now: () => new Date(nowMs) });
  return { memory, advance: (ms) => (nowMs += ms), now: () => nowMs };
}

describe('abortStaleUploads', () => {
  it('aborts only old uploads under the prefix', async () => {
    const { memory, advance, now } = storeWithClock();
    const old = await memory.createMultipartUpload('mounted/old.bin');
    const outside = await memory.createMultipartUpload('other/old.bin');
    advance(25 * HOUR);
    const fresh = await memory.createMultipartUpload('mounted/fresh.bin');
    advance(HOUR);

    const result = await abortStaleUploads({ store: memory, prefix: 'mounted/', maxAgeMs: 24 * HOUR, logger: silentLogger, now });

    expect(result).toEqual({ found: 2, aborted: 1, kept: 1, failed: 0 });
    const left = (await memory.listMultipartUploads('')).map((upload) => upload.uploadId);
    expect(left).toContain(outside);
    expect(left).toContain(fresh);
    expect(left).not.toContain(old);
  });

  it('zero age aborts every upload', async () => {
    const { memory, now } = storeWithClock();
    await memory.createMultipartUpload('a');
    await memory.createMultipartUpload('b/c');

    const result = await abortStaleUploads({ store: memory, prefix: '', maxAgeMs: 0, logger: silentLogger, now });

    expect(result.aborted).toBe(2);
    expect(await memory.listMultipartUploads('')).toEqual([]);
  });

  it('listing failure does not reject', async () => {
    const { memory, now } = storeWithClock();
    await memory.createMultipartUpload('a');
    const failing = new FaultyStore(memory, { operations: { listMultipartUploads: { failureRate: 1, errorCode: 'AccessDenied' } } });

    const result = await abortStaleUploads({ store: failing, prefix: '', maxAgeMs: 0, logger: silentLogger, now });

    expect(result).toEqual({ found: 0, aborted: 0, kept: 0, failed: 0 });
    expect(await memory.listMultipartUploads('')).toHaveLength(1);
  });

  it('abort failure is counted and others continue', async () => {
    const { memory, now } = storeWithClock();
    await memory.createMultipartUpload('a');
    await memory.createMultipartUpload('b');
    const failing = new FaultyStore(memory, { seed: 3, operations: { abortMultipartUpload: { failureRate: 0.5, errorCode: 'Transient' } } });

    const result = await abortStaleUploads({ store: failing, prefix: '', maxAgeMs: 0, logger: silentLogger, now });

    expect(result.found).toBe(2);
    expect(result.aborted + result.failed).toBe(2);
    expect(await memory.listMultipartUploads('')).toHaveLength(result.failed);
  });
});
