/**
 * Helpers for the filesystem unit tests: a filesystem on the in-memory store
 * with a manual clock, path-based wrappers around the inode-based operations,
 * and a store wrapper that can hold or fail requests.
 *
 * Test code only; nothing in the daemon imports it.
 */

import { constants as fsConstants } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { pino } from 'pino';

import { joinReadData, ROOT_INODE, type DirectoryEntry, type RequestContext } from '../fuse/types.js';
import { MemoryStore, type MemoryStoreOptions } from '../store/memory.js';
import type {
  CompletedPart,
  CopyRequest,
  GetRequest,
  GetResult,
  ListPage,
  ListRequest,
  MultipartUploadInfo,
  ObjectInfo,
  ObjectStore,
  PutRequest,
  SignalOption,
} from '../store/types.js';
import type { FilesystemConfig } from './config.js';
import { BucketFilesystem, type Clock } from './filesystem.js';

export const { O_RDONLY, O_WRONLY, O_RDWR, O_CREAT, O_TRUNC, O_APPEND, O_EXCL } = fsConstants;

export const MiB = 1024 * 1024;

export const context: RequestContext = { uid: 1000, gid: 1000, pid: 1 };

export const silentLogger = pino({ level: 'silent' });

export class ManualClock implements Clock {
  constructor(private nowMs = Date.UTC(2026, 0, 1)) {}

  now(): number {
    return this.nowMs;
  }

  advance(ms: number): void {
    this.nowMs += ms;
  }
}

export type StoreOperation = keyof Omit<ObjectStore, 'kind' | 'bucket' | 'limits'>;

/**
 * An `ObjectStore` that forwards to another one, records every call, and lets
 * a test fail a call or hold it until released.
 */
export class ControlledStore implements ObjectStore {
  readonly kind;
  readonly bucket;
  readonly limits;
  readonly calls: { operation: StoreOperation; key: string | undefined; detail?: unknown }[] = [];
  /** Returns an error to reject a call with, or undefined to let it through. */
  failWhen: ((operation: StoreOperation, key: string | undefined) => Error | undefined) | undefined;
  /** Calls wait for this promise when `holdWhen` matches them. */
  private gate: Promise<void> = Promise.resolve();
  private openGate: () => void = () => undefined;
  holdWhen: ((operation: StoreOperation, key: string | undefined) => boolean) | undefined;
  held = 0;

  constructor(readonly inner: ObjectStore) {
    this.kind = inner.kind;
    this.bucket = inner.bucket;
    this.limits = inner.limits;
  }

  /** Makes matching calls wait until `release()`. */
  hold(predicate: (operation: StoreOperation, key: string | undefined) => boolean): void {
    this.gate = new Promise((resolve) => {
      this.openGate = resolve;
    });
    this.holdWhen = predicate;
  }

  release(): void {
    this.holdWhen = undefined;
    this.openGate();
  }

  count(operation: StoreOperation): number {
    return this.calls.filter((call) => call.operation === operation).length;
  }

  private async before(operation: StoreOperation, key: string | undefined, detail?: unknown): Promise<void> {
    this.calls.push({ operation, key, detail });
    if (this.holdWhen?.(operation, key) === true) {
      this.held += 1;
      await this.gate;
      this.held -= 1;
    }
    const error = this.failWhen?.(operation, key);
    if (error !== undefined) throw error;
  }

  async list(request: ListRequest): Promise<ListPage> {
    await this.before('list', request.prefix, request);
    return this.inner.list(request);
  }
  async head(key: string, options?: SignalOption): Promise<ObjectInfo> {
    await this.before('head', key);
    return this.inner.head(key, options);
  }
  async get(key: string, request?: GetRequest): Promise<GetResult> {
    await this.before('get', key, { range: request?.range, ifVersion: request?.ifVersion });
    return this.inner.get(key, request);
  }
  async put(key: string, body: Buffer, request?: PutRequest): Promise<ObjectInfo> {
    await this.before('put', key, body.length);
    return this.inner.put(key, body, request);
  }
  async createMultipartUpload(key: string, options?: SignalOption & { contentType?: string }): Promise<string> {
    await this.before('createMultipartUpload', key);
    return this.inner.createMultipartUpload(key, options);
  }
  async uploadPart(key: string, uploadId: string, partNumber: number, body: Buffer, options?: SignalOption): Promise<CompletedPart> {
    await this.before('uploadPart', key, { partNumber, size: body.length });
    return this.inner.uploadPart(key, uploadId, partNumber, body, options);
  }
  async completeMultipartUpload(key: string, uploadId: string, parts: CompletedPart[], options?: SignalOption): Promise<ObjectInfo> {
    await this.before('completeMultipartUpload', key, parts.length);
    return this.inner.completeMultipartUpload(key, uploadId, parts, options);
  }
  async abortMultipartUpload(key: string, uploadId: string, options?: SignalOption): Promise<void> {
    await this.before('abortMultipartUpload', key);
    return this.inner.abortMultipartUpload(key, uploadId, options);
  }
  async listMultipartUploads(prefix: string, options?: SignalOption): Promise<MultipartUploadInfo[]> {
    await this.before('listMultipartUploads', prefix);
    return this.inner.listMultipartUploads(prefix, options);
  }
  async copy(sourceKey: string, destinationKey: string, request?: CopyRequest): Promise<ObjectInfo> {
    await this.before('copy', sourceKey, destinationKey);
    return this.inner.copy(sourceKey, destinationKey, request);
  }
  async delete(key: string, options?: SignalOption): Promise<void> {
    await this.before('delete', key);
    return this.inner.delete(key, options);
  }
  async deleteMany(keys: string[], options?: SignalOption): Promise<void> {
    await this.before('deleteMany', undefined, keys);
    return this.inner.deleteMany(keys, options);
  }
}

export interface TestMount {
  memory: MemoryStore;
  store: ControlledStore;
  fs: BucketFilesystem;
  clock: ManualClock;
  mount: PathOperations;
}

export function createTestMount(
  options: { config?: Partial<FilesystemConfig>; store?: MemoryStoreOptions; memory?: MemoryStore } = {},
): TestMount {
  const clock = new ManualClock();
  const memory = options.memory ?? new MemoryStore({ now: () => new Date(clock.now()), ...options.store });
  const store = new ControlledStore(memory);
  const fs = new BucketFilesystem({
    store,
    logger: silentLogger,
    clock,
    // One directory shared by all test processes, because vitest ends its workers without running exit
    // handlers. Spill files get unique names and are unlinked as soon as they are created, so it stays empty.
    config: { spillDirectory: join(tmpdir(), 'bucketmount-test-spill'), ...options.config },
  });
  return { memory, store, fs, clock, mount: new PathOperations(fs) };
}

/** Path-based calls over the inode-based operations, the way the kernel would make them. */
export class PathOperations {
  constructor(readonly fs: BucketFilesystem) {}

  /** Looks up each segment from the root; returns the inode of the last one. */
  async lookup(path: string): Promise<number> {
    let ino = ROOT_INODE;
    if (path === '') return ino;
    for (const name of path.split('/')) {
      ino = (await this.fs.lookup(ino, name, context)).attr.ino;
    }
    return ino;
  }

  async parentAndName(path: string): Promise<{ parent: number; name: string }> {
    const slash = path.lastIndexOf('/');
    const parent = await this.lookup(slash < 0 ? '' : path.slice(0, slash));
    return { parent, name: path.slice(slash + 1) };
  }

  async stat(path: string) {
    const ino = await this.lookup(path);
    return (await this.fs.getattr(ino, undefined, context)).attr;
  }

  /** Opens an existing file (flags without O_CREAT) or creates it (with O_CREAT, when missing). */
  async open(path: string, flags: number): Promise<{ ino: number; fh: number }> {
    if ((flags & O_CREAT) !== 0) {
      const { parent, name } = await this.parentAndName(path);
      try {
        const ino = (await this.fs.lookup(parent, name, context)).attr.ino;
        if ((flags & O_EXCL) !== 0) throw Object.assign(new Error('exists'), { errno: 17 });
        const { fh } = await this.fs.open(ino, flags & ~O_CREAT, context);
        return { ino, fh };
      } catch (error) {
        if ((error as { errno?: number }).errno !== 2) throw error;
        const created = await this.fs.create(parent, name, 0o644, flags, context);
        return { ino: created.entry.attr.ino, fh: created.open.fh };
      }
    }
    const ino = await this.lookup(path);
    const { fh } = await this.fs.open(ino, flags, context);
    return { ino, fh };
  }

  /** close(2): flush, then release; returns flush's error like close does. */
  async close(file: { ino: number; fh: number }): Promise<void> {
    try {
      await this.fs.flush(file.ino, file.fh, context);
    } finally {
      await this.fs.release(file.ino, file.fh, 0);
    }
  }

  async writeFile(path: string, data: Buffer, chunkSize = 128 * 1024): Promise<void> {
    const file = await this.open(path, O_WRONLY | O_CREAT | O_TRUNC);
    for (let offset = 0; offset < data.length; offset += chunkSize) {
      await this.fs.write(file.ino, file.fh, offset, data.subarray(offset, offset + chunkSize), context);
    }
    await this.close(file);
  }

  async readFile(path: string, chunkSize = 128 * 1024): Promise<Buffer> {
    const file = await this.open(path, O_RDONLY);
    try {
      return await this.readHandle(file, chunkSize);
    } finally {
      await this.fs.release(file.ino, file.fh, 0);
    }
  }

  async readHandle(file: { ino: number; fh: number }, chunkSize = 128 * 1024): Promise<Buffer> {
    const pieces: Buffer[] = [];
    for (let offset = 0; ; offset += chunkSize) {
      const piece = joinReadData(await this.fs.read(file.ino, file.fh, offset, chunkSize, context));
      if (piece.length === 0) break;
      pieces.push(Buffer.from(piece));
      if (piece.length < chunkSize) break;
    }
    return Buffer.concat(pieces);
  }

  /** Lists a directory the way getdents does: repeated readdir calls of `bufferSize` bytes, resuming at the last offset. */
  async readdir(path: string, options: { bufferSize?: number; plus?: boolean; accept?: boolean } = {}): Promise<DirectoryEntry[]> {
    const ino = await this.lookup(path);
    const { fh } = await this.fs.opendir(ino, 0, context);
    const all: DirectoryEntry[] = [];
    try {
      let offset = 0;
      for (;;) {
        const entries = await this.fs.readdir(ino, fh, offset, options.bufferSize ?? 4096, options.plus ?? false, context);
        if (entries.length === 0) break;
        if (options.accept !== false && options.plus === true) this.fs.readdirAccepted(entries);
        all.push(...entries);
        offset = entries[entries.length - 1]!.nextOffset;
      }
    } finally {
      await this.fs.releasedir(ino, fh);
    }
    return all;
  }

  async names(path: string, options: { bufferSize?: number; plus?: boolean } = {}): Promise<string[]> {
    return (await this.readdir(path, options)).map((entry) => entry.name).filter((name) => name !== '.' && name !== '..');
  }

  async mkdir(path: string): Promise<void> {
    const { parent, name } = await this.parentAndName(path);
    await this.fs.mkdir(parent, name, 0o755, context);
  }

  async unlink(path: string): Promise<void> {
    const { parent, name } = await this.parentAndName(path);
    await this.fs.unlink(parent, name, context);
  }

  async rmdir(path: string): Promise<void> {
    const { parent, name } = await this.parentAndName(path);
    await this.fs.rmdir(parent, name, context);
  }

  async rename(from: string, to: string, flags = 0): Promise<void> {
    const source = await this.parentAndName(from);
    const target = await this.parentAndName(to);
    await this.fs.rename(source.parent, source.name, target.parent, target.name, flags, context);
  }

  /** rm -r: depth first, files then the directory. */
  async removeTree(path: string): Promise<void> {
    for (const entry of await this.readdir(path)) {
      if (entry.name === '.' || entry.name === '..') continue;
      const child = path === '' ? entry.name : `${path}/${entry.name}`;
      if ((entry.mode & fsConstants.S_IFMT) === fsConstants.S_IFDIR) {
        await this.removeTree(child);
      } else {
        await this.unlink(child);
      }
    }
    if (path !== '') await this.rmdir(path);
  }
}

/** Resolves with the errno a promise rejected with; fails the test if it resolved. */
export async function errnoOfRejection(promise: Promise<unknown>): Promise<number> {
  try {
    await promise;
  } catch (error) {
    const { errnoOf } = await import('./errno.js');
    return errnoOf(error);
  }
  throw new Error('expected the operation to fail, but it succeeded');
}

/** Deterministic bytes, so that a mix-up of offsets shows as a mismatch. */
export function patternBytes(length: number, seed = 1): Buffer {
  const bytes = Buffer.alloc(length);
  let state = seed >>> 0 || 1;
  for (let index = 0; index < length; index += 1) {
    state = (state * 1103515245 + 12345) >>> 0;
    bytes[index] = state >>> 24;
  }
  return bytes;
}

/** Lets queued promise callbacks run, so that background work reaches its next await. */
export async function settle(rounds = 20): Promise<void> {
  for (let round = 0; round < rounds; round += 1) await new Promise((resolve) => setImmediate(resolve));
}
