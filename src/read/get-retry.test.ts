import { describe, expect, it } from 'vitest';

import { silentLogger } from '../fs/test-support.js';
import { FaultyStore, type InjectedErrorCode } from '../store/faulty.js';
import { PreconditionFailedError, ThrottledError, TransientError } from '../store/errors.js';
import type { GetRequest, GetResult } from '../store/types.js';
import { MemoryStore } from '../store/memory.js';
import { DEFAULT_GET_RETRY_POLICY, getWithRetry } from './get-retry.js';

const FAST = { initialDelayMs: 1, maxDelayMs: 2 };

/** A store whose GETs reject with `errorCode` until `failures` have been injected, then succeed. */
function storeFailingFirst(failures: number, errorCode: InjectedErrorCode): { store: FaultyStore } {
  const memory = new MemoryStore();
  memory.putRaw('object', 'contents');
  const store = new FaultyStore(memory, { operations: { get: { failureRate: 1, errorCode } } });
  const forward = store.get.bind(store);
  store.get = async (key, request) => {
    if (store.injectedFailures >= failures) store.operations.get = {};
    return forward(key, request);
  };
  return { store };
}

describe('getWithRetry', () => {
  it('repeats transient failures', async () => {
    const { store } = storeFailingFirst(3, 'Transient');
    const result = await getWithRetry(store, 'object', {}, { logger: silentLogger, policy: FAST });
    expect(result.body.toString()).toBe('contents');
    expect(store.injectedFailures).toBe(3);
  });

  it('repeats throttling', async () => {
    const { store } = storeFailingFirst(2, 'Throttled');
    const result = await getWithRetry(store, 'object', {}, { logger: silentLogger, policy: FAST });
    expect(result.body.toString()).toBe('contents');
  });

  it('gives up after the attempt limit', async () => {
    const { store } = storeFailingFirst(10, 'Transient');
    await expect(getWithRetry(store, 'object', {}, { logger: silentLogger, policy: { ...FAST, maxAttempts: 4 } })).rejects.toBeInstanceOf(TransientError);
    expect(store.injectedFailures).toBe(4);
  });

  it('does not repeat a changed object', async () => {
    const { store } = storeFailingFirst(1, 'PreconditionFailed');
    await expect(getWithRetry(store, 'object', {}, { logger: silentLogger, policy: FAST })).rejects.toBeInstanceOf(PreconditionFailedError);
    expect(store.injectedFailures).toBe(1);
  });

  it('retries after a stalled attempt', async () => {
    // A fake clock: the first attempt stalls for the stores' 30 s idle timeout, as a hung download does, then fails.
    const memory = new MemoryStore();
    memory.putRaw('object', 'contents');
    let clockMs = 0;
    let attempts = 0;
    const store = Object.create(memory) as MemoryStore;
    store.get = async (key: string, request?: GetRequest): Promise<GetResult> => {
      attempts += 1;
      if (attempts === 1) {
        clockMs += 30_000;
        throw new TransientError('get of object failed before the server sent a response (ETIMEDOUT)', { operation: 'get', bucket: memory.bucket, key, serviceCode: 'ETIMEDOUT' });
      }
      return memory.get(key, request);
    };

    const result = await getWithRetry(store, 'object', {}, { logger: silentLogger, random: () => 0, now: () => clockMs });

    expect(result.body.toString()).toBe('contents');
    expect(attempts).toBe(2);
  });

  it('stops after the time budget', async () => {
    const { store } = storeFailingFirst(10, 'Transient');
    let clockMs = 0;
    const forward = store.get.bind(store);
    store.get = async (key, request) => {
      // Each attempt takes a third of the default budget.
      clockMs += DEFAULT_GET_RETRY_POLICY.budgetMs / 3;
      return forward(key, request);
    };

    await expect(getWithRetry(store, 'object', {}, { logger: silentLogger, random: () => 0, now: () => clockMs })).rejects.toBeInstanceOf(TransientError);
    expect(store.injectedFailures).toBe(3);
  });

  it('stops when the signal aborts', async () => {
    const { store } = storeFailingFirst(10, 'Throttled');
    const controller = new AbortController();
    const pending = getWithRetry(store, 'object', { signal: controller.signal }, { logger: silentLogger, policy: { initialDelayMs: 60_000, maxDelayMs: 60_000 }, random: () => 0.99 });
    controller.abort();
    await expect(pending).rejects.toBeInstanceOf(ThrottledError);
  });
});
