import { afterEach, describe, expect, it, vi } from 'vitest';

import { PartBufferPool } from './part-buffers.js';

afterEach(() => {
  vi.useRealTimers();
});

describe('PartBufferPool', () => {
  it('hands a given buffer to the next take of its size', () => {
    const pool = new PartBufferPool();
    const first = pool.take(1024);
    pool.give(first);

    expect(pool.take(2048)).not.toBe(first);
    expect(pool.take(1024)).toBe(first);
    expect(pool.take(1024)).not.toBe(first);
  });

  it('keeps at most two idle buffers per size', () => {
    const pool = new PartBufferPool();
    const buffers = [pool.take(1024), pool.take(1024), pool.take(1024)];
    for (const buffer of buffers) pool.give(buffer);

    expect(pool.idleBytes).toBe(2 * 1024);
  });

  it('frees idle buffers after 30 s without use', () => {
    vi.useFakeTimers();
    const pool = new PartBufferPool();
    pool.give(pool.take(1024));

    vi.advanceTimersByTime(29_000);
    expect(pool.idleBytes).toBe(1024);
    vi.advanceTimersByTime(1_000);
    expect(pool.idleBytes).toBe(0);
  });
});
