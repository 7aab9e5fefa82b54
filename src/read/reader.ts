/**
 * The read path of one open file: ranged GETs pinned to one object version,
 * through the shared block cache, with a readahead window for sequential
 * readers.
 *
 * Version pinning: every GET passes `ifVersion`, so once the object is
 * replaced the store rejects with `PreconditionFailedError` (ESTALE) and a
 * reader never returns bytes of two versions.
 *
 * Access pattern: a read is sequential when it starts near the end of the
 * stream read so far. It may start up to `SEQUENTIAL_SLACK` behind that end,
 * because the kernel sends its asynchronous readahead requests in parallel and
 * they arrive slightly out of order. It may also start up to the readahead
 * window ahead of it, which covers small forward seeks.
 * Each sequential read doubles the window, from `INITIAL_WINDOW` up to
 * `maxReadahead`; any other read is random and resets the window.
 *
 * Fetch sizes: a read fetches only what the cache lacks of the request,
 * rounded out to `FETCH_ALIGNMENT` within its blocks. So the first byte of a
 * file arrives after one small GET, and a small file is one GET. A random
 * reader (a Parquet footer, an SQLite page) does not pay for a whole block.
 * Readahead, started by sequential reads only, fetches whole blocks ahead of
 * the reader, up to `readConcurrency` blocks in flight per reader; a
 * sequential reader then finds its bytes cached or in flight. Later fetches
 * of a block only add what the cache lacks.
 *
 * Backpressure: a reader has at most `readConcurrency` prefetches in flight;
 * fetched blocks go into the bytes-bounded block cache, and the window is
 * capped by the filesystem so that it fits in that cache.
 */

import type { Logger } from 'pino';

import type { ObjectStore } from '../store/types.js';
import type { BlockCache, BlockId } from '../cache/block-cache.js';
import { getWithRetry } from './get-retry.js';

const MiB = 1024 * 1024;

/** Alignment of partial-block fetches: small enough for a quick first byte, large enough to cover a few kernel reads. */
export const FETCH_ALIGNMENT = 1 * MiB;
/** Window after the first sequential read; it doubles from here. */
export const INITIAL_WINDOW = 1 * MiB;
/** How far behind the stream end a read may start and still count as sequential. */
export const SEQUENTIAL_SLACK = 4 * MiB;

export interface ObjectReaderOptions {
  store: ObjectStore;
  cache: BlockCache;
  logger: Logger;
  /** Aborted at shutdown. */
  signal: AbortSignal;
  key: string;
  version: string;
  size: number;
  blockSize: number;
  maxReadahead: number;
  readConcurrency: number;
}

export class ObjectReader {
  readonly key: string;
  readonly version: string;
  readonly size: number;

  private readonly options: ObjectReaderOptions;
  /** End of the sequential stream read so far; undefined before the first read. */
  private streamEnd: number | undefined;
  private window = INITIAL_WINDOW;
  private prefetchesInFlight = 0;
  private closed = false;
  /** Whether any read returned bytes; until then the caller may re-pin to a newer version. */
  returnedData = false;

  constructor(options: ObjectReaderOptions) {
    this.options = options;
    this.key = options.key;
    this.version = options.version;
    this.size = options.size;
  }

  /** Current readahead window in bytes. */
  get readaheadWindow(): number {
    return this.window;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    const end = Math.min(offset + length, this.size);
    if (offset >= end) return Buffer.alloc(0);

    const sequential = this.classify(offset, end);
    // The read's own fetch registers first, so that readahead of the same block extends it instead of delaying it.
    const data = this.fetchRange(offset, end);
    if (sequential) this.prefetch(end);

    const bytes = await data;
    this.returnedData = true;
    return bytes;
  }

  /** Stops issuing readahead; fetches in flight finish into the cache. */
  close(): void {
    this.closed = true;
  }

  /** Updates the stream state and window for a read of `[offset, end)`; returns whether it is sequential. */
  private classify(offset: number, end: number): boolean {
    const streamEnd = this.streamEnd;
    const sequential =
      streamEnd !== undefined && offset >= streamEnd - SEQUENTIAL_SLACK && offset <= streamEnd + Math.max(this.window, SEQUENTIAL_SLACK);

    if (sequential) {
      this.window = Math.min(this.window * 2, this.options.maxReadahead);
      this.streamEnd = Math.max(streamEnd, end);
    } else {
      this.window = INITIAL_WINDOW;
      this.streamEnd = end;
    }
    return sequential;
  }

  /** Fetches `[offset, end)` rounded out to `FETCH_ALIGNMENT` within each block, through the cache. */
  private async fetchRange(offset: number, end: number): Promise<Buffer> {
    const { blockSize } = this.options;
    const pieces: Promise<Buffer>[] = [];

    for (let index = Math.floor(offset / blockSize); index * blockSize < end; index += 1) {
      const blockStart = index * blockSize;
      const blockLength = Math.min(blockSize, this.size - blockStart);
      const wantStart = Math.max(offset, blockStart) - blockStart;
      const wantEnd = Math.min(end, blockStart + blockLength) - blockStart;

      const fetchStart = Math.floor(wantStart / FETCH_ALIGNMENT) * FETCH_ALIGNMENT;
      const fetchEnd = Math.min(blockLength, Math.ceil(wantEnd / FETCH_ALIGNMENT) * FETCH_ALIGNMENT);

      const block = this.blockId(index);
      pieces.push(
        this.options.cache
          .read(block, fetchStart, fetchEnd, (start, stop) => this.fetch(blockStart + start, blockStart + stop))
          .then((bytes) => bytes.subarray(wantStart - fetchStart, wantEnd - fetchStart)),
      );
    }

    const parts = await Promise.all(pieces);
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
  }

  /** Starts whole-block fetches ahead of `end`, within the window and the concurrency limit. */
  private prefetch(end: number): void {
    const { blockSize, readConcurrency, cache, logger } = this.options;
    const windowEnd = Math.min(end + this.window, this.size);

    for (let index = Math.floor(end / blockSize); index * blockSize < windowEnd; index += 1) {
      if (this.closed || this.prefetchesInFlight >= readConcurrency) return;

      const blockStart = index * blockSize;
      const blockLength = Math.min(blockSize, this.size - blockStart);
      const block = this.blockId(index);
      if (cache.covers(block, 0, blockLength)) continue;

      this.prefetchesInFlight += 1;
      cache
        .read(block, 0, blockLength, (start, stop) => this.fetch(blockStart + start, blockStart + stop))
        .catch((error: unknown) => {
          // The read that needs these bytes fetches them again and gets the error itself.
          logger.debug({ key: this.key, block: index, err: error }, 'readahead fetch failed');
        })
        .finally(() => {
          this.prefetchesInFlight -= 1;
        });
    }
  }

  private async fetch(start: number, end: number): Promise<Buffer> {
    // A body cut short or reset is not retried by the store, so it is repeated here.
    const result = await getWithRetry(
      this.options.store,
      this.key,
      { range: { start, end }, ifVersion: this.version, signal: this.options.signal },
      { logger: this.options.logger },
    );
    return result.body;
  }

  private blockId(index: number): BlockId {
    return { key: this.key, version: this.version, index };
  }
}
