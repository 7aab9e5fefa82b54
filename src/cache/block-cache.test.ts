import { describe, expect, it } from 'vitest';

import { BlockCache, type BlockId } from './block-cache.js';

const KiB = 1024;

function block(index: number, version = 'v1'): BlockId {
  return { key: 'object', version, index };
}

/** Creates a fetcher that records calls and resolves each one when the test calls its `resolve`. */
function controlledFetcher() {
  const calls: { start: number; end: number; resolve: () => void }[] = [];
  const fetch = (start: number, end: number) =>
    new Promise<Buffer>((resolve) => {
      calls.push({ start, end, resolve: () => resolve(Buffer.alloc(end - start, start % 251)) });
    });
  return { calls, fetch };
}

describe('BlockCache', () => {
  it('keeps a fetch returned in pieces as ranges and serves reads across them', async () => {
    const cache = new BlockCache({ maxBytes: 1024 * KiB });
    const content = Buffer.from(Array.from({ length: 100 * KiB }, (_, index) => index % 253));
    const piecesOf = (start: number, end: number): Buffer[] => {
      const pieces: Buffer[] = [];
      for (let position = start; position < end; position += 7 * KiB) pieces.push(content.subarray(position, Math.min(end, position + 7 * KiB)));
      return pieces;
    };

    await cache.load(block(0), 0, 60 * KiB, async (start, end) => piecesOf(start, end));
    const pieces = await cache.readPieces(block(0), 5 * KiB, 30 * KiB, () => Promise.reject(new Error('served from the cache')));
    expect(pieces.length).toBeGreaterThan(1);
    expect(Buffer.concat(pieces).equals(content.subarray(5 * KiB, 30 * KiB))).toBe(true);

    // A later load that overlaps the cached pieces fetches only what they lack.
    await cache.load(block(0), 50 * KiB, 100 * KiB, async (start, end) => piecesOf(start, end));
    expect((await cache.read(block(0), 0, 100 * KiB, () => Promise.reject(new Error('served from the cache')))).equals(content)).toBe(true);
    expect(cache.getStatistics().cachedBytes).toBe(100 * KiB);
  });

  it('shares one in-flight fetch among concurrent readers', async () => {
    const cache = new BlockCache({ maxBytes: 1024 * KiB });
    const { calls, fetch } = controlledFetcher();

    const first = cache.read(block(0), 0, 64 * KiB, fetch);
    const second = cache.read(block(0), 0, 64 * KiB, fetch);
    const third = cache.read(block(0), 10, 20, fetch);
    await Promise.resolve();
    await Promise.resolve();
    expect(calls).toHaveLength(1);

    calls[0]!.resolve();
    const [a, b, c] = await Promise.all([first, second, third]);
    expect(a.length).toBe(64 * KiB);
    expect(b.equals(a)).toBe(true);
    expect(c.length).toBe(10);
    expect(calls).toHaveLength(1);
    expect(cache.getStatistics().sharedFetches).toBe(2);
  });

  it('fetches only the missing tail when a partial block grows', async () => {
    const cache = new BlockCache({ maxBytes: 1024 * KiB });
    const ranges: [number, number][] = [];
    const fetch = async (start: number, end: number) => {
      ranges.push([start, end]);
      return Buffer.alloc(end - start, 1);
    };

    await cache.read(block(0), 0, 16 * KiB, fetch);
    await cache.read(block(0), 0, 64 * KiB, fetch);
    await cache.read(block(0), 8 * KiB, 32 * KiB, fetch);
    expect(ranges).toEqual([
      [0, 16 * KiB],
      [16 * KiB, 64 * KiB],
    ]);
  });

  it('fetches before and after a cached middle range', async () => {
    const cache = new BlockCache({ maxBytes: 1024 * KiB });
    const ranges: [number, number][] = [];
    const fetch = async (start: number, end: number) => {
      ranges.push([start, end]);
      return Buffer.from(Array.from({ length: end - start }, (_, index) => (start + index) % 256));
    };

    await cache.read(block(0), 100, 200, fetch);
    const bytes = await cache.read(block(0), 0, 300, fetch);
    expect(ranges).toEqual([
      [100, 200],
      [0, 100],
      [200, 300],
    ]);
    expect([...bytes]).toEqual(Array.from({ length: 300 }, (_, index) => index % 256));
  });

  it('fetches two distant ranges of one block without the gap between them', async () => {
    const cache = new BlockCache({ maxBytes: 1024 * KiB });
    const ranges: [number, number][] = [];
    const fetch = async (start: number, end: number) => {
      ranges.push([start, end]);
      return Buffer.from(Array.from({ length: end - start }, (_, index) => (start + index) % 256));
    };

    await cache.read(block(0), 4 * KiB, 8 * KiB, fetch);
    await cache.read(block(0), 500 * KiB, 504 * KiB, fetch);
    const first = await cache.read(block(0), 4 * KiB, 8 * KiB, fetch);
    const second = await cache.read(block(0), 500 * KiB, 504 * KiB, fetch);

    expect(ranges).toEqual([
      [4 * KiB, 8 * KiB],
      [500 * KiB, 504 * KiB],
    ]);
    expect(first[0]).toBe((4 * KiB) % 256);
    expect(second[0]).toBe((500 * KiB) % 256);
    expect(cache.getStatistics().cachedBytes).toBe(8 * KiB);
  });

  it('runs fetches of disjoint ranges of one block at once', async () => {
    const cache = new BlockCache({ maxBytes: 1024 * KiB });
    const { calls, fetch } = controlledFetcher();

    const first = cache.read(block(0), 0, 4 * KiB, fetch);
    const second = cache.read(block(0), 64 * KiB, 68 * KiB, fetch);
    await Promise.resolve();
    await Promise.resolve();
    expect(calls.map((call) => [call.start, call.end])).toEqual([
      [0, 4 * KiB],
      [64 * KiB, 68 * KiB],
    ]);

    calls[1]!.resolve();
    expect(await second).toHaveLength(4 * KiB);
    calls[0]!.resolve();
    expect(await first).toHaveLength(4 * KiB);
  });

  it('fetches only what neither the cache nor a fetch in flight covers', async () => {
    const cache = new BlockCache({ maxBytes: 1024 * KiB });
    const { calls, fetch } = controlledFetcher();

    const head = cache.read(block(0), 0, 16 * KiB, fetch);
    const whole = cache.read(block(0), 0, 64 * KiB, fetch);
    await Promise.resolve();
    await Promise.resolve();
    expect(calls.map((call) => [call.start, call.end])).toEqual([
      [0, 16 * KiB],
      [16 * KiB, 64 * KiB],
    ]);

    for (const call of calls) call.resolve();
    expect(await head).toHaveLength(16 * KiB);
    const bytes = await whole;
    expect(bytes).toHaveLength(64 * KiB);
    expect(bytes[16 * KiB]).toBe((16 * KiB) % 251);
    expect(calls).toHaveLength(2);
  });

  it('fetches a shared range again after the shared fetch failed', async () => {
    const cache = new BlockCache({ maxBytes: 1024 * KiB });
    let calls = 0;
    let failFirst!: (error: Error) => void;
    const fetch = (start: number, end: number) => {
      calls += 1;
      if (calls === 1) return new Promise<Buffer>((_resolve, reject) => (failFirst = reject));
      return Promise.resolve(Buffer.alloc(end - start, 7));
    };

    const first = cache.read(block(0), 0, 4 * KiB, fetch);
    const waiting = cache.read(block(0), 0, 4 * KiB, fetch);
    await Promise.resolve();
    await Promise.resolve();
    failFirst(new Error('connection reset'));

    await expect(first).rejects.toThrow('connection reset');
    expect((await waiting)[0]).toBe(7);
    expect(calls).toBe(2);
  });

  it('load caches a range that a later read hits', async () => {
    const cache = new BlockCache({ maxBytes: 1024 * KiB });
    const ranges: [number, number][] = [];
    const fetch = async (start: number, end: number) => {
      ranges.push([start, end]);
      return Buffer.alloc(end - start, 3);
    };

    await cache.read(block(0), 0, 16 * KiB, fetch);
    await cache.load(block(0), 0, 64 * KiB, fetch);
    const bytes = await cache.read(block(0), 8 * KiB, 40 * KiB, fetch);

    expect(ranges).toEqual([
      [0, 16 * KiB],
      [16 * KiB, 64 * KiB],
    ]);
    expect(bytes).toHaveLength(32 * KiB);
    expect(cache.covers(block(0), 0, 64 * KiB)).toBe(true);
    expect(cache.getStatistics().hits).toBe(1);
  });

  it('evicts least recently used blocks to stay within its byte budget', async () => {
    const cache = new BlockCache({ maxBytes: 256 * KiB });
    let fetches = 0;
    const fetch = async (start: number, end: number) => {
      fetches += 1;
      return Buffer.alloc(end - start);
    };

    for (let index = 0; index < 8; index += 1) await cache.read(block(index), 0, 64 * KiB, fetch);
    const statistics = cache.getStatistics();
    expect(statistics.cachedBytes).toBeLessThanOrEqual(256 * KiB);
    expect(statistics.cachedBlocks).toBe(4);

    await cache.read(block(7), 0, 64 * KiB, fetch);
    expect(fetches).toBe(8);
    await cache.read(block(0), 0, 64 * KiB, fetch);
    expect(fetches).toBe(9);
  });

  it('trims ranges before an offset', async () => {
    const cache = new BlockCache({ maxBytes: 1024 * KiB });
    const tenKiBPieces = async (start: number, end: number): Promise<Buffer[]> => {
      const pieces: Buffer[] = [];
      for (let position = start; position < end; position += 10 * KiB) pieces.push(Buffer.alloc(Math.min(10 * KiB, end - position), position / KiB));
      return pieces;
    };
    await cache.load(block(0), 0, 100 * KiB, tenKiBPieces);

    // Ranges that end at or before 35 KiB go. The range from 30 to 40 KiB contains later bytes, so it stays.
    cache.trimBefore(block(0), 35 * KiB);
    expect(cache.getStatistics().cachedBytes).toBe(70 * KiB);
    expect(cache.covers(block(0), 30 * KiB, 100 * KiB)).toBe(true);
    expect(cache.covers(block(0), 20 * KiB, 30 * KiB)).toBe(false);

    // A read of trimmed bytes fetches them again.
    const { calls, fetch } = controlledFetcher();
    const read = cache.read(block(0), 0, 10 * KiB, fetch);
    await Promise.resolve();
    await Promise.resolve();
    expect(calls.map((call) => [call.start, call.end])).toEqual([[0, 10 * KiB]]);
    calls[0]!.resolve();
    await read;

    // Trimming past every range removes the block.
    cache.trimBefore(block(0), 100 * KiB);
    expect(cache.getStatistics().cachedBlocks).toBe(0);
  });

  it('keeps versions apart', async () => {
    const cache = new BlockCache({ maxBytes: 1024 * KiB });
    await cache.read(block(0, 'v1'), 0, 4, async () => Buffer.from('old!'));
    const fresh = await cache.read(block(0, 'v2'), 0, 4, async () => Buffer.from('new!'));
    expect(fresh.toString()).toBe('new!');
  });

  it('lets the next reader retry after a failed fetch', async () => {
    const cache = new BlockCache({ maxBytes: 1024 * KiB });
    await expect(cache.read(block(0), 0, 4, () => Promise.reject(new Error('network down')))).rejects.toThrow('network down');
    await expect(cache.read(block(0), 0, 4, () => {
      throw new Error('thrown at once');
    })).rejects.toThrow('thrown at once');
    const bytes = await cache.read(block(0), 0, 4, async () => Buffer.from('okay'));
    expect(bytes.toString()).toBe('okay');
  });
});
