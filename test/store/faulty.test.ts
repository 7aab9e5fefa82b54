import { describe, expect, it } from 'vitest';

import { AbortedError, ThrottledError, TransientError } from '../../src/store/errors.js';
import { FaultyStore } from '../../src/store/faulty.js';
import { MemoryStore } from '../../src/store/memory.js';
import { describeStoreConformance, expectStoreError } from './conformance.js';

// With no faults configured, the wrapper must be transparent.
describeStoreConformance('faulty wrapper without faults', async () => ({
  store: new FaultyStore(new MemoryStore({ bucket: 'faulty' })),
  storeForMissingBucket: () => new FaultyStore(new MemoryStore({ bucket: 'missing', bucketExists: false })),
  cleanup: async () => {},
}), { largeListing: false });

async function outcomes(store: FaultyStore, count: number): Promise<boolean[]> {
  const results: boolean[] = [];
  for (let index = 0; index < count; index++) {
    results.push(await store.head('object').then(() => true, () => false));
  }
  return results;
}

describe('FaultyStore', () => {
  it('same seed fails the same calls', async () => {
    const make = (seed: number): FaultyStore => {
      const inner = new MemoryStore();
      inner.putRaw('object', 'x');
      return new FaultyStore(inner, { seed, defaults: { failureRate: 0.5 } });
    };

    const first = await outcomes(make(7), 64);
    const second = await outcomes(make(7), 64);
    const other = await outcomes(make(8), 64);

    expect(second).toEqual(first);
    expect(other).not.toEqual(first);
    const failures = first.filter((succeeded) => !succeeded).length;
    expect(failures).toBeGreaterThan(10);
    expect(failures).toBeLessThan(54);
  });

  it('failed calls never reach the inner store', async () => {
    const inner = new MemoryStore();
    const store = new FaultyStore(inner, { operations: { put: { failureRate: 1, errorCode: 'Throttled' } } });

    const error = await expectStoreError(store.put('never', Buffer.from('x')), ThrottledError);

    expect(error.operation).toBe('put');
    expect(error.key).toBe('never');
    expect(error.retryable).toBe(true);
    expect(inner.requestCount('put')).toBe(0);
    expect(store.injectedFailures).toBe(1);
    expect(inner.getRaw('never')).toBeUndefined();
  });

  it('per-operation faults leave others alone', async () => {
    const inner = new MemoryStore();
    inner.putRaw('object', 'x');
    const store = new FaultyStore(inner, { defaults: { failureRate: 1 }, operations: { get: { failureRate: 0 } } });

    expect((await store.get('object')).body.toString()).toBe('x');
    await expectStoreError(store.head('object'), TransientError);
  });

  it('faults can change between calls', async () => {
    const inner = new MemoryStore();
    inner.putRaw('object', 'x');
    const store = new FaultyStore(inner);

    store.operations.head = { failureRate: 1 };
    await expectStoreError(store.head('object'), TransientError);
    delete store.operations.head;
    expect((await store.head('object')).size).toBe(1);
  });

  it('abort cancels an injected delay', async () => {
    const store = new FaultyStore(new MemoryStore(), { defaults: { delayMs: 60_000 } });
    const controller = new AbortController();

    const pending = store.list({ prefix: '', signal: controller.signal });
    controller.abort();

    await expectStoreError(pending, AbortedError);
  });
});
