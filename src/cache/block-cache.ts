/**
 * Bytes-bounded LRU cache of object blocks, shared by every reader of a mount.
 *
 * A block is the range `[index * blockSize, (index + 1) * blockSize)` of one
 * version of one object, keyed by `${key}\u0000${version}\u0000${index}`, so a
 * new version of an object never hits blocks of the old one. An entry contains
 * one contiguous range of its block, not necessarily all of it. A reader that
 * needs little (the first read of a file, a random read) fetches only that.
 * A later reader that needs more fetches only what the entry lacks, at most
 * two ranges (one before it and one after it), and the entry grows.
 *
 * At most one fetch per block is in flight. Concurrent readers of a block wait
 * for that fetch and then take its bytes, or extend them when they need more.
 * Bytes in flight are not counted against `maxBytes`; the readers bound them
 * with their readahead windows and concurrency limits.
 *
 * Concurrency: both maps are changed only synchronously. `inFlight` holds the
 * one pending fetch per block and is cleared when that fetch settles, whether
 * it succeeded or not, so a failed fetch is retried by the next reader.
 */

import { LRUCache } from 'lru-cache';

export interface BlockId {
  key: string;
  version: string;
  index: number;
}

/** Fetches bytes `[start, end)` of a block; offsets are relative to the block's start. */
export type BlockFetcher = (start: number, end: number) => Promise<Buffer>;

export interface BlockCacheOptions {
  maxBytes: number;
}

export interface BlockCacheStatistics {
  hits: number;
  misses: number;
  /** Reads that waited for a fetch another reader had started. */
  sharedFetches: number;
  /** Blocks dropped as least recently used to stay within `maxBytes`. */
  evictions: number;
  cachedBytes: number;
  cachedBlocks: number;
}

/** Bytes `[start, start + data.length)` of a block. */
interface BlockRange {
  start: number;
  data: Buffer;
}

interface PendingFetch {
  /** The range the entry will cover once the fetch settles. */
  start: number;
  end: number;
  promise: Promise<BlockRange>;
}

export function blockCacheKey(id: BlockId): string {
  return `${id.key}\u0000${id.version}\u0000${id.index}`;
}

function rangeCovers(range: { start: number; end: number }, start: number, end: number): boolean {
  return range.start <= start && end <= range.end;
}

function sliceOf(range: BlockRange, start: number, end: number): Buffer {
  return range.data.subarray(start - range.start, end - range.start);
}

export class BlockCache {
  private readonly blocks: LRUCache<string, BlockRange>;
  private readonly inFlight = new Map<string, PendingFetch>();
  private readonly statistics = { hits: 0, misses: 0, sharedFetches: 0, evictions: 0 };

  constructor(options: BlockCacheOptions) {
    this.blocks = new LRUCache<string, BlockRange>({
      maxSize: Math.max(1, options.maxBytes),
      // lru-cache requires a positive size, so an empty range counts one byte.
      sizeCalculation: (range) => Math.max(1, range.data.length),
      // Only 'evict' counts: 'set' replaces a block with its extended range, and 'delete' comes from clear().
      dispose: (_range, _key, reason) => {
        if (reason === 'evict') this.statistics.evictions += 1;
      },
    });
  }

  /** Returns bytes `[start, end)` of a block (offsets relative to the block), fetching what the cache lacks. */
  async read(id: BlockId, start: number, end: number, fetch: BlockFetcher): Promise<Buffer> {
    const cacheKey = blockCacheKey(id);
    let waited = false;

    for (;;) {
      const cached = this.blocks.get(cacheKey);
      if (cached !== undefined && rangeCovers({ start: cached.start, end: cached.start + cached.data.length }, start, end)) {
        if (!waited) this.statistics.hits += 1;
        return sliceOf(cached, start, end);
      }

      const pending = this.inFlight.get(cacheKey);
      if (pending !== undefined) {
        if (!waited) this.statistics.sharedFetches += 1;
        waited = true;
        const shared = await pending.promise;
        if (rangeCovers(pending, start, end)) return sliceOf(shared, start, end);
        // The shared fetch did not cover the request: loop to extend it.
        continue;
      }

      this.statistics.misses += 1;
      const fetched = await this.startFetch(cacheKey, cached, start, end, fetch);
      return sliceOf(fetched, start, end);
    }
  }

  /** Returns whether bytes `[start, end)` of the block are cached or being fetched. */
  covers(id: BlockId, start: number, end: number): boolean {
    const cacheKey = blockCacheKey(id);
    const cached = this.blocks.peek(cacheKey);
    if (cached !== undefined && rangeCovers({ start: cached.start, end: cached.start + cached.data.length }, start, end)) return true;
    const pending = this.inFlight.get(cacheKey);
    return pending !== undefined && rangeCovers(pending, start, end);
  }

  getStatistics(): BlockCacheStatistics {
    return { ...this.statistics, cachedBytes: this.blocks.calculatedSize, cachedBlocks: this.blocks.size };
  }

  clear(): void {
    this.blocks.clear();
  }

  /**
   * Fetches what `cached` lacks of `[start, end)` and merges it into one
   * contiguous range. A gap between the cached range and the request is
   * fetched too, because an entry must stay contiguous.
   */
  private startFetch(cacheKey: string, cached: BlockRange | undefined, start: number, end: number, fetch: BlockFetcher): Promise<BlockRange> {
    const cachedEnd = cached === undefined ? 0 : cached.start + cached.data.length;
    const mergedStart = cached === undefined ? start : Math.min(start, cached.start);
    const mergedEnd = cached === undefined ? end : Math.max(end, cachedEnd);

    const promise = (async () => {
      try {
        // The fetches start in a later microtask, so the in-flight entry below is
        // registered before this block can settle, even if `fetch` throws at once.
        await Promise.resolve();

        if (cached === undefined) {
          const range: BlockRange = { start, data: await fetch(start, end) };
          this.blocks.set(cacheKey, range);
          return range;
        }

        const [before, after] = await Promise.all([
          mergedStart < cached.start ? fetch(mergedStart, cached.start) : Promise.resolve(Buffer.alloc(0)),
          mergedEnd > cachedEnd ? fetch(cachedEnd, mergedEnd) : Promise.resolve(Buffer.alloc(0)),
        ]);
        const range: BlockRange = { start: mergedStart, data: Buffer.concat([before, cached.data, after]) };
        this.blocks.set(cacheKey, range);
        return range;
      } finally {
        this.inFlight.delete(cacheKey);
      }
    })();

    this.inFlight.set(cacheKey, { start: mergedStart, end: mergedEnd, promise });
    return promise;
  }
}
