/**
 * The read path of one open file: ranged GETs pinned to one object version,
 * through the shared block cache, with a readahead window for sequential
 * readers.
 *
 * Version pinning: every GET passes `ifVersion`, so once the object is
 * replaced the store rejects with `PreconditionFailedError` (ESTALE) and a
 * reader never returns bytes of two versions.
 *
 * Access pattern: a read continues a sequential stream when it starts near
 * the end of the stream read so far. It may start up to `SEQUENTIAL_SLACK`
 * behind that end, because the kernel sends its asynchronous readahead
 * requests in parallel and they arrive slightly out of order. It may also
 * start up to the readahead window ahead of it, which covers small forward
 * seeks. A stream that has not proved sequential yet is continued only by a
 * read that starts within its own length of the stream end. Any other read
 * starts a new stream there and resets the window.
 *
 * A stream that began at offset 0 proves sequential at its second read, or at
 * its first when that read has at least `SEQUENTIAL_MIN_BYTES`, because the
 * kernel asks that much for a reader that streams the file. Any other stream
 * needs `SEQUENTIAL_MIN_READS` reads and `SEQUENTIAL_MIN_BYTES` bytes, so
 * random reads that happen to land near each other do not start readahead.
 * Each sequential read doubles the window, from `INITIAL_WINDOW` up to
 * `maxReadahead`.
 *
 * Fetch sizes: a read fetches only what the cache lacks of the request.
 * - A read at offset 0 and a sequential read round that out to
 *   `FETCH_ALIGNMENT` within their blocks. The first bytes of a file then
 *   arrive after one small GET, a file of up to 1 MiB is one GET, and the
 *   readahead that follows starts from a whole aligned piece. A sequential
 *   stream over an object of at most one block fetches it with one GET.
 * - Any other read (a Parquet footer, an SQLite page, a random pread) rounds
 *   out to `PAGE_SIZE` only. The kernel already asks for whole pages: Linux
 *   6.18 sends a small random pread on a FUSE file as a request for just its
 *   pages, because its readahead skips reads that follow no sequential
 *   pattern. A 4 KiB pread thus becomes one 4 KiB GET (seen with a mount
 *   that logs its requests, with read_ahead_kb at 1024).
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

import { bodyPieces, type ObjectStore } from '../store/types.js';
import type { BlockCache, BlockId } from '../cache/block-cache.js';
import { joinReadData, type ReadData } from '../fuse/types.js';
import { getWithRetry } from './get-retry.js';

const MiB = 1024 * 1024;

/** Alignment of fetches for reads at offset 0 and sequential reads: small enough for a quick first byte, large enough for a few kernel reads. */
export const FETCH_ALIGNMENT = 1 * MiB;
/** Alignment of fetches for random reads: the kernel's page size on x86-64 and most arm64 kernels. */
export const PAGE_SIZE = 4 * 1024;
/** Window after the first sequential read; it doubles from here. */
export const INITIAL_WINDOW = 1 * MiB;
/** How far behind the stream end a read may start and still continue the stream. */
export const SEQUENTIAL_SLACK = 4 * MiB;
/** Reads and bytes a stream that did not begin at offset 0 needs before it counts as sequential. */
export const SEQUENTIAL_MIN_READS = 3;
export const SEQUENTIAL_MIN_BYTES = 256 * 1024;

/** How a read is served: see the file comment. */
type ReadKind = 'sequential' | 'start' | 'random';

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
  /** Shared by the readers of a mount, so that their readahead together fits the block cache. */
  readaheadShare?: ReadaheadShare;
  /** Called after each GET that returned bytes of `version`, which shows that version is still current. */
  onVersionServed?: () => void;
}

/**
 * Splits readahead room among the sequential readers of a mount.
 *
 * Blocks fetched ahead wait in the block cache until they are read. When
 * the windows of all readers add up to more than the cache holds, blocks are
 * evicted before they are read and fetched a second time. So each streaming
 * reader gets at most its share of `totalBytes` (half the cache), and never
 * less than one block.
 */
export class ReadaheadShare {
  private readonly readers = new Set<object>();

  constructor(
    private readonly totalBytes: number,
    private readonly blockSize: number,
  ) {}

  /** Counts `reader` as streaming until `leave`; idempotent. */
  join(reader: object): void {
    this.readers.add(reader);
  }

  leave(reader: object): void {
    this.readers.delete(reader);
  }

  /** Returns the largest window one streaming reader may use now. */
  windowLimit(): number {
    return Math.max(this.blockSize, Math.floor(this.totalBytes / Math.max(1, this.readers.size)));
  }
}

/** Returns views of bytes `[start, end)` of the concatenation of `pieces`, one per piece they overlap. */
function slicePieces(pieces: readonly Buffer[], start: number, end: number): Buffer[] {
  const views: Buffer[] = [];
  let position = 0;
  for (const piece of pieces) {
    const pieceEnd = position + piece.length;
    if (pieceEnd > start && position < end) views.push(piece.subarray(Math.max(start, position) - position, Math.min(end, pieceEnd) - position));
    position = pieceEnd;
  }
  return views;
}

export class ObjectReader {
  readonly key: string;
  readonly version: string;
  readonly size: number;

  private readonly options: ObjectReaderOptions;
  /** Offset where the current stream began. */
  private streamStart = 0;
  /** End of the stream read so far; undefined before the first read. */
  private streamEnd: number | undefined;
  /** Whether the current stream began at offset 0. */
  private streamFromStart = false;
  /** Whether the current stream has proved sequential; it then tolerates reordered and skipping reads. */
  private streamSequential = false;
  /** Reads and bytes of the current stream. */
  private streamReads = 0;
  private streamBytes = 0;
  private window = INITIAL_WINDOW;
  /** Index of the first block that the current stream has not left behind yet (see `dropBehind`). */
  private keptFromBlock = 0;
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

  /** Returns bytes `[offset, offset + length)` as one Buffer, which copies bytes that span cached pieces. `readData` avoids the copy. */
  async read(offset: number, length: number): Promise<Buffer> {
    return joinReadData(await this.readData(offset, length));
  }

  /**
   * Returns bytes `[offset, offset + length)`, cut at the end of the object:
   * one Buffer when they lie in one cached piece, else views of the pieces
   * in order.
   */
  async readData(offset: number, length: number): Promise<ReadData> {
    const end = Math.min(offset + length, this.size);
    if (offset >= end) return Buffer.alloc(0);

    const kind = this.classify(offset, end);
    // The read's own fetch registers first, so that readahead of the same block extends it instead of delaying it.
    const data = this.fetchRange(offset, end, this.fetchAlignment(kind, offset));
    if (kind === 'sequential') {
      this.prefetch(end);
      this.dropBehind(offset);
    }

    const pieces = await data;
    this.returnedData = true;
    return pieces.length === 1 ? pieces[0]! : pieces;
  }

  /** Stops issuing readahead; fetches in flight finish into the cache. */
  close(): void {
    this.closed = true;
    this.options.readaheadShare?.leave(this);
  }

  /** Updates the stream state and window for a read of `[offset, end)` and returns how to serve it. */
  private classify(offset: number, end: number): ReadKind {
    const streamEnd = this.streamEnd;
    let continues = false;
    if (streamEnd !== undefined && this.streamSequential) {
      continues = offset >= streamEnd - SEQUENTIAL_SLACK && offset <= streamEnd + Math.max(this.window, SEQUENTIAL_SLACK);
    } else if (streamEnd !== undefined) {
      // Until a stream proves sequential, a read must start within its own length of the stream end.
      continues = Math.abs(offset - streamEnd) <= end - offset;
    }

    if (!continues) {
      this.window = INITIAL_WINDOW;
      this.keptFromBlock = Math.floor(offset / this.options.blockSize);
      this.streamStart = offset;
      this.streamEnd = end;
      this.streamFromStart = offset === 0;
      this.streamReads = 1;
      this.streamBytes = end - offset;
      // A large first request at offset 0 is the kernel's readahead for a reader that streams the file (cp, dd, cat).
      this.streamSequential = offset === 0 && end - offset >= SEQUENTIAL_MIN_BYTES;
      if (!this.streamSequential) return offset === 0 ? 'start' : 'random';
      this.window = Math.min(this.window * 2, this.options.maxReadahead);
      return 'sequential';
    }

    this.streamEnd = Math.max(streamEnd!, end);
    this.streamReads += 1;
    this.streamBytes += end - offset;
    this.streamSequential ||= this.streamFromStart || (this.streamReads >= SEQUENTIAL_MIN_READS && this.streamBytes >= SEQUENTIAL_MIN_BYTES);
    if (!this.streamSequential) return offset === 0 ? 'start' : 'random';

    this.window = Math.min(this.window * 2, this.options.maxReadahead);
    return 'sequential';
  }

  /**
   * Returns the alignment of a read's own fetch; see the file comment. A
   * sequential stream from offset 0 over an object of one block fetches it
   * whole, since readahead would fetch the rest at once anyway: one GET
   * instead of two for each small file that is copied.
   */
  private fetchAlignment(kind: ReadKind, offset: number): number {
    if (kind === 'random') return PAGE_SIZE;
    if (kind === 'sequential' && offset === 0 && this.size <= this.options.blockSize) return this.options.blockSize;
    return FETCH_ALIGNMENT;
  }

  /** Fetches `[offset, end)` rounded out to `alignment` within each block, through the cache, and returns views of the cached pieces in order. */
  private async fetchRange(offset: number, end: number, alignment: number): Promise<Buffer[]> {
    const { blockSize } = this.options;
    const pieces: Promise<Buffer[]>[] = [];

    for (let index = Math.floor(offset / blockSize); index * blockSize < end; index += 1) {
      const blockStart = index * blockSize;
      const blockLength = Math.min(blockSize, this.size - blockStart);
      const wantStart = Math.max(offset, blockStart) - blockStart;
      const wantEnd = Math.min(end, blockStart + blockLength) - blockStart;

      const fetchStart = Math.floor(wantStart / alignment) * alignment;
      const fetchEnd = Math.min(blockLength, Math.ceil(wantEnd / alignment) * alignment);

      const block = this.blockId(index);
      pieces.push(
        this.options.cache
          .readPieces(block, fetchStart, fetchEnd, (start, stop) => this.fetch(blockStart + start, blockStart + stop))
          .then((fetched) => slicePieces(fetched, wantStart - fetchStart, wantEnd - fetchStart)),
      );
    }

    return (await Promise.all(pieces)).flat();
  }

  /**
   * Drops from the block cache the bytes that the sequential stream has
   * passed by more than `SEQUENTIAL_SLACK`, because the kernel's page cache
   * keeps the bytes the reader got: whole blocks, and the passed pieces of
   * the block it is in. Kept, they took cache room from blocks fetched ahead:
   * a cold 1 GiB read peaked at about 385 MiB RSS, against about 240 MiB
   * with whole blocks dropped.
   */
  private dropBehind(offset: number): void {
    const cutoff = offset - SEQUENTIAL_SLACK;
    if (cutoff <= 0) return;

    const { blockSize, cache } = this.options;
    const passedBlocks = Math.floor(cutoff / blockSize);
    for (let index = this.keptFromBlock; index < passedBlocks; index += 1) cache.drop(this.blockId(index));
    this.keptFromBlock = Math.max(this.keptFromBlock, passedBlocks);

    // A block that began before the stream may contain bytes that an earlier stream read, so it is kept whole.
    if (passedBlocks * blockSize >= this.streamStart) cache.trimBefore(this.blockId(passedBlocks), cutoff - passedBlocks * blockSize);
  }

  /** Starts fetches of whole blocks ahead of `end`, and of the rest of its block, within the window and the concurrency limit. */
  private prefetch(end: number): void {
    const { blockSize, readConcurrency, cache, logger, readaheadShare } = this.options;
    readaheadShare?.join(this);
    const window = Math.min(this.window, readaheadShare?.windowLimit() ?? this.window);
    const windowEnd = Math.min(end + window, this.size);

    const firstIndex = Math.floor(end / blockSize);
    for (let index = firstIndex; index * blockSize < windowEnd; index += 1) {
      if (this.closed || this.prefetchesInFlight >= readConcurrency) return;

      const blockStart = index * blockSize;
      const blockLength = Math.min(blockSize, this.size - blockStart);
      // In the reader's own block, from the reader on: the bytes before it were read, and dropBehind may have freed them.
      const loadStart = index === firstIndex ? Math.floor((end - blockStart) / FETCH_ALIGNMENT) * FETCH_ALIGNMENT : 0;
      const block = this.blockId(index);
      if (cache.covers(block, loadStart, blockLength)) continue;

      this.prefetchesInFlight += 1;
      cache
        .load(block, loadStart, blockLength, (start, stop) => this.fetch(blockStart + start, blockStart + stop))
        .catch((error: unknown) => {
          // The read that needs these bytes fetches them again and gets the error itself.
          logger.debug({ key: this.key, block: index, err: error }, 'readahead fetch failed');
        })
        .finally(() => {
          this.prefetchesInFlight -= 1;
        });
    }
  }

  private async fetch(start: number, end: number): Promise<Buffer[]> {
    // A body cut short or reset is not retried by the store, so it is repeated here.
    const result = await getWithRetry(
      this.options.store,
      this.key,
      { range: { start, end }, ifVersion: this.version, signal: this.options.signal, pieces: true },
      { logger: this.options.logger },
    );
    this.options.onVersionServed?.();
    return bodyPieces(result);
  }

  private blockId(index: number): BlockId {
    return { key: this.key, version: this.version, index };
  }
}
