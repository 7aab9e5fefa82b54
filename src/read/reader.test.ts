import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

import { BlockCache } from '../cache/block-cache.js';
import { Errno } from '../fs/errno.js';
import { joinReadData } from '../fuse/types.js';
import { context, ControlledStore, createTestMount, errnoOfRejection, MiB, O_RDONLY, patternBytes, settle, silentLogger } from '../fs/test-support.js';
import { MemoryStore } from '../store/memory.js';
import type { GetRequest, GetResult } from '../store/types.js';
import { FETCH_ALIGNMENT, INITIAL_WINDOW, ObjectReader, PAGE_SIZE, ReadaheadShare, SEQUENTIAL_MIN_BYTES, SEQUENTIAL_MIN_READS } from './reader.js';

const KiB = 1024;

/** A memory store that returns bodies in pieces of `pieceBytes` when asked to, as the S3 and GCS stores return the chunks of a response. */
class PieceReturningStore extends MemoryStore {
  constructor(private readonly pieceBytes: number) {
    super();
  }

  override async get(key: string, request: GetRequest = {}): Promise<GetResult> {
    const result = await super.get(key, request);
    if (request.pieces !== true) return result;

    const pieces: Buffer[] = [];
    for (let position = 0; position < result.body.length; position += this.pieceBytes) pieces.push(result.body.subarray(position, position + this.pieceBytes));
    return { ...result, body: Buffer.alloc(0), pieces };
  }
}

function newReader(options: { size: number; blockSize?: number; maxReadahead?: number; readConcurrency?: number; readaheadShare?: ReadaheadShare; pieceBytes?: number }) {
  const memory = options.pieceBytes === undefined ? new MemoryStore() : new PieceReturningStore(options.pieceBytes);
  const data = patternBytes(options.size);
  const info = memory.putRaw('object.bin', data);
  const store = new ControlledStore(memory);
  const cache = new BlockCache({ maxBytes: 256 * MiB });
  const reader = new ObjectReader({
    store,
    cache,
    logger: silentLogger,
    signal: new AbortController().signal,
    key: info.key,
    version: info.version,
    size: info.size,
    blockSize: options.blockSize ?? 1 * MiB,
    maxReadahead: options.maxReadahead ?? 16 * MiB,
    readConcurrency: options.readConcurrency ?? 8,
    ...(options.readaheadShare !== undefined ? { readaheadShare: options.readaheadShare } : {}),
  });
  const gets = () => store.calls.filter((call) => call.operation === 'get').map((call) => (call.detail as { range: { start: number; end: number } }).range);
  const cached = (index: number, blockSize = options.blockSize ?? 1 * MiB) => cache.covers({ key: info.key, version: info.version, index }, 0, blockSize);
  const covered = (index: number, start: number, end: number) => cache.covers({ key: info.key, version: info.version, index }, start, end);
  return { memory, store, reader, data, gets, cached, covered, cache };
}

describe('ObjectReader', () => {
  it('answers a read at offset 0 with one small aligned GET', async () => {
    const { reader, data, gets } = newReader({ size: 20 * MiB, blockSize: 8 * MiB });
    const bytes = await reader.read(0, 16 * KiB);
    expect(bytes.equals(data.subarray(0, 16 * KiB))).toBe(true);
    expect(gets()).toEqual([{ start: 0, end: FETCH_ALIGNMENT }]);
  });

  it('reads a small file with one GET', async () => {
    const { reader, data, gets } = newReader({ size: 10 * KiB });
    expect((await reader.read(0, 128 * KiB)).equals(data)).toBe(true);
    expect(await reader.read(10 * KiB, 128 * KiB)).toHaveLength(0);
    expect(gets()).toHaveLength(1);
  });

  it('grows the readahead window for sequential reads and resets it on a random read', async () => {
    const { reader, data, gets } = newReader({ size: 64 * MiB, maxReadahead: 8 * MiB });
    const chunk = 128 * KiB;
    const windows: number[] = [];
    for (let offset = 0; offset < 8 * chunk; offset += chunk) {
      const bytes = await reader.read(offset, chunk);
      expect(bytes.equals(data.subarray(offset, offset + chunk))).toBe(true);
      windows.push(reader.readaheadWindow);
    }
    expect(windows).toEqual([INITIAL_WINDOW, 2 * MiB, 4 * MiB, 8 * MiB, 8 * MiB, 8 * MiB, 8 * MiB, 8 * MiB]);
    await settle();

    // Readahead fetched whole blocks past the reader.
    const furthest = Math.max(...gets().map((range) => range.end));
    expect(furthest).toBeGreaterThanOrEqual(8 * MiB);

    await reader.read(50 * MiB, chunk);
    expect(reader.readaheadWindow).toBe(INITIAL_WINDOW);
  });

  it('drops blocks a stream has passed', async () => {
    const { reader, data, cached } = newReader({ size: 32 * MiB, maxReadahead: 4 * MiB });
    const chunk = 128 * KiB;
    for (let offset = 0; offset < 24 * MiB; offset += chunk) {
      expect((await reader.read(offset, chunk)).equals(data.subarray(offset, offset + chunk))).toBe(true);
    }
    await settle();

    // The last read started at 24 MiB - 128 KiB: blocks up to 4 MiB (SEQUENTIAL_SLACK) behind it stay.
    expect([0, 1, 10, 18].map((index) => cached(index))).toEqual([false, false, false, false]);
    expect([19, 20, 23, 24].map((index) => cached(index))).toEqual([true, true, true, true]);
  });

  it('frees passed pieces of a block', async () => {
    const { reader, data, covered, cache } = newReader({ size: 16 * MiB, blockSize: 8 * MiB, maxReadahead: 8 * MiB, pieceBytes: 64 * KiB });
    const chunk = 128 * KiB;
    for (let offset = 0; offset < 7 * MiB; offset += chunk) {
      expect((await reader.read(offset, chunk)).equals(data.subarray(offset, offset + chunk))).toBe(true);
    }
    await settle();

    // The last read started at 7 MiB - 128 KiB. The pieces of block 0 more than 4 MiB (SEQUENTIAL_SLACK) behind it are gone.
    const cutoff = 7 * MiB - chunk - 4 * MiB;
    expect(covered(0, 0, 64 * KiB)).toBe(false);
    expect(covered(0, cutoff - 64 * KiB, cutoff)).toBe(false);
    expect(covered(0, cutoff, 8 * MiB)).toBe(true);
    expect(covered(1, 0, 8 * MiB)).toBe(true);
    expect(cache.getStatistics().cachedBytes).toBe(16 * MiB - cutoff);
  });

  it('keeps blocks before a stream began', async () => {
    const { reader, cached } = newReader({ size: 32 * MiB, maxReadahead: 4 * MiB });
    await reader.read(0, 1 * MiB);
    await reader.read(1 * MiB, 1 * MiB);

    // A second stream from 12 MiB on passes its own blocks, not the ones read before it.
    const chunk = 128 * KiB;
    for (let offset = 12 * MiB; offset < 24 * MiB; offset += chunk) await reader.read(offset, chunk);
    await settle();

    expect([cached(0), cached(1)]).toEqual([true, true]);
    expect([cached(12), cached(18)]).toEqual([false, false]);
  });

  it('splits readahead among streaming readers', async () => {
    // Room for 8 MiB of readahead in all: alone a reader may use it all, with a second one half.
    const share = new ReadaheadShare(8 * MiB, 1 * MiB);
    const first = newReader({ size: 64 * MiB, maxReadahead: 8 * MiB, readaheadShare: share });
    const second = newReader({ size: 64 * MiB, maxReadahead: 8 * MiB, readaheadShare: share });
    const chunk = 128 * KiB;
    const furthestFetch = (gets: () => Array<{ end: number }>): number => Math.max(...gets().map((range) => range.end));

    for (let offset = 0; offset < 8 * chunk; offset += chunk) await first.reader.read(offset, chunk);
    await settle();
    expect(share.windowLimit()).toBe(8 * MiB);
    expect(furthestFetch(first.gets)).toBeGreaterThan(8 * MiB);

    for (let offset = 0; offset < 8 * chunk; offset += chunk) await second.reader.read(offset, chunk);
    await settle();
    expect(share.windowLimit()).toBe(4 * MiB);
    expect(furthestFetch(second.gets)).toBeLessThanOrEqual(8 * chunk + 4 * MiB + 1 * MiB);

    // A closed reader gives its share back.
    second.reader.close();
    expect(share.windowLimit()).toBe(8 * MiB);
  });

  it('tolerates out-of-order reads near the stream end without resetting', async () => {
    const { reader, data } = newReader({ size: 16 * MiB });
    const chunk = 128 * KiB;
    for (const index of [0, 1, 3, 2, 5, 4, 6]) {
      const bytes = await reader.read(index * chunk, chunk);
      expect(bytes.equals(data.subarray(index * chunk, (index + 1) * chunk))).toBe(true);
    }
    expect(reader.readaheadWindow).toBeGreaterThan(INITIAL_WINDOW * 8);
  });

  it('fetches only the pages of a random read', async () => {
    const { reader, gets } = newReader({ size: 64 * MiB, blockSize: 8 * MiB });
    await reader.read(30 * MiB + 10, 100);
    await reader.read(5 * MiB, 100);
    await reader.read(5 * MiB + 3 * PAGE_SIZE - 10, 20);
    await settle();
    expect(gets()).toEqual([
      { start: 30 * MiB, end: 30 * MiB + PAGE_SIZE },
      { start: 5 * MiB, end: 5 * MiB + PAGE_SIZE },
      { start: 5 * MiB + 2 * PAGE_SIZE, end: 5 * MiB + 4 * PAGE_SIZE },
    ]);
  });

  it('starts no readahead for random reads that land near each other', async () => {
    const { reader, data, gets } = newReader({ size: 64 * MiB, blockSize: 8 * MiB });
    // Each read is within the sequential slack of the one before it, as random reads in a small file often are.
    const offsets = [20 * MiB, 21 * MiB, 19 * MiB, 22 * MiB + 8 * KiB, 20 * MiB + 512 * KiB, 23 * MiB];
    for (const offset of offsets) {
      const bytes = await reader.read(offset, 4 * KiB);
      expect(bytes.equals(data.subarray(offset, offset + 4 * KiB))).toBe(true);
    }
    await settle();

    const fetched = gets().reduce((sum, range) => sum + range.end - range.start, 0);
    expect(fetched).toBe(offsets.length * 4 * KiB);
    expect(reader.readaheadWindow).toBe(INITIAL_WINDOW);
  });

  it('reads ahead once a stream that began mid-file proves sequential', async () => {
    const { reader, gets } = newReader({ size: 64 * MiB, blockSize: 1 * MiB, maxReadahead: 8 * MiB });
    const chunk = 128 * KiB;
    const start = 10 * MiB;
    const reads = Math.max(SEQUENTIAL_MIN_READS, SEQUENTIAL_MIN_BYTES / chunk);
    for (let index = 0; index < reads - 1; index += 1) await reader.read(start + index * chunk, chunk);
    await settle();
    expect(Math.max(...gets().map((range) => range.end))).toBe(start + (reads - 1) * chunk);

    await reader.read(start + (reads - 1) * chunk, chunk);
    await settle();
    expect(reader.readaheadWindow).toBe(2 * INITIAL_WINDOW);
    expect(Math.max(...gets().map((range) => range.end))).toBeGreaterThan(start + reads * chunk + INITIAL_WINDOW);
  });

  it('fetches a one-block file with one GET when the first read streams it', async () => {
    const { reader, data, gets } = newReader({ size: 4 * MiB + 5, blockSize: 8 * MiB });
    for (let offset = 0; offset < data.length; offset += 1 * MiB) {
      const bytes = await reader.read(offset, 1 * MiB);
      expect(bytes.equals(data.subarray(offset, offset + 1 * MiB))).toBe(true);
    }
    await settle();
    expect(gets()).toEqual([{ start: 0, end: 4 * MiB + 5 }]);
  });

  it('reads ahead from a large first read at offset 0', async () => {
    const { reader, gets } = newReader({ size: 64 * MiB, blockSize: 8 * MiB });
    await reader.read(0, SEQUENTIAL_MIN_BYTES);
    await settle();
    expect(gets()).toEqual([
      { start: 0, end: FETCH_ALIGNMENT },
      { start: FETCH_ALIGNMENT, end: 8 * MiB },
    ]);
  });

  it('fails with a precondition error once the object is replaced', async () => {
    const { memory, reader } = newReader({ size: 4 * MiB });
    await reader.read(0, 4 * KiB);
    memory.putRaw('object.bin', 'replaced');
    await expect(reader.read(3 * MiB, 4 * KiB)).rejects.toMatchObject({ name: 'PreconditionFailedError' });
  });
});

describe('ObjectReader against the object bytes', () => {
  it('returns a spanning read as block views', async () => {
    const { reader, data } = newReader({ size: 4 * MiB, blockSize: 1 * MiB });
    const offset = 1 * MiB - 4 * KiB;

    const first = await reader.readData(offset, 8 * KiB);
    const second = await reader.readData(offset, 8 * KiB);

    expect(Array.isArray(first)).toBe(true);
    const pieces = first as readonly Buffer[];
    expect(pieces.map((piece) => piece.length)).toEqual([4 * KiB, 4 * KiB]);
    expect(joinReadData(first).equals(data.subarray(offset, offset + 8 * KiB))).toBe(true);
    // Both reads return views of the same cached memory, so nothing was copied to join the blocks.
    const again = second as readonly Buffer[];
    expect(again[0]!.buffer).toBe(pieces[0]!.buffer);
    expect(again[1]!.buffer).toBe(pieces[1]!.buffer);
  });

  it('returns the exact bytes for any read sequence', async () => {
    const size = 3 * MiB + 12345;
    const read = fc.record({ offset: fc.integer({ min: 0, max: size + 1000 }), length: fc.integer({ min: 1, max: 300 * KiB }) });
    await fc.assert(
      fc.asyncProperty(fc.array(read, { minLength: 1, maxLength: 30 }), fc.boolean(), async (reads, sequentialRun) => {
        const { reader, data } = newReader({ size, blockSize: 64 * KiB, maxReadahead: 512 * KiB, readConcurrency: 3 });
        // Half of the runs read a sequential stretch first, so that readahead and partial blocks mix.
        const all = sequentialRun ? [...Array.from({ length: 12 }, (_, index) => ({ offset: index * 128 * KiB, length: 128 * KiB })), ...reads] : reads;
        for (const { offset, length } of all) {
          const bytes = await reader.read(offset, length);
          expect(bytes.equals(data.subarray(offset, offset + length))).toBe(true);
        }
      }),
      { numRuns: 60 },
    );
  });
});

describe('ObjectReader with concurrent reads', () => {
  it('returns the exact bytes when reads overlap in flight', async () => {
    const size = 2 * MiB + 777;
    const read = fc.record({ offset: fc.integer({ min: 0, max: size }), length: fc.integer({ min: 1, max: 200 * KiB }) });
    await fc.assert(
      fc.asyncProperty(fc.array(fc.array(read, { minLength: 1, maxLength: 6 }), { minLength: 1, maxLength: 6 }), async (batches) => {
        const { reader, data } = newReader({ size, blockSize: 64 * KiB, maxReadahead: 256 * KiB, readConcurrency: 2 });
        // The reads of a batch run at once, so that fetches of one block overlap and merge.
        for (const batch of batches) {
          const results = await Promise.all(batch.map(({ offset, length }) => reader.read(offset, length)));
          batch.forEach(({ offset, length }, index) => expect(results[index]!.equals(data.subarray(offset, offset + length))).toBe(true));
        }
      }),
      { numRuns: 60 },
    );
  });
});

describe('read path through the filesystem', () => {
  it('returns ESTALE after a foreign overwrite of an open file', async () => {
    const { memory, mount, fs } = createTestMount({ config: { blockSize: 256 * KiB } });
    const data = patternBytes(4 * MiB);
    memory.putRaw('pinned.bin', data);
    const file = await mount.open('pinned.bin', O_RDONLY);

    expect(joinReadData(await fs.read(file.ino, file.fh, 0, 64 * KiB, context)).equals(data.subarray(0, 64 * KiB))).toBe(true);
    memory.putRaw('pinned.bin', patternBytes(4 * MiB, 99));
    expect(await errnoOfRejection(fs.read(file.ino, file.fh, 3 * MiB, 64 * KiB, context))).toBe(Errno.ESTALE);
    await fs.release(file.ino, file.fh, 0);

    // A new open reads the new version.
    expect((await mount.readFile('pinned.bin')).equals(patternBytes(4 * MiB, 99))).toBe(true);
  });

  it('re-pins a version taken from stale cached metadata before any byte is read', async () => {
    const { memory, mount } = createTestMount();
    memory.putRaw('f', 'first version');
    await mount.stat('f');
    memory.putRaw('f', 'second version');
    expect((await mount.readFile('f')).toString()).toBe('second version');
  });

  it('passes the pinned version with every GET', async () => {
    const { memory, mount, store } = createTestMount({ config: { blockSize: 64 * KiB } });
    const info = memory.putRaw('v.bin', patternBytes(1 * MiB));
    await mount.readFile('v.bin');
    const gets = store.calls.filter((call) => call.operation === 'get');
    expect(gets.length).toBeGreaterThan(1);
    for (const call of gets) expect((call.detail as { ifVersion?: string }).ifVersion).toBe(info.version);
  });

  it('serves two handles reading one block with one GET', async () => {
    const { memory, mount, store, fs } = createTestMount();
    memory.putRaw('shared.bin', patternBytes(512 * KiB));
    const first = await mount.open('shared.bin', O_RDONLY);
    const second = await mount.open('shared.bin', O_RDONLY);

    store.hold((operation) => operation === 'get');
    const reads = Promise.all([fs.read(first.ino, first.fh, 0, 4096, context), fs.read(second.ino, second.fh, 0, 4096, context)]);
    await settle();
    expect(store.held).toBe(1);
    store.release();
    const [a, b] = await reads;
    expect(joinReadData(a).equals(joinReadData(b))).toBe(true);
    expect(store.count('get')).toBe(1);
  });
});
