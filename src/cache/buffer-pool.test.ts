import { afterEach, describe, expect, it, vi } from 'vitest';

import { BufferPool } from './buffer-pool.js';

afterEach(() => {
  vi.useRealTimers();
});

describe('BufferPool', () => {
  it('hands a given buffer to the next take of its size', () => {
    const pool = new BufferPool();
    const first = pool.take(1024);
    pool.give(first);

    expect(pool.take(2048)).not.toBe(first);
    expect(pool.take(1024)).toBe(first);
    expect(pool.take(1024)).not.toBe(first);
  });

  it('keeps at most two idle buffers per size', () => {
    const pool = new BufferPool();
    const buffers = [pool.take(1024), pool.take(1024), pool.take(1024)];
    for (const buffer of buffers) pool.give(buffer);

    expect(pool.idleBytes).toBe(2 * 1024);
  });

  it('frees idle buffers after 30 s without use', () => {
    vi.useFakeTimers();
    const pool = new BufferPool();
    pool.give(pool.take(1024));

    vi.advanceTimersByTime(29_000);
    expect(pool.idleBytes).toBe(1024);
    vi.advanceTimersByTime(1_000);
    expect(pool.idleBytes).toBe(0);
  });
});
