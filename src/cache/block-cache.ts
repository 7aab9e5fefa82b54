/**
 * Bytes-bounded LRU cache of object blocks, shared by every reader of a mount.
 *
 * A block is the range `[index * blockSize, (index + 1) * blockSize)` of one
 * version of one object, keyed by `${key}\u0000${version}\u0000${index}`, so a
 * new version of an object never hits blocks of the old one. An entry contains
 * any number of disjoint ranges of its block, not necessarily all of it. A
 * reader that needs little (a random read of one page) fetches only that, and
 * two random reads of one block cost two small GETs, not the gap between
 * them. A reader that needs more fetches only what is neither cached nor being
 * fetched: one ranged GET per gap between the ranges cached or in flight.
 * Fetched ranges are kept as they arrived, without copying them together.
 *
 * Fetches of disjoint ranges of one block run concurrently. A reader whose
 * whole request is covered by a fetch in flight waits for that fetch instead
 * of starting its own. Bytes in flight are not counted against `maxBytes`;
 * the readers bound them with their readahead windows and concurrency limits.
 *
 * Concurrency: both maps are changed only synchronously. `inFlight` contains
 * the pending fetches of each block. A fetch leaves it when it settles,
 * whether it succeeded or not, so the next reader retries a failed fetch. A
 * block evicted while a fetch for it is in flight is recreated from that fetch.
 */

import { LRUCache } from 'lru-cache';

export interface BlockId {
  key: string;
  version: string;
  index: number;
}

/**
 * Fetches bytes `[start, end)` of a block (offsets relative to the block's
 * start) as one buffer, or as pieces in order, such as the chunks of a response.
 */
export type BlockFetcher = (start: number, end: number) => Promise<Buffer | Buffer[]>;

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

/** The cached ranges of one block: sorted by start and disjoint, but possibly touching. */
interface BlockEntry {
  ranges: BlockRange[];
  bytes: number;
}

interface PendingFetch {
  /** The range this fetch adds to the entry once it settles. */
  start: number;
  end: number;
  promise: Promise<void>;
}

export function blockCacheKey(id: BlockId): string {
  return `${id.key}\u0000${id.version}\u0000${id.index}`;
}

function rangeEnd(range: BlockRange): number {
  return range.start + range.data.length;
}

/** Returns the index of the first range of a chain of touching ranges that covers `[start, end)`, or -1. */
function coveringChain(entry: BlockEntry | undefined, start: number, end: number): number {
  if (entry === undefined) return -1;
  const first = entry.ranges.findIndex((range) => range.start <= start && start < rangeEnd(range));
  if (first < 0) return -1;

  let position = rangeEnd(entry.ranges[first]!);
  for (let index = first + 1; index < entry.ranges.length && position < end; index += 1) {
    const range = entry.ranges[index]!;
    if (range.start > position) return -1;
    position = rangeEnd(range);
  }
  return position >= end ? first : -1;
}

/**
 * Returns bytes `[start, end)` as views of the cached ranges that cover
 * them, one per range, or undefined when they are not all cached. Fetched
 * data is never copied to merge it.
 */
function cachedPieces(entry: BlockEntry | undefined, start: number, end: number): Buffer[] | undefined {
  const first = coveringChain(entry, start, end);
  if (first < 0) return undefined;

  const pieces: Buffer[] = [];
  let position = start;
  for (let index = first; position < end; index += 1) {
    const range = entry!.ranges[index]!;
    pieces.push(range.data.subarray(position - range.start, Math.min(end, rangeEnd(range)) - range.start));
    position = Math.min(end, rangeEnd(range));
  }
  return pieces;
}

/**
 * Returns `ranges` with `pieces` inserted as ranges from `start` on (in
 * order, contiguous). The parts of other ranges that they overlap hold the
 * same bytes, so they are dropped.
 */
function insertRanges(ranges: readonly BlockRange[], start: number, pieces: readonly Buffer[]): BlockRange[] {
  const added: BlockRange[] = [];
  let position = start;
  for (const piece of pieces) {
    if (piece.length === 0) continue;
    added.push({ start: position, data: piece });
    position += piece.length;
  }
  const addedEnd = position;
  if (added.length === 0) return [...ranges];

  const result: BlockRange[] = [];
  for (const range of ranges) {
    const end = rangeEnd(range);
    if (end <= start || range.start >= addedEnd) {
      result.push(range);
      continue;
    }
    if (range.start < start) result.push({ start: range.start, data: range.data.subarray(0, start - range.start) });
    if (end > addedEnd) result.push({ start: addedEnd, data: range.data.subarray(addedEnd - range.start) });
  }
  result.push(...added);
  return result.sort((a, b) => a.start - b.start);
}

export class BlockCache {
  private readonly blocks: LRUCache<string, BlockEntry>;
  private readonly inFlight = new Map<string, PendingFetch[]>();
  private readonly statistics = { hits: 0, misses: 0, sharedFetches: 0, evictions: 0 };

  constructor(options: BlockCacheOptions) {
    this.blocks = new LRUCache<string, BlockEntry>({
      maxSize: Math.max(1, options.maxBytes),
      // lru-cache requires a positive size, so an empty entry counts one byte.
      sizeCalculation: (entry) => Math.max(1, entry.bytes),
      // Only 'evict' counts: 'set' replaces a block with its extended ranges, and 'delete' comes from clear().
      dispose: (_entry, _key, reason) => {
        if (reason === 'evict') this.statistics.evictions += 1;
      },
    });
  }

  /** Returns bytes `[start, end)` of a block (offsets relative to the block), fetching what the cache lacks. */
  async read(id: BlockId, start: number, end: number, fetch: BlockFetcher): Promise<Buffer> {
    const pieces = await this.readPieces(id, start, end, fetch);
    return pieces.length === 1 ? pieces[0]! : Buffer.concat(pieces, Math.max(0, end - start));
  }

  /**
   * Returns bytes `[start, end)` of a block like `read`, as views of the
   * cached ranges in order (one per range they span), without copying them.
   */
  async readPieces(id: BlockId, start: number, end: number, fetch: BlockFetcher): Promise<Buffer[]> {
    if (start >= end) return [];
    const cacheKey = blockCacheKey(id);

    const cached = cachedPieces(this.blocks.get(cacheKey), start, end);
    if (cached !== undefined) {
      this.statistics.hits += 1;
      return cached;
    }

    // Each pass waits for a fetch that adds bytes of the request, so the loop
    // ends unless the block is evicted again and again between passes.
    for (let first = true; ; first = false) {
      await this.fill(cacheKey, start, end, fetch, first);
      const pieces = cachedPieces(this.blocks.get(cacheKey), start, end);
      if (pieces !== undefined) return pieces;
    }
  }

  /** Fetches what the cache lacks of bytes `[start, end)` of a block, without assembling them: for readahead. */
  async load(id: BlockId, start: number, end: number, fetch: BlockFetcher): Promise<void> {
    const cacheKey = blockCacheKey(id);
    for (let first = true; start < end && coveringChain(this.blocks.get(cacheKey), start, end) < 0; first = false) {
      await this.fill(cacheKey, start, end, fetch, first);
    }
  }

  /** Returns whether bytes `[start, end)` of the block are cached or being fetched by one fetch. */
  covers(id: BlockId, start: number, end: number): boolean {
    const cacheKey = blockCacheKey(id);
    if (coveringChain(this.blocks.peek(cacheKey), start, end) >= 0) return true;
    return (this.inFlight.get(cacheKey) ?? []).some((fetch) => fetch.start <= start && end <= fetch.end);
  }

  getStatistics(): BlockCacheStatistics {
    return { ...this.statistics, cachedBytes: this.blocks.calculatedSize, cachedBlocks: this.blocks.size };
  }

  /**
   * Removes the cached ranges of a block that end at or before `offset`
   * (relative to the block's start), keeping the block's later ranges. A
   * sequential reader frees the bytes it has passed this way, piece by piece,
   * before it leaves the block. Ranges are the pieces that fetches returned,
   * so a block fetched as one buffer keeps it whole until it is dropped.
   */
  trimBefore(id: BlockId, offset: number): void {
    const cacheKey = blockCacheKey(id);
    const entry = this.blocks.peek(cacheKey);
    if (entry === undefined) return;

    let firstKept = 0;
    while (firstKept < entry.ranges.length && rangeEnd(entry.ranges[firstKept]!) <= offset) firstKept += 1;
    if (firstKept === 0) return;

    const ranges = entry.ranges.slice(firstKept);
    if (ranges.length === 0) {
      this.blocks.delete(cacheKey);
      return;
    }
    this.blocks.set(cacheKey, { ranges, bytes: ranges.reduce((sum, range) => sum + range.data.length, 0) });
  }

  /** Removes a block from the cache; a fetch of it still in flight stores its bytes when it completes. */
  drop(id: BlockId): void {
    this.blocks.delete(blockCacheKey(id));
  }

  clear(): void {
    this.blocks.clear();
  }

  /**
   * Waits for one fetch that covers `[start, end)`, or starts fetches for the
   * parts that nothing cached or in flight covers and waits for those and for
   * the fetches in flight that cover the rest. `first` counts the request in
   * the statistics.
   */
  private async fill(cacheKey: string, start: number, end: number, fetch: BlockFetcher, first: boolean): Promise<void> {
    const pending = this.inFlight.get(cacheKey) ?? [];
    const covering = pending.find((other) => other.start <= start && end <= other.end);
    if (covering !== undefined) {
      if (first) this.statistics.sharedFetches += 1;
      // A failed shared fetch is retried by the next pass, which fetches the bytes itself.
      await covering.promise.catch(() => undefined);
      return;
    }

    if (first) this.statistics.misses += 1;
    const own = this.missingGaps(cacheKey, pending, start, end).map(([gapStart, gapEnd]) => this.startFetch(cacheKey, gapStart, gapEnd, fetch));
    // A failure of another reader's fetch is not this reader's: the next pass fetches those bytes itself.
    const others = pending.filter((other) => other.end > start && other.start < end).map((other) => other.promise.catch(() => undefined));
    await Promise.all([...own, ...others]);
  }

  /** Returns the parts of `[start, end)` that are neither cached nor being fetched, in order. */
  private missingGaps(cacheKey: string, pending: readonly PendingFetch[], start: number, end: number): [number, number][] {
    const known = [...(this.blocks.peek(cacheKey)?.ranges ?? []).map((range) => ({ start: range.start, end: rangeEnd(range) })), ...pending]
      .filter((range) => range.end > start && range.start < end)
      .sort((a, b) => a.start - b.start);

    const gaps: [number, number][] = [];
    let position = start;
    for (const range of known) {
      if (range.start > position) gaps.push([position, range.start]);
      position = Math.max(position, range.end);
    }
    if (position < end) gaps.push([position, end]);
    return gaps;
  }

  /** Fetches `[start, end)` of a block and merges it into the block's entry. */
  private startFetch(cacheKey: string, start: number, end: number, fetch: BlockFetcher): Promise<void> {
    const pending: PendingFetch = { start, end, promise: Promise.resolve() };

    pending.promise = (async () => {
      try {
        // The fetch starts in a later microtask, so the in-flight entry below is
        // registered before this block can settle, even if `fetch` throws at once.
        await Promise.resolve();
        const data = await fetch(start, end);

        const entry = this.blocks.get(cacheKey);
        const ranges = insertRanges(entry?.ranges ?? [], start, Array.isArray(data) ? data : [data]);
        this.blocks.set(cacheKey, { ranges, bytes: ranges.reduce((sum, range) => sum + range.data.length, 0) });
      } finally {
        const remaining = (this.inFlight.get(cacheKey) ?? []).filter((other) => other !== pending);
        if (remaining.length === 0) this.inFlight.delete(cacheKey);
        else this.inFlight.set(cacheKey, remaining);
      }
    })();

    this.inFlight.set(cacheKey, [...(this.inFlight.get(cacheKey) ?? []), pending]);
    return pending.promise;
  }
}
