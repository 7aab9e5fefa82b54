import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';

import { TransientError } from '../store/errors.js';
import { Errno } from '../fs/errno.js';
import type { BucketFilesystem } from '../fs/filesystem.js';
import { joinReadData } from '../fuse/types.js';
import {
  context,
  createTestMount,
  errnoOfRejection,
  MiB,
  O_APPEND,
  O_CREAT,
  O_RDONLY,
  O_RDWR,
  O_TRUNC,
  O_WRONLY,
  patternBytes,
  settle,
} from '../fs/test-support.js';

/** Small parts so that multipart behaviour shows with a few MiB of data. */
const smallParts = { store: { limits: { minPartSize: 1 * MiB } }, config: { partSize: 1 * MiB, uploadConcurrency: 4, blockSize: 256 * 1024 } };

/** Writes `data` from offset 0 through an open handle in requests of `requestBytes`. */
async function writeSequentially(fs: BucketFilesystem, file: { ino: number; fh: number }, data: Buffer, requestBytes: number): Promise<void> {
  for (let offset = 0; offset < data.length; offset += requestBytes) {
    await fs.write(file.ino, file.fh, offset, data.subarray(offset, offset + requestBytes), context);
  }
}

function transientFailure(operation: string, key: string | undefined): TransientError {
  return new TransientError(`injected ${operation} failure`, { operation, bucket: 'memory-bucket', key });
}

describe('streaming writes', () => {
  it('uploads a 40 MiB sequential write as one multipart upload', async () => {
    const { memory, mount, store, fs } = createTestMount(smallParts);
    const data = patternBytes(40 * MiB);

    const file = await mount.open('big.bin', O_WRONLY | O_CREAT | O_TRUNC);
    await writeSequentially(fs, file, data, 128 * 1024);
    expect(memory.keys()).toEqual([]);
    expect(store.count('uploadPart')).toBeGreaterThanOrEqual(30);
    await mount.close(file);

    expect(store.count('createMultipartUpload')).toBe(1);
    expect(store.count('uploadPart')).toBe(40);
    expect(store.count('completeMultipartUpload')).toBe(1);
    expect(store.count('put')).toBe(0);
    expect(memory.pendingUploadCount()).toBe(0);
    expect(memory.getRaw('big.bin')!.equals(data)).toBe(true);
    expect((await mount.stat('big.bin')).size).toBe(data.length);
    expect(fs.statistics().uploadBufferBytes).toBe(0);
  });

  it('writes wait while the maximum of parts is in flight', async () => {
    const { memory, mount, store, fs } = createTestMount({ ...smallParts, config: { ...smallParts.config, uploadConcurrency: 2 } });
    const data = patternBytes(8 * MiB);
    const file = await mount.open('held.bin', O_WRONLY | O_CREAT | O_TRUNC);
    store.hold((operation) => operation === 'uploadPart');

    let written = 0;
    const writing = (async () => {
      for (let offset = 0; offset < data.length; offset += 256 * 1024) {
        await fs.write(file.ino, file.fh, offset, data.subarray(offset, offset + 256 * 1024), context);
        written = offset + 256 * 1024;
      }
    })();
    await settle(50);

    // Part 1 stays in memory, parts 2 and 3 are in flight, and the write that completes part 4 waits.
    expect(store.held).toBe(2);
    expect(written).toBeLessThan(4 * MiB);
    expect(written).toBeGreaterThanOrEqual(3 * MiB);

    store.release();
    await writing;
    await mount.close(file);
    expect(memory.getRaw('held.bin')!.equals(data)).toBe(true);
  });

  it('reports every uploaded part to the flush that waits for them', async () => {
    const { memory, mount, store, fs } = createTestMount(smallParts);
    const data = patternBytes(3.5 * MiB);
    const file = await mount.open('slow.bin', O_WRONLY | O_CREAT | O_TRUNC);
    store.hold((operation) => operation === 'uploadPart');
    await writeSequentially(fs, file, data, 256 * 1024);

    // Parts 2 and 3 are in flight; the flush sends part 1 and the last half part, and all four wait.
    let renewals = 0;
    const flushing = fs.flush(file.ino, file.fh, context, () => {
      renewals += 1;
    });
    await settle(20);
    expect(store.held).toBe(4);
    expect(renewals).toBe(0);

    store.release();
    await flushing;
    await fs.release(file.ino, file.fh, 0);

    // One renewal per part in the bucket: parts 2 and 3, then part 1 and part 4.
    expect(renewals).toBe(4);
    expect(memory.getRaw('slow.bin')!.equals(data)).toBe(true);
  });

  it('reports progress every second while the completion runs', async () => {
    const { memory, mount, store, fs } = createTestMount(smallParts);
    const data = patternBytes(3 * MiB);
    const file = await mount.open('completing.bin', O_WRONLY | O_CREAT | O_TRUNC);
    await writeSequentially(fs, file, data, 256 * 1024);
    store.hold((operation) => operation === 'completeMultipartUpload');

    let renewals = 0;
    const flushing = fs.flush(file.ino, file.fh, context, () => {
      renewals += 1;
    });
    await settle(100);
    expect(store.held).toBe(1);
    const beforeCompletion = renewals;

    await sleep(2_200);
    expect(renewals - beforeCompletion).toBeGreaterThanOrEqual(2);

    store.release();
    await flushing;
    const afterCompletion = renewals;
    await sleep(1_200);
    expect(renewals).toBe(afterCompletion);
    await fs.release(file.ino, file.fh, 0);
    expect(memory.getRaw('completing.bin')!.equals(data)).toBe(true);
  });

  it('reuses part buffers only after their upload', async () => {
    const { memory, mount, store, fs } = createTestMount(smallParts);
    const first = patternBytes(6 * MiB, 1);
    const second = patternBytes(6 * MiB, 2);
    const files = [await mount.open('first.bin', O_WRONLY | O_CREAT | O_TRUNC), await mount.open('second.bin', O_WRONLY | O_CREAT | O_TRUNC)];

    // Parts wait in the store before it copies them, while the other file keeps taking buffers.
    store.hold((operation) => operation === 'uploadPart');
    const chunk = 256 * 1024;
    const writing = (async () => {
      for (let offset = 0; offset < first.length; offset += chunk) {
        await fs.write(files[0]!.ino, files[0]!.fh, offset, first.subarray(offset, offset + chunk), context);
        await fs.write(files[1]!.ino, files[1]!.fh, offset, second.subarray(offset, offset + chunk), context);
      }
    })();
    await settle(50);
    expect(store.held).toBeGreaterThan(0);

    store.release();
    await writing;
    for (const file of files) await mount.close(file);
    expect(memory.getRaw('first.bin')!.equals(first)).toBe(true);
    expect(memory.getRaw('second.bin')!.equals(second)).toBe(true);
  });

  it('stores a file smaller than one part with a single PUT', async () => {
    const { memory, mount, store } = createTestMount(smallParts);
    await mount.writeFile('small.txt', Buffer.from('hello world'));
    expect(store.count('createMultipartUpload')).toBe(0);
    expect(store.count('put')).toBe(1);
    expect(memory.getRaw('small.txt')?.toString()).toBe('hello world');
  });

  it('patches part 1 in memory without leaving streaming mode', async () => {
    const { memory, mount, fs, store } = createTestMount(smallParts);
    const data = patternBytes(5 * MiB);
    const file = await mount.open('header.bin', O_WRONLY | O_CREAT | O_TRUNC);
    await fs.write(file.ino, file.fh, 0, data, context);
    await fs.write(file.ino, file.fh, 10, Buffer.from('HEADER'), context);
    await mount.close(file);

    const expected = Buffer.from(data);
    Buffer.from('HEADER').copy(expected, 10);
    expect(memory.getRaw('header.bin')!.equals(expected)).toBe(true);
    expect(store.count('completeMultipartUpload')).toBe(1);
    expect(store.count('get')).toBe(0);
  });

  it('falls back to spill for a write behind uploaded parts', async () => {
    const { memory, mount, fs } = createTestMount(smallParts);
    const data = patternBytes(4 * MiB);
    const file = await mount.open('seek.bin', O_WRONLY | O_CREAT | O_TRUNC);
    await fs.write(file.ino, file.fh, 0, data, context);
    await fs.write(file.ino, file.fh, 1.5 * MiB, Buffer.from('PATCH'), context);
    await fs.write(file.ino, file.fh, 4 * MiB, Buffer.from('TAIL'), context);
    await mount.close(file);

    const expected = Buffer.concat([data, Buffer.from('TAIL')]);
    Buffer.from('PATCH').copy(expected, 1.5 * MiB);
    expect(memory.getRaw('seek.bin')!.equals(expected)).toBe(true);
    expect(memory.pendingUploadCount()).toBe(0);
  });

  it('fills a gap past the end with zeros', async () => {
    const { memory, mount, fs } = createTestMount();
    const file = await mount.open('sparse', O_WRONLY | O_CREAT | O_TRUNC);
    await fs.write(file.ino, file.fh, 0, Buffer.from('ab'), context);
    await fs.write(file.ino, file.fh, 6, Buffer.from('cd'), context);
    await mount.close(file);
    expect(memory.getRaw('sparse')).toEqual(Buffer.from([0x61, 0x62, 0, 0, 0, 0, 0x63, 0x64]));
  });
});

describe('spill writes', () => {
  it('handles random writes through a spill file', async () => {
    const { memory, mount, fs } = createTestMount(smallParts);
    const file = await mount.open('random.bin', O_RDWR | O_CREAT | O_TRUNC);
    const expected = Buffer.alloc(3 * MiB);
    for (const offset of [2 * MiB, 0, 1 * MiB + 7, 3 * MiB - 4, 12345]) {
      const piece = patternBytes(4, offset + 1);
      await fs.write(file.ino, file.fh, offset, piece, context);
      piece.copy(expected, offset);
    }
    expect(memory.keys()).toEqual([]);
    await mount.close(file);
    expect(memory.getRaw('random.bin')!.equals(expected)).toBe(true);
    expect(memory.pendingUploadCount()).toBe(0);
  });

  it('overwrites an existing object with O_TRUNC', async () => {
    const { memory, mount } = createTestMount();
    memory.putRaw('f', 'old and long content');
    await mount.writeFile('f', Buffer.from('new'));
    expect(memory.getRaw('f')?.toString()).toBe('new');
    expect((await mount.stat('f')).size).toBe(3);
  });

  it('appends to an existing object with O_APPEND', async () => {
    const { memory, mount, fs } = createTestMount();
    memory.putRaw('log', 'line 1\n');
    const file = await mount.open('log', O_WRONLY | O_APPEND);
    // The offset is ignored under O_APPEND.
    await fs.write(file.ino, file.fh, 0, Buffer.from('line 2\n'), context);
    await mount.close(file);
    expect(memory.getRaw('log')?.toString()).toBe('line 1\nline 2\n');
  });

  it('writes into the middle of an existing object opened r+', async () => {
    const { memory, mount, fs, store } = createTestMount(smallParts);
    const original = patternBytes(3 * MiB);
    memory.putRaw('mid.bin', original);
    const file = await mount.open('mid.bin', O_RDWR);
    expect(store.count('get')).toBe(0);

    await fs.write(file.ino, file.fh, 2 * MiB, Buffer.from('MIDDLE'), context);
    const readBack = joinReadData(await fs.read(file.ino, file.fh, 2 * MiB - 2, 10, context));
    await mount.close(file);

    const expected = Buffer.from(original);
    Buffer.from('MIDDLE').copy(expected, 2 * MiB);
    expect(readBack.equals(expected.subarray(2 * MiB - 2, 2 * MiB + 8))).toBe(true);
    expect(memory.getRaw('mid.bin')!.equals(expected)).toBe(true);
    expect(memory.pendingUploadCount()).toBe(0);
  });

  it('truncates a closed file to shrink and to extend', async () => {
    const { memory, mount, fs } = createTestMount();
    memory.putRaw('t', 'abcdefghij');
    const ino = await mount.lookup('t');

    expect((await fs.setattr(ino, { size: 4 }, context)).attr.size).toBe(4);
    expect(memory.getRaw('t')?.toString()).toBe('abcd');
    expect((await fs.setattr(ino, { size: 6 }, context)).attr.size).toBe(6);
    expect(memory.getRaw('t')).toEqual(Buffer.from([0x61, 0x62, 0x63, 0x64, 0, 0]));
    await fs.setattr(ino, { size: 0 }, context);
    expect(memory.getRaw('t')?.length).toBe(0);
    expect((await mount.readFile('t')).length).toBe(0);
  });

  it('truncates through an open handle and then writes', async () => {
    const { memory, mount, fs } = createTestMount();
    memory.putRaw('t', 'abcdefghij');
    const file = await mount.open('t', O_WRONLY);
    await fs.setattr(file.ino, { size: 3, fh: file.fh }, context);
    await fs.write(file.ino, file.fh, 5, Buffer.from('XY'), context);
    expect((await fs.getattr(file.ino, file.fh, context)).attr.size).toBe(7);
    await mount.close(file);
    expect(memory.getRaw('t')).toEqual(Buffer.from([0x61, 0x62, 0x63, 0, 0, 0x58, 0x59]));
  });

  it('reports a spill directory it cannot create with its errno', async () => {
    const { memory, mount, fs } = createTestMount({ config: { spillDirectory: '/dev/null/spill' } });
    memory.putRaw('f', 'content');
    const file = await mount.open('f', O_WRONLY);
    expect(await errnoOfRejection(fs.write(file.ino, file.fh, 3, Buffer.from('x'), context))).toBe(Errno.ENOTDIR);
    await fs.release(file.ino, file.fh, 0);
    expect(memory.getRaw('f')?.toString()).toBe('content');
  });
});

describe('reads while writing', () => {
  it('shows bytes written so far through every handle of the file', async () => {
    const { memory, mount, fs } = createTestMount();
    const writer = await mount.open('live.txt', O_RDWR | O_CREAT | O_TRUNC);
    await fs.write(writer.ino, writer.fh, 0, Buffer.from('first part'), context);

    expect((await fs.read(writer.ino, writer.fh, 0, 100, context)).toString()).toBe('first part');
    expect((await mount.stat('live.txt')).size).toBe(10);

    const reader = await mount.open('live.txt', O_RDONLY);
    await fs.write(writer.ino, writer.fh, 10, Buffer.from(', second'), context);
    expect((await fs.read(reader.ino, reader.fh, 0, 100, context)).toString()).toBe('first part, second');
    expect(memory.keys()).toEqual([]);

    await mount.close(writer);
    await fs.release(reader.ino, reader.fh, 0);
    expect(memory.getRaw('live.txt')?.toString()).toBe('first part, second');
  });

  it('reads back streamed bytes that are still in memory', async () => {
    const { mount, fs } = createTestMount(smallParts);
    const data = patternBytes(1.5 * MiB);
    const file = await mount.open('stream.bin', O_WRONLY | O_CREAT | O_TRUNC);
    await fs.write(file.ino, file.fh, 0, data, context);

    const reader = await mount.open('stream.bin', O_RDONLY);
    const all = joinReadData(await fs.read(reader.ino, reader.fh, 0, 2 * MiB, context));
    expect(all.equals(data)).toBe(true);
    await fs.release(reader.ino, reader.fh, 0);
    await mount.close(file);
  });
});

describe('flush and failures', () => {
  it('returns a failed multipart upload from flush and aborts it', async () => {
    const { memory, mount, store, fs } = createTestMount(smallParts);
    store.failWhen = (operation, key) => (operation === 'completeMultipartUpload' ? transientFailure(operation, key) : undefined);
    const file = await mount.open('fails.bin', O_WRONLY | O_CREAT | O_TRUNC);
    await fs.write(file.ino, file.fh, 0, patternBytes(5 * MiB), context);

    expect(await errnoOfRejection(fs.flush(file.ino, file.fh, context))).toBe(Errno.EIO);
    expect(store.count('abortMultipartUpload')).toBe(1);
    expect(memory.pendingUploadCount()).toBe(0);
    expect(memory.keys()).toEqual([]);

    // The streamed bytes are gone, so later calls keep failing instead of storing a hole.
    expect(await errnoOfRejection(fs.fsync(file.ino, file.fh, false, context))).toBe(Errno.EIO);
    await fs.release(file.ino, file.fh, 0);
    expect(memory.keys()).toEqual([]);
  });

  it('returns a failed part from the next write or flush and aborts the upload', async () => {
    const { memory, mount, store, fs } = createTestMount(smallParts);
    store.failWhen = (operation, key) => (operation === 'uploadPart' ? transientFailure(operation, key) : undefined);
    const file = await mount.open('part.bin', O_WRONLY | O_CREAT | O_TRUNC);

    let failed: number | undefined;
    const data = patternBytes(8 * MiB);
    for (let offset = 0; offset < data.length && failed === undefined; offset += 512 * 1024) {
      try {
        await fs.write(file.ino, file.fh, offset, data.subarray(offset, offset + 512 * 1024), context);
      } catch (error) {
        failed = (error as { errno: number }).errno;
      }
    }
    failed ??= await errnoOfRejection(fs.flush(file.ino, file.fh, context));
    expect(failed).toBe(Errno.EIO);
    expect(memory.pendingUploadCount()).toBe(0);
    await fs.release(file.ino, file.fh, 0);
    expect(memory.keys()).toEqual([]);
  });

  it('keeps spilled data after a failed upload and retries on fsync', async () => {
    const { memory, mount, store, fs } = createTestMount();
    memory.putRaw('doc', 'version one');
    const file = await mount.open('doc', O_RDWR);
    await fs.write(file.ino, file.fh, 8, Buffer.from('two'), context);

    store.failWhen = (operation, key) => (operation === 'put' ? transientFailure(operation, key) : undefined);
    expect(await errnoOfRejection(fs.flush(file.ino, file.fh, context))).toBe(Errno.EIO);
    expect(memory.getRaw('doc')?.toString()).toBe('version one');

    store.failWhen = undefined;
    await fs.fsync(file.ino, file.fh, false, context);
    expect(memory.getRaw('doc')?.toString()).toBe('version two');
    await mount.close(file);
  });

  it('uploads once per change across flushes of duplicated descriptors', async () => {
    const { memory, mount, store, fs } = createTestMount();
    const file = await mount.open('dup', O_WRONLY | O_CREAT | O_TRUNC);
    await fs.write(file.ino, file.fh, 0, Buffer.from('abc'), context);
    await fs.flush(file.ino, file.fh, context);
    await fs.flush(file.ino, file.fh, context);
    expect(store.count('put')).toBe(1);
    expect(memory.getRaw('dup')?.toString()).toBe('abc');

    // A write after a flush rewrites the whole object.
    await fs.write(file.ino, file.fh, 3, Buffer.from('def'), context);
    await mount.close(file);
    expect(store.count('put')).toBe(2);
    expect(memory.getRaw('dup')?.toString()).toBe('abcdef');
  });
});

describe('shutdown', () => {
  it('drain waits for open files to be closed', async () => {
    const { memory, mount, fs } = createTestMount(smallParts);
    const file = await mount.open('drained.bin', O_WRONLY | O_CREAT | O_TRUNC);
    const data = patternBytes(3 * MiB);
    await fs.write(file.ino, file.fh, 0, data.subarray(0, MiB), context);

    const first = fs.shutdown({ drain: true });
    expect(fs.shutdown({ drain: true })).toBe(first);

    // The open file keeps accepting writes, new files cannot be opened for writing.
    await fs.write(file.ino, file.fh, MiB, data.subarray(MiB), context);
    expect(await errnoOfRejection(mount.open('new.bin', O_WRONLY | O_CREAT))).toBe(Errno.EIO);
    expect(memory.keys()).toEqual([]);

    await mount.close(file);
    await first;
    expect(memory.getRaw('drained.bin')!.equals(data)).toBe(true);
    expect(await errnoOfRejection(fs.write(file.ino, file.fh, 0, Buffer.from('late'), context))).toBe(Errno.EIO);
  });

  it('early flush of an unwritten file uploads nothing', async () => {
    // dd opens its output, dups it to standard output and closes the original before writing.
    const { memory, mount, fs } = createTestMount(smallParts);
    const file = await mount.open('dd-output.bin', O_WRONLY | O_CREAT | O_TRUNC);
    await fs.flush(file.ino, file.fh, context);
    expect(memory.keys()).toEqual([]);

    await fs.write(file.ino, file.fh, 0, patternBytes(3 * MiB), context);
    await fs.shutdown({ drain: false });
    expect(memory.keys()).toEqual([]);
    expect(memory.pendingUploadCount()).toBe(0);
  });

  it('escalated drain stores no partial object', async () => {
    const { memory, mount, fs } = createTestMount(smallParts);
    const file = await mount.open('partial.bin', O_WRONLY | O_CREAT | O_TRUNC);
    await fs.write(file.ino, file.fh, 0, patternBytes(4 * MiB), context);

    const draining = fs.shutdown({ drain: true });
    await fs.shutdown({ drain: false });
    await draining;
    expect(memory.pendingUploadCount()).toBe(0);
    expect(memory.keys()).toEqual([]);
  });

  it('aborts staged uploads without draining', async () => {
    const { memory, mount, fs } = createTestMount(smallParts);
    const file = await mount.open('aborted.bin', O_WRONLY | O_CREAT | O_TRUNC);
    await fs.write(file.ino, file.fh, 0, patternBytes(4 * MiB), context);
    expect(memory.pendingUploadCount()).toBe(1);

    await fs.shutdown({ drain: false });
    await fs.shutdown({ drain: true });
    expect(memory.pendingUploadCount()).toBe(0);
    expect(memory.keys()).toEqual([]);
  });
});
