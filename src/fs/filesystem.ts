/**
 * The filesystem core of one mount: POSIX operations over an `ObjectStore`.
 *
 * `BucketFilesystem` implements `FilesystemOperations` for the FUSE adapter.
 * It owns every piece of state of its mount (inode table, handles, writers,
 * caches, memory budget), so one process can serve several mounts by
 * creating several instances. It has no cloud specifics and no kernel
 * dependency: the unit tests run it on the in-memory store.
 *
 * Pieces:
 * - `InodeTable` numbers paths and counts the kernel's references;
 * - `DirectoryModel` turns listings into directories (see directory.ts for
 *   markers, implicit directories, shadowing and skipped keys);
 * - `MetadataCache` keeps lookups and listings for `metadataTtlMs`, updated at
 *   once by this mount's own changes;
 * - `ObjectReader` (one per read handle) reads a pinned version through the
 *   shared `BlockCache`;
 * - `FileReadahead` fetches the next small files of a directory that
 *   programs open in name order (see file-readahead.ts);
 * - `FileWriter` (one per inode open for writing, shared by its handles)
 *   streams or spills writes and uploads on flush, fsync and last release.
 *
 * Memory: half of `memoryLimitBytes` goes to reading and half to upload
 * buffers (`MemoryBudget`). The read half holds the largest readahead
 * window (a quarter of it) for blocks in flight, and the block cache gets
 * the rest. The streaming readers share half of the cache as their windows
 * (`ReadaheadShare`), so that blocks fetched ahead are not evicted before
 * they are read.
 *
 * Concurrency: JavaScript runs one callback at a time, and the kernel may
 * send several requests at once, so operations interleave at their awaits.
 * The maps below are only changed synchronously; after an await an
 * operation looks up inodes and handles again instead of trusting what it
 * read before. Writes, truncations and flushes of one file are serialised
 * by its `FileWriter`.
 */

import { constants as fsConstants } from 'node:fs';

import type { Logger } from 'pino';

import type {
  Attributes,
  AttributesReply,
  CreateReply,
  DirectoryEntry,
  EntryReply,
  FilesystemOperations,
  OpenReply,
  ReadData,
  RequestContext,
  SetAttributesRequest,
  StatfsReply,
} from '../fuse/types.js';
import type { ObjectInfo, ObjectStore } from '../store/types.js';
import { PreconditionFailedError } from '../store/errors.js';
import { BlockCache } from '../cache/block-cache.js';
import { MetadataCache, type CachedEntry } from '../cache/metadata-cache.js';
import { ObjectReader, ReadaheadShare } from '../read/reader.js';
import { MemoryBudget } from '../write/memory-budget.js';
import { BufferPool } from '../cache/buffer-pool.js';
import { planPartSizes, type PartSizePlan } from '../write/part-size.js';
import { PendingAborts } from '../write/pending-aborts.js';
import { FileWriter } from '../write/writer.js';
import { resolveFilesystemConfig, type FilesystemConfig } from './config.js';
import { DirectoryModel } from './directory.js';
import { FileReadahead } from './file-readahead.js';
import { Errno, FilesystemError } from './errno.js';
import { InodeTable, type Inode } from './inodes.js';
import { childPath, invalidNameReason, isSameOrDescendant, KeyMapper, parentPathOf } from './names.js';
import { runWithConcurrency } from './concurrency.js';

const { O_RDONLY, O_WRONLY, O_RDWR, O_TRUNC, O_APPEND, O_EXCL, S_IFMT, S_IFREG, S_IFDIR } = fsConstants;
/** Access mode bits of open flags; Node.js does not export O_ACCMODE. */
const O_ACCMODE = 3;

/** Flags of renameat2(2). */
export const RENAME_NOREPLACE = 1;
export const RENAME_EXCHANGE = 2;

/** Smallest possible entries of a readdir reply: a `fuse_dirent` with a one-byte name, and the same plus a `fuse_entry_out`. */
const MIN_DIRENT_BYTES = 32;
const MIN_DIRENTPLUS_BYTES = 160;

/** Keys per DeleteObjects request, the S3 maximum. */
const DELETE_BATCH = 1000;

/** statfs values: object stores have no fixed capacity, so report 1 PiB in 4 KiB blocks and 2^32 free inodes. */
const STATFS_BLOCK_SIZE = 4096;
const STATFS_BLOCKS = 2 ** 50 / STATFS_BLOCK_SIZE;
const STATFS_FILES = 2 ** 32;

export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
}

export const systemClock: Clock = { now: () => Date.now() };

export interface BucketFilesystemOptions {
  store: ObjectStore;
  /** Settings; missing ones take the defaults of `defaultFilesystemConfig`. */
  config?: Partial<FilesystemConfig>;
  logger: Logger;
  clock?: Clock;
}

export interface ShutdownOptions {
  /** True: upload what is staged first. False: abort staged uploads. */
  drain: boolean;
}

interface FileHandle {
  kind: 'file';
  ino: number;
  readable: boolean;
  writable: boolean;
  append: boolean;
  reader: ObjectReader | undefined;
  /** Whether the reader's version came from the metadata cache, which may be stale by up to the TTL. */
  pinnedFromCache: boolean;
}

interface DirectoryHandle {
  kind: 'directory';
  ino: number;
  /** Entries of the listing taken at the first readdir (offset 0); an entry's offset is its index + 1. */
  snapshot: { name: string; inode: Inode }[] | undefined;
  /** Inodes of the snapshot, held by `InodeTable.listed` until releasedir or the next snapshot. */
  listed: Inode[];
}

type Handle = FileHandle | DirectoryHandle;

interface WriterEntry {
  writer: FileWriter;
  /** Open handles with write access to the inode. */
  handles: number;
}

export function createFilesystem(options: BucketFilesystemOptions): BucketFilesystem {
  return new BucketFilesystem(options);
}

/**
 * Returns an object's modification time in whole seconds. S3 lists objects
 * with milliseconds but sends Last-Modified headers (HEAD, GET) in whole
 * seconds, and GCS's headers drop the milliseconds of its listings too. A
 * time that changed when a HEAD replaced a listed entry would make the
 * kernel drop the file's cached pages (the mount requests
 * FUSE_CAP_AUTO_INVAL_DATA) and make tools such as make and rsync see a
 * change.
 */
function objectTimeMs(info: ObjectInfo): number {
  return Math.floor(info.lastModified.getTime() / 1000) * 1000;
}

export class BucketFilesystem implements FilesystemOperations {
  readonly config: FilesystemConfig;

  private readonly store: ObjectStore;
  private readonly logger: Logger;
  private readonly clock: Clock;
  private readonly keys: KeyMapper;
  private readonly inodes = new InodeTable();
  private readonly cache: MetadataCache;
  private readonly directories: DirectoryModel;
  private readonly blocks: BlockCache;
  private readonly readahead: FileReadahead;
  private readonly budget: MemoryBudget;
  /** Part buffers shared by this mount's writers. */
  private readonly partBuffers = new BufferPool();
  /** Failed multipart uploads whose abort must be retried; shared by every writer of this mount. */
  private readonly pendingAborts: PendingAborts;
  private readonly plan: PartSizePlan;
  private readonly maxReadahead: number;
  private readonly readaheadShare: ReadaheadShare;
  private readonly mountedAtMs: number;
  private readonly shutdownController = new AbortController();

  /** Open handles by number. Numbers start at 1 and are never reused within a mount. */
  private readonly handles = new Map<number, Handle>();
  private nextHandle = 1;
  /** One writer per inode with at least one handle open for writing; removed at the last release of those handles. */
  private readonly writers = new Map<number, WriterEntry>();
  private shutdownPromise: Promise<void> | undefined;
  /** Resolves a draining shutdown once the last file open for writing is released. */
  private onWritersIdle: (() => void) | undefined;

  constructor(options: BucketFilesystemOptions) {
    this.config = resolveFilesystemConfig(options.config);
    this.store = options.store;
    this.clock = options.clock ?? systemClock;
    this.logger = options.logger.child({ component: 'filesystem', bucket: options.store.bucket, prefix: this.config.prefix });
    this.keys = new KeyMapper(this.config.prefix);
    this.mountedAtMs = this.clock.now();

    this.cache = new MetadataCache({ ttlMs: this.config.metadataTtlMs, now: () => this.clock.now() });
    this.directories = new DirectoryModel({
      store: this.store,
      keys: this.keys,
      cache: this.cache,
      logger: this.logger,
      signal: this.shutdownController.signal,
      metadataTtlMs: this.config.metadataTtlMs,
      now: () => this.clock.now(),
    });

    // The read half holds the blocks fetched ahead while they are in flight (the largest window)
    // and the block cache, which gets the rest, but at least two blocks.
    const readBytes = Math.floor(this.config.memoryLimitBytes / 2);
    const maxReadahead = Math.max(this.config.blockSize, Math.min(this.config.maxReadahead, Math.floor(readBytes / 4)));
    const cacheBytes = Math.max(2 * this.config.blockSize, readBytes - maxReadahead);
    this.blocks = new BlockCache({ maxBytes: cacheBytes });
    this.readahead = new FileReadahead({
      store: this.store,
      blocks: this.blocks,
      metadata: this.cache,
      logger: this.logger,
      signal: this.shutdownController.signal,
      blockSize: this.config.blockSize,
      walkTimeoutMs: this.config.metadataTtlMs,
      now: () => this.clock.now(),
    });
    this.budget = new MemoryBudget(this.config.memoryLimitBytes - readBytes);
    this.pendingAborts = new PendingAborts({ store: this.store, logger: this.logger });
    this.maxReadahead = maxReadahead;
    this.readaheadShare = new ReadaheadShare(Math.floor(cacheBytes / 2), this.config.blockSize);
    this.plan = planPartSizes(this.store.limits, this.config.partSize);
  }

  /**
   * Lists the first page of the mount's root into the metadata cache, for the
   * readdir that a new mount usually gets first (a listing of /data). Store
   * errors are thrown, so that the start-up check of the bucket can use it.
   */
  prefetchRootListing(): Promise<void> {
    return this.directories.prefetch('', 1);
  }

  /** Counters for logs, metrics and tests. */
  statistics() {
    return {
      inodes: this.inodes.size,
      openHandles: this.handles.size,
      openWriters: this.writers.size,
      skippedKeys: this.directories.skippedKeyCount,
      uploadBufferBytes: this.budget.used,
      blockCache: this.blocks.getStatistics(),
    };
  }

  // ---------------------------------------------------------------------------
  // Names and attributes

  async lookup(parent: number, name: string, _context?: RequestContext): Promise<EntryReply> {
    const parentInode = this.requireDirectory(parent);
    const path = this.childPathFor(parentInode, name);

    const entry = await this.resolvePath(path);
    if (entry === 'missing') {
      throw new FilesystemError(Errno.ENOENT, `${this.describe(path)} does not exist`, { expected: true });
    }

    const inode = this.rememberEntry(path, entry);
    this.inodes.addLookups(inode);
    return this.entryReply(inode);
  }

  forget(ino: number, lookups: number): void {
    this.inodes.forget(ino, lookups);
  }

  async getattr(ino: number, _fh?: number, _context?: RequestContext): Promise<AttributesReply> {
    const inode = this.inodes.require(ino);
    if (inode.kind === 'file' && !this.writers.has(ino) && inode.linked) await this.refreshFileInfo(inode);
    return this.attributesReply(inode);
  }

  async setattr(ino: number, request: SetAttributesRequest, _context?: RequestContext): Promise<AttributesReply> {
    const inode = this.inodes.require(ino);
    this.requireWritable('setattr', inode.path);

    if (request.size !== undefined) {
      if (inode.kind === 'directory') throw new FilesystemError(Errno.EISDIR, `cannot truncate ${this.describe(inode.path)}: it is a directory`);
      await this.truncateFile(inode, request.size);
    }

    const overrides = inode.overrides;
    if (request.mode !== undefined) overrides.permissions = request.mode & 0o7777;
    if (request.uid !== undefined) overrides.uid = request.uid;
    if (request.gid !== undefined) overrides.gid = request.gid;
    if (request.atimeMs !== undefined) overrides.atimeMs = request.atimeMs === 'now' ? this.clock.now() : request.atimeMs;
    if (request.mtimeMs !== undefined) overrides.mtimeMs = request.mtimeMs === 'now' ? this.clock.now() : request.mtimeMs;

    return this.attributesReply(inode);
  }

  // ---------------------------------------------------------------------------
  // Directories

  async opendir(ino: number, _flags?: number, _context?: RequestContext): Promise<OpenReply> {
    const inode = this.requireDirectory(ino);
    const fh = this.addHandle({ kind: 'directory', ino, snapshot: undefined, listed: [] });
    this.inodes.opened(inode);
    return { fh };
  }

  async readdir(ino: number, fh: number, offset: number, size: number, plus: boolean, _context?: RequestContext): Promise<DirectoryEntry[]> {
    const handle = this.requireHandle(fh, 'directory');
    const directory = this.inodes.require(ino);

    if (offset === 0 || handle.snapshot === undefined) {
      handle.snapshot = await this.snapshotDirectory(directory, handle);
    }
    const snapshot = handle.snapshot;

    const limit = Math.max(1, Math.ceil(size / (plus ? MIN_DIRENTPLUS_BYTES : MIN_DIRENT_BYTES)));
    const entries: DirectoryEntry[] = [];
    for (let index = offset; index < snapshot.length && entries.length < limit; index += 1) {
      const { name, inode } = snapshot[index]!;
      const entry: DirectoryEntry = { name, ino: inode.ino, mode: this.modeOf(inode), nextOffset: index + 1 };
      if (plus) entry.entry = this.entryReply(inode);
      entries.push(entry);
    }
    return entries;
  }

  readdirAccepted(entries: DirectoryEntry[]): void {
    for (const entry of entries) {
      // The kernel takes no reference for '.' and '..'.
      if (entry.entry === undefined || entry.name === '.' || entry.name === '..') continue;
      const inode = this.inodes.get(entry.ino);
      if (inode === undefined) {
        this.logger.warn({ ino: entry.ino, name: entry.name }, 'readdirplus entry accepted for an inode that was already dropped');
        continue;
      }
      this.inodes.addLookups(inode);
    }
  }

  async releasedir(ino: number, fh: number): Promise<void> {
    const handle = this.handles.get(fh);
    this.handles.delete(fh);
    if (handle?.kind === 'directory') this.inodes.unlisted(handle.listed);
    const inode = this.inodes.get(ino);
    if (inode !== undefined) this.inodes.closed(inode);
  }

  // ---------------------------------------------------------------------------
  // Files

  async open(ino: number, flags: number, _context?: RequestContext): Promise<OpenReply> {
    // While a shutdown drains, files may still be opened for reading but not for writing.
    if ((flags & O_ACCMODE) === O_RDONLY && !(flags & O_TRUNC)) this.requireNotStopped();
    else this.requireRunning();
    const inode = this.inodes.require(ino);
    if (inode.kind === 'directory') throw new FilesystemError(Errno.EISDIR, `cannot open ${this.describe(inode.path)} as a file: it is a directory`);

    const accessMode = flags & O_ACCMODE;
    const readable = accessMode !== O_WRONLY;
    const writable = accessMode === O_WRONLY || accessMode === O_RDWR;
    if (writable) this.requireWritable('open for writing', inode.path);

    const handle: FileHandle = { kind: 'file', ino, readable, writable, append: (flags & O_APPEND) !== 0, reader: undefined, pinnedFromCache: false };

    if (writable) {
      await this.openWriter(inode, (flags & O_TRUNC) !== 0);
    } else if (!this.writers.has(ino)) {
      // With a writer open, reads go through it (or its base object), so there is nothing to pin yet.
      const pinned = await this.pinnedInfo(inode);
      handle.reader = this.newReader(inode, pinned.info);
      handle.pinnedFromCache = pinned.fromCache;
      this.readahead.opened(inode.path);
    }

    const keepCache = this.keepsPageCache(inode, handle);
    const fh = this.addHandle(handle);
    this.inodes.opened(inode);

    // flush does nothing for a handle that cannot write, so the kernel need not send it at close.
    const reply: OpenReply = { fh };
    if (keepCache) reply.keepCache = true;
    if (!writable) reply.noFlush = true;
    return reply;
  }

  /**
   * Decides whether an open keeps the kernel's cached pages of the inode, so
   * that re-reading an unchanged object is served from the page cache. Pages
   * are kept only when the open pins the same object version as the opens
   * that filled them and no open handle reads another version, because such
   * a handle could add pages of its version after this open.
   */
  private keepsPageCache(inode: Inode, handle: FileHandle): boolean {
    const version = handle.reader?.version;
    if (version === undefined || version === '' || this.writers.has(inode.ino)) {
      inode.pageCacheVersion = undefined;
      return false;
    }

    let otherVersionOpen = false;
    for (const other of this.handles.values()) {
      if (other.kind === 'file' && other.ino === inode.ino && (other.writable || other.reader?.version !== version)) {
        otherVersionOpen = true;
        break;
      }
    }

    const keep = !otherVersionOpen && inode.pageCacheVersion === version;
    // Without keepCache the kernel drops the inode's pages at this open, so from now on they hold this version.
    inode.pageCacheVersion = otherVersionOpen ? undefined : version;
    return keep;
  }

  async read(ino: number, fh: number, offset: number, size: number, _context?: RequestContext): Promise<ReadData> {
    const handle = this.requireHandle(fh, 'file');
    if (!handle.readable) throw new FilesystemError(Errno.EBADF, `handle ${fh} of inode ${ino} was not opened for reading`);
    const inode = this.inodes.require(ino);

    const writer = this.writers.get(ino)?.writer;
    if (writer !== undefined && writer.hasLocalContent) {
      const local = await writer.read(offset, size);
      if (local !== undefined) return local;
    }

    // Reading the object in the bucket: the writer's base when a writer exists, else the version pinned at open.
    const base = writer?.base;
    if (base !== undefined && handle.reader?.version !== base.version) {
      handle.reader?.close();
      handle.reader = this.newReader(inode, base);
      handle.pinnedFromCache = false;
    }
    if (handle.reader === undefined) {
      const pinned = await this.pinnedInfo(inode);
      handle.reader = this.newReader(inode, pinned.info);
      handle.pinnedFromCache = pinned.fromCache;
    }

    return this.readPinned(inode, handle, offset, size);
  }

  async write(ino: number, fh: number, offset: number, data: Buffer, _context?: RequestContext): Promise<number> {
    // Files opened before a draining shutdown keep accepting writes until they are closed.
    this.requireNotStopped();
    const handle = this.requireHandle(fh, 'file');
    const entry = this.writers.get(ino);
    if (!handle.writable || entry === undefined) throw new FilesystemError(Errno.EBADF, `handle ${fh} of inode ${ino} was not opened for writing`);

    return entry.writer.write(offset, data, { append: handle.append, readable: handle.readable });
  }

  async flush(ino: number, fh: number, _context?: RequestContext, renewDeadline?: () => void): Promise<void> {
    const handle = this.requireHandle(fh, 'file');
    if (!handle.writable) return;

    // A created or truncated file nobody wrote yet is uploaded at release, not at this flush (see onlyEmptied).
    if (this.writers.get(ino)?.writer.onlyEmptied === true) return;
    await this.flushWriter(ino, renewDeadline);
  }

  async fsync(ino: number, fh: number, _dataOnly?: boolean, _context?: RequestContext, renewDeadline?: () => void): Promise<void> {
    const handle = this.requireHandle(fh, 'file');
    if (handle.writable) await this.flushWriter(ino, renewDeadline);
  }

  async release(ino: number, fh: number, _flags?: number, renewDeadline?: () => void): Promise<void> {
    const handle = this.handles.get(fh);
    this.handles.delete(fh);
    const inode = this.inodes.get(ino);

    if (handle?.kind === 'file') {
      handle.reader?.close();
      if (handle.writable) await this.releaseWriter(ino, renewDeadline);
    }
    if (inode !== undefined) this.inodes.closed(inode);
  }

  async create(parent: number, name: string, _mode: number, flags: number, _context?: RequestContext): Promise<CreateReply> {
    this.requireRunning();
    const parentInode = this.requireDirectory(parent);
    const path = this.childPathFor(parentInode, name);
    this.requireWritable('create', path);

    const existing = await this.resolvePath(path);
    if (existing !== 'missing') {
      if (existing.kind === 'directory') throw new FilesystemError(Errno.EISDIR, `cannot create ${this.describe(path)}: a directory has that name`);
      if ((flags & O_EXCL) !== 0) throw new FilesystemError(Errno.EEXIST, `cannot create ${this.describe(path)}: it already exists`, { expected: true });
    }

    const inode = this.inodes.remember(path, 'file', existing === 'missing' ? undefined : existing.info, this.clock.now());
    const truncate = existing === 'missing' || (flags & O_TRUNC) !== 0;
    await this.openWriter(inode, truncate);

    if (existing === 'missing') {
      // Visible to this mount at once, though nothing is in the bucket before the first flush.
      this.cache.storeEntry(path, { kind: 'file', info: this.pendingInfo(path) });
    }

    const accessMode = flags & O_ACCMODE;
    const fh = this.addHandle({
      kind: 'file',
      ino: inode.ino,
      readable: accessMode === O_RDWR,
      writable: true,
      append: (flags & O_APPEND) !== 0,
      reader: undefined,
      pinnedFromCache: false,
    });
    this.inodes.opened(inode);
    this.inodes.addLookups(inode);
    return { entry: this.entryReply(inode), open: { fh } };
  }

  async mknod(parent: number, name: string, mode: number, _rdev: number, _context?: RequestContext): Promise<EntryReply> {
    this.requireRunning();
    const parentInode = this.requireDirectory(parent);
    const path = this.childPathFor(parentInode, name);
    const type = mode & S_IFMT;
    if (type !== 0 && type !== S_IFREG) {
      throw new FilesystemError(Errno.EPERM, `cannot create ${this.describe(path)}: only regular files can be stored as objects (requested file type 0o${type.toString(8)})`);
    }
    this.requireWritable('mknod', path);

    if ((await this.resolvePath(path)) !== 'missing') {
      throw new FilesystemError(Errno.EEXIST, `cannot create ${this.describe(path)}: it already exists`, { expected: true });
    }

    const info = await this.store.put(this.keys.fileKey(path), Buffer.alloc(0), { signal: this.shutdownController.signal });
    this.cache.storeEntry(path, { kind: 'file', info });
    const inode = this.inodes.remember(path, 'file', info, this.clock.now());
    this.inodes.addLookups(inode);
    return this.entryReply(inode);
  }

  async mkdir(parent: number, name: string, _mode: number, _context?: RequestContext): Promise<EntryReply> {
    this.requireRunning();
    const parentInode = this.requireDirectory(parent);
    const path = this.childPathFor(parentInode, name);
    this.requireWritable('mkdir', path);

    if ((await this.resolvePath(path)) !== 'missing') {
      throw new FilesystemError(Errno.EEXIST, `cannot create directory ${this.describe(path)}: it already exists`, { expected: true });
    }

    await this.store.put(this.keys.directoryPrefix(path), Buffer.alloc(0), { signal: this.shutdownController.signal });
    // The name resolved as missing, so no key was seen under the new prefix: the directory starts
    // empty, and the lookups that precede creating files in it need no request.
    this.cache.storeNewDirectory(path);
    const inode = this.inodes.remember(path, 'directory', undefined, this.clock.now());
    this.inodes.addLookups(inode);
    return this.entryReply(inode);
  }

  async unlink(parent: number, name: string, _context?: RequestContext): Promise<void> {
    this.requireRunning();
    const parentInode = this.requireDirectory(parent);
    const path = this.childPathFor(parentInode, name);
    this.requireWritable('unlink', path);

    const entry = await this.resolvePath(path);
    if (entry === 'missing') throw new FilesystemError(Errno.ENOENT, `cannot remove ${this.describe(path)}: it does not exist`, { expected: true });
    if (entry.kind === 'directory') throw new FilesystemError(Errno.EISDIR, `cannot unlink ${this.describe(path)}: it is a directory, use rmdir`);

    await this.store.delete(this.keys.fileKey(path), { signal: this.shutdownController.signal });

    // An open writer keeps its content for reads through its handles but must not bring the name back at close.
    const inode = this.inodes.atPath(path);
    if (inode !== undefined) {
      const writer = this.writers.get(inode.ino)?.writer;
      if (writer !== undefined) writer.unlinked = true;
    }
    this.cache.storeMissing(path);
    this.keepParentDirectory(path);
    this.inodes.unlink(path);
  }

  async rmdir(parent: number, name: string, _context?: RequestContext): Promise<void> {
    this.requireRunning();
    const parentInode = this.requireDirectory(parent);
    const path = this.childPathFor(parentInode, name);
    this.requireWritable('rmdir', path);

    const entry = await this.resolvePath(path);
    // The kernel may still have a directory that the bucket no longer shows: an implicit directory
    // emptied without the metadata cache (TTL 0), or one that another client removed. It is removed
    // like an empty one, unless a file below it is still open for writing.
    const emptied = entry === 'missing' && this.inodes.atPath(path)?.kind === 'directory';
    if (entry === 'missing' && !emptied) throw new FilesystemError(Errno.ENOENT, `cannot remove ${this.describe(path)}: it does not exist`, { expected: true });
    if (entry !== 'missing' && entry.kind === 'file') throw new FilesystemError(Errno.ENOTDIR, `cannot rmdir ${this.describe(path)}: it is a file`);
    await this.requireEmptyDirectory(path);

    // Deleting the marker is all there is to do; an implicit directory has none and is gone once empty.
    await this.store.delete(this.keys.directoryPrefix(path), { signal: this.shutdownController.signal });
    this.cache.invalidateTree(path);
    this.cache.storeMissing(path);
    this.keepParentDirectory(path);
    this.inodes.unlink(path);
  }

  /**
   * Records that the parent of a path just removed or moved away through
   * this mount is still a directory. An implicit directory (one without a
   * marker) is gone from the bucket once its last key is deleted, but the
   * program that emptied it usually removes it next, as `rm -r` does. Without
   * this, that rmdir failed with ENOENT whenever the directory's cached entry
   * was older than the metadata TTL.
   */
  private keepParentDirectory(path: string): void {
    const parent = parentPathOf(path);
    if (parent !== '') this.cache.keepDirectory(parent);
  }

  async rename(parent: number, name: string, newParent: number, newName: string, flags: number, _context?: RequestContext): Promise<void> {
    this.requireRunning();
    const fromPath = this.childPathFor(this.requireDirectory(parent), name);
    const toPath = this.childPathFor(this.requireDirectory(newParent), newName);
    this.requireWritable('rename', fromPath);

    if ((flags & RENAME_EXCHANGE) !== 0) {
      throw new FilesystemError(Errno.EINVAL, `cannot exchange ${this.describe(fromPath)} and ${this.describe(toPath)}: RENAME_EXCHANGE needs an atomic swap, which object stores cannot do`);
    }
    if ((flags & ~RENAME_NOREPLACE) !== 0) {
      throw new FilesystemError(Errno.EINVAL, `unsupported rename flags 0x${flags.toString(16)} for ${this.describe(fromPath)}: only RENAME_NOREPLACE is supported`);
    }

    const source = await this.resolvePath(fromPath);
    if (source === 'missing') throw new FilesystemError(Errno.ENOENT, `cannot rename ${this.describe(fromPath)}: it does not exist`, { expected: true });
    if (fromPath === toPath) return;
    if (source.kind === 'directory' && isSameOrDescendant(toPath, fromPath)) {
      throw new FilesystemError(Errno.EINVAL, `cannot move directory ${this.describe(fromPath)} into itself (${this.describe(toPath)})`);
    }

    const target = await this.resolvePath(toPath);
    if (target !== 'missing') {
      if ((flags & RENAME_NOREPLACE) !== 0) throw new FilesystemError(Errno.EEXIST, `cannot rename onto ${this.describe(toPath)}: it exists and RENAME_NOREPLACE was given`, { expected: true });
      if (source.kind === 'file' && target.kind === 'directory') throw new FilesystemError(Errno.EISDIR, `cannot rename file ${this.describe(fromPath)} onto directory ${this.describe(toPath)}`);
      if (source.kind === 'directory' && target.kind === 'file') throw new FilesystemError(Errno.ENOTDIR, `cannot rename directory ${this.describe(fromPath)} onto file ${this.describe(toPath)}`);
      if (target.kind === 'directory') await this.requireEmptyDirectory(toPath);
    }

    if (source.kind === 'file') {
      await this.renameFile(fromPath, toPath);
    } else {
      await this.renameDirectory(fromPath, toPath);
    }
  }

  async statfs(_ino?: number, _context?: RequestContext): Promise<StatfsReply> {
    return {
      blockSize: STATFS_BLOCK_SIZE,
      fragmentSize: STATFS_BLOCK_SIZE,
      blocks: STATFS_BLOCKS,
      blocksFree: STATFS_BLOCKS,
      blocksAvailable: STATFS_BLOCKS,
      files: STATFS_FILES,
      filesFree: STATFS_FILES,
      filesAvailable: STATFS_FILES,
      nameMax: 255,
    };
  }

  /**
   * Stops the filesystem. New opens and changes fail at once. With `drain`,
   * waits until every file open for writing is closed (and so uploaded);
   * without it, or when a later call escalates, aborts the uploads of files
   * still open and cancels requests in flight. Idempotent: every call returns the first call's promise, but a
   * call without `drain` during a draining shutdown escalates it, so that a
   * second SIGTERM or a shutdown timeout stops waiting for uploads.
   */
  shutdown(options: ShutdownOptions): Promise<void> {
    if (!options.drain) this.abortRequests();
    this.shutdownPromise ??= this.runShutdown(options.drain);
    return this.shutdownPromise;
  }

  // ---------------------------------------------------------------------------
  // Helpers: names and lookups

  private childPathFor(parent: Inode, name: string): string {
    const reason = invalidNameReason(name);
    if (reason === 'too-long') throw new FilesystemError(Errno.ENAMETOOLONG, `name ${JSON.stringify(name.slice(0, 40))}... is longer than 255 bytes`);
    if (reason !== undefined) throw new FilesystemError(Errno.EINVAL, `invalid file name ${JSON.stringify(name)} (${reason})`);
    return childPath(parent.path, name);
  }

  /** Resolves what a path is, counting files that exist only in this mount's open writers. */
  private async resolvePath(path: string): Promise<CachedEntry | 'missing'> {
    const local = this.inodes.atPath(path);
    if (local !== undefined && local.kind === 'file') {
      const writer = this.writers.get(local.ino)?.writer;
      if (writer !== undefined && !writer.unlinked) return { kind: 'file', info: writer.base ?? this.pendingInfo(path) };
    }
    return this.directories.resolve(path);
  }

  private rememberEntry(path: string, entry: CachedEntry): Inode {
    return this.inodes.remember(path, entry.kind, entry.kind === 'file' ? entry.info : undefined, this.clock.now());
  }

  /** Metadata of a file that is being created and is not in the bucket yet. */
  private pendingInfo(path: string): ObjectInfo {
    return { key: this.keys.fileKey(path), size: 0, version: '', lastModified: new Date(this.clock.now()) };
  }

  private async snapshotDirectory(directory: Inode, handle: DirectoryHandle): Promise<{ name: string; inode: Inode }[]> {
    const listing = new Map(await this.directories.list(directory.path));

    // Files created by this mount and not uploaded yet are entries too.
    for (const [ino, { writer }] of this.writers) {
      const inode = this.inodes.get(ino);
      if (inode === undefined || !inode.linked || writer.unlinked || parentPathOf(inode.path) !== directory.path || inode.path === '') continue;
      const name = inode.path.slice(inode.path.lastIndexOf('/') + 1);
      if (!listing.has(name)) listing.set(name, { kind: 'file', info: writer.base ?? this.pendingInfo(inode.path) });
    }

    const parent = this.inodes.require(this.inodes.parentInoOf(directory));
    const snapshot = [
      { name: '.', inode: directory },
      { name: '..', inode: parent },
    ];
    for (const name of [...listing.keys()].sort()) {
      snapshot.push({ name, inode: this.rememberEntry(childPath(directory.path, name), listing.get(name)!) });
    }

    // A rewinddir replaces the snapshot: hold the new entries before letting go of the old ones.
    const previous = handle.listed;
    handle.listed = snapshot.slice(2).map((entry) => entry.inode);
    this.inodes.listed(handle.listed);
    this.inodes.unlisted(previous);
    return snapshot;
  }

  private async requireEmptyDirectory(path: string): Promise<void> {
    for (const [ino, { writer }] of this.writers) {
      const inode = this.inodes.get(ino);
      if (inode !== undefined && inode.linked && !writer.unlinked && inode.path !== path && isSameOrDescendant(inode.path, path)) {
        throw new FilesystemError(Errno.ENOTEMPTY, `directory ${this.describe(path)} is not empty: ${this.describe(inode.path)} is open for writing`);
      }
    }
    if (!(await this.directories.isEmpty(path))) {
      throw new FilesystemError(Errno.ENOTEMPTY, `directory ${this.describe(path)} is not empty`, { expected: true });
    }
  }

  // ---------------------------------------------------------------------------
  // Helpers: attributes

  private modeOf(inode: Inode): number {
    if (inode.kind === 'directory') return S_IFDIR | (inode.overrides.permissions ?? this.config.dirMode);
    return S_IFREG | (inode.overrides.permissions ?? this.config.fileMode);
  }

  private attributesOf(inode: Inode): Attributes {
    const overrides = inode.overrides;
    let size = 0;
    let mtimeMs = this.mountedAtMs;

    if (inode.kind === 'file') {
      const writer = this.writers.get(inode.ino)?.writer;
      if (writer !== undefined) {
        size = writer.size;
        mtimeMs = writer.dirty || writer.base === undefined ? writer.modifiedAtMs : objectTimeMs(writer.base);
      } else if (inode.info !== undefined) {
        size = inode.info.size;
        mtimeMs = objectTimeMs(inode.info);
      }
    }
    mtimeMs = overrides.mtimeMs ?? mtimeMs;

    return {
      ino: inode.ino,
      mode: this.modeOf(inode),
      nlink: inode.kind === 'directory' ? 2 : 1,
      uid: overrides.uid ?? this.config.uid,
      gid: overrides.gid ?? this.config.gid,
      size,
      atimeMs: overrides.atimeMs ?? mtimeMs,
      mtimeMs,
      ctimeMs: mtimeMs,
    };
  }

  private attributesReply(inode: Inode): AttributesReply {
    return { attr: this.attributesOf(inode), attrTimeout: this.config.attrTimeoutSeconds };
  }

  private entryReply(inode: Inode): EntryReply {
    return { ...this.attributesReply(inode), entryTimeout: this.config.entryTimeoutSeconds };
  }

  /** Refreshes a file's metadata when it is older than the TTL; ENOENT when the object is gone. */
  private async refreshFileInfo(inode: Inode): Promise<void> {
    if (this.clock.now() - inode.infoFetchedAtMs < this.config.metadataTtlMs) return;

    const path = inode.path;
    const entry = await this.directories.resolve(path);
    const current = this.inodes.get(inode.ino);
    if (current === undefined || !current.linked || current.path !== path) return;

    if (entry === 'missing' || entry.kind === 'directory') {
      throw new FilesystemError(Errno.ENOENT, `${this.describe(path)} no longer exists as a file`, { expected: true });
    }
    current.info = entry.info;
    current.infoFetchedAtMs = this.clock.now();
  }

  // ---------------------------------------------------------------------------
  // Helpers: reading

  /** The object version a read handle pins: fresh metadata when known within the TTL, otherwise a HEAD. */
  private async pinnedInfo(inode: Inode): Promise<{ info: ObjectInfo; fromCache: boolean }> {
    const now = this.clock.now();
    if (inode.info !== undefined && inode.info.version !== '' && now - inode.infoFetchedAtMs < this.config.metadataTtlMs) {
      return { info: inode.info, fromCache: true };
    }
    return { info: await this.headForOpen(inode), fromCache: false };
  }

  private async headForOpen(inode: Inode): Promise<ObjectInfo> {
    const info = await this.directories.headFile(inode.path);
    if (info === undefined) {
      this.cache.invalidate(inode.path);
      throw new FilesystemError(Errno.ENOENT, `cannot open ${this.describe(inode.path)}: the object no longer exists`, { expected: true });
    }
    inode.info = info;
    inode.infoFetchedAtMs = this.clock.now();
    return info;
  }

  private newReader(inode: Inode, info: ObjectInfo): ObjectReader {
    const ino = inode.ino;
    return new ObjectReader({
      store: this.store,
      cache: this.blocks,
      logger: this.logger,
      signal: this.shutdownController.signal,
      key: info.key,
      version: info.version,
      size: info.size,
      blockSize: this.config.blockSize,
      maxReadahead: this.maxReadahead,
      readConcurrency: this.config.readConcurrency,
      readaheadShare: this.readaheadShare,
      onVersionServed: () => this.confirmFileVersion(ino, info),
    });
  }

  /**
   * Restarts the metadata TTL of a file after a GET pinned to its version
   * succeeded, because the store has just shown that this version is
   * current. A file that is being read then needs no HEAD or listing when it
   * is looked up, stat'ed or opened again, as when a program reads a file
   * twice. A change by another client still shows within the TTL of the last
   * GET.
   * Nothing is renewed while this mount writes the file, or when the inode
   * or the cached entry has moved on to another version.
   */
  private confirmFileVersion(ino: number, info: ObjectInfo): void {
    const inode = this.inodes.get(ino);
    if (inode === undefined || !inode.linked || this.writers.has(ino)) return;
    if (inode.info === undefined || inode.info.key !== info.key || inode.info.version !== info.version) return;

    inode.infoFetchedAtMs = this.clock.now();
    this.cache.confirmFile(inode.path, info.version);
  }

  /**
   * Reads through the handle's pinned reader. When the object changed since
   * the pin and the handle has returned nothing yet, a pin taken from cached
   * metadata is renewed once with a HEAD: no bytes of the old version were
   * seen, so nothing can mix.
   */
  private async readPinned(inode: Inode, handle: FileHandle, offset: number, size: number): Promise<ReadData> {
    const reader = handle.reader!;
    try {
      return await reader.readData(offset, size);
    } catch (error) {
      if (!(error instanceof PreconditionFailedError)) throw error;
      this.cache.invalidate(inode.path);

      if (reader.returnedData || !handle.pinnedFromCache) throw error;
      this.logger.debug({ key: reader.key, version: reader.version }, 'object changed since the cached metadata was read; pinning the current version');
      const fresh = await this.headForOpen(inode);
      reader.close();
      handle.reader = this.newReader(inode, fresh);
      handle.pinnedFromCache = false;
      return handle.reader.readData(offset, size);
    }
  }

  // ---------------------------------------------------------------------------
  // Helpers: writing

  private async openWriter(inode: Inode, truncate: boolean): Promise<void> {
    // Pages written through the mount are not any object version's.
    inode.pageCacheVersion = undefined;
    const existing = this.writers.get(inode.ino);
    if (existing !== undefined) {
      existing.handles += 1;
      if (truncate) {
        try {
          await existing.writer.truncate(0);
        } catch (error) {
          await this.releaseWriter(inode.ino);
          throw error;
        }
      }
      return;
    }

    // Without O_TRUNC the content starts from the current object, so its version must be known.
    let base: ObjectInfo | undefined;
    if (!truncate) {
      const entry = await this.directories.resolve(inode.path);
      base = entry !== 'missing' && entry.kind === 'file' && entry.info.version !== '' ? entry.info : undefined;
    }

    // Another open may have created the writer during the await.
    const raced = this.writers.get(inode.ino);
    if (raced !== undefined) {
      raced.handles += 1;
      if (truncate) await raced.writer.truncate(0);
      return;
    }

    const writer = new FileWriter({
      store: this.store,
      key: this.keys.fileKey(inode.path),
      logger: this.logger,
      budget: this.budget,
      settings: {
        plan: this.plan,
        uploadConcurrency: this.config.uploadConcurrency,
        downloadChunkSize: this.config.blockSize,
        spillDirectory: this.config.spillDirectory,
      },
      base,
      truncate,
      signal: this.shutdownController.signal,
      now: () => this.clock.now(),
      pendingAborts: this.pendingAborts,
      partBuffers: this.partBuffers,
    });
    this.writers.set(inode.ino, { writer, handles: 1 });
  }

  /** Uploads an inode's staged content if it changed, and records the new object. */
  private async flushWriter(ino: number, renewDeadline?: () => void): Promise<void> {
    const writer = this.writers.get(ino)?.writer;
    if (writer === undefined) return;

    const info = await writer.flush({ onProgress: renewDeadline });
    if (info !== undefined) this.recordUpload(ino, info);
  }

  private recordUpload(ino: number, info: ObjectInfo): void {
    const inode = this.inodes.get(ino);
    if (inode === undefined) return;
    inode.info = info;
    inode.infoFetchedAtMs = this.clock.now();
    if (inode.linked && this.keys.fileKey(inode.path) === info.key) this.cache.storeEntry(inode.path, { kind: 'file', info });
  }

  /** Drops one write handle; the last one uploads what is still staged and frees the writer. */
  private async releaseWriter(ino: number, renewDeadline?: () => void): Promise<void> {
    const entry = this.writers.get(ino);
    if (entry === undefined) return;
    entry.handles -= 1;
    if (entry.handles > 0) return;
    this.writers.delete(ino);

    const writer = entry.writer;
    try {
      // Normally flush already uploaded; this covers writes after the last flush (such as through mmap).
      const info = await writer.flush({ onProgress: renewDeadline });
      if (info !== undefined) this.recordUpload(ino, info);
    } catch (error) {
      this.logger.error({ key: writer.key, err: error }, 'upload at release failed; the staged content is discarded');
      const inode = this.inodes.get(ino);
      if (inode !== undefined && inode.linked) this.cache.invalidate(inode.path);
    } finally {
      await writer.discard();
      // A draining shutdown waits for this: the last release has uploaded its file.
      if (this.writers.size === 0) this.onWritersIdle?.();
    }
  }

  /** setattr with a size: through the open writer when there is one, otherwise a rewrite of the object. */
  private async truncateFile(inode: Inode, size: number): Promise<void> {
    inode.pageCacheVersion = undefined;
    const entry = this.writers.get(inode.ino);
    if (entry !== undefined) {
      await entry.writer.truncate(size);
      return;
    }

    await this.openWriter(inode, size === 0);
    try {
      const writer = this.writers.get(inode.ino)!.writer;
      if (size !== 0) await writer.truncate(size);
      await this.flushWriter(inode.ino);
    } finally {
      await this.releaseWriter(inode.ino);
    }
  }

  // ---------------------------------------------------------------------------
  // Helpers: rename

  private async renameFile(fromPath: string, toPath: string): Promise<void> {
    const signal = this.shutdownController.signal;
    const fromKey = this.keys.fileKey(fromPath);
    const toKey = this.keys.fileKey(toPath);

    // Staged content is uploaded first, so that the copy carries it.
    const source = this.inodes.atPath(fromPath);
    const writer = source === undefined ? undefined : this.writers.get(source.ino)?.writer;
    if (source !== undefined && writer !== undefined) await this.flushWriter(source.ino);

    let info = writer?.base ?? (await this.currentFileInfo(fromPath));
    let copied: ObjectInfo;
    try {
      copied = await this.store.copy(fromKey, toKey, { ifSourceVersion: info.version, sourceSize: info.size, signal });
    } catch (error) {
      if (!(error instanceof PreconditionFailedError)) throw error;
      // The cached version was stale: copy what is there now.
      info = await this.currentFileInfo(fromPath, true);
      copied = await this.store.copy(fromKey, toKey, { ifSourceVersion: info.version, sourceSize: info.size, signal });
    }
    await this.store.delete(fromKey, { signal });

    this.detachTargetWriter(toPath);
    writer?.retarget(toKey);
    if (writer !== undefined) writer.base = copied;

    this.inodes.move(fromPath, toPath);
    this.cache.storeMissing(fromPath);
    this.keepParentDirectory(fromPath);
    this.cache.storeEntry(toPath, { kind: 'file', info: copied });
    const moved = this.inodes.atPath(toPath);
    if (moved !== undefined) {
      moved.info = copied;
      moved.infoFetchedAtMs = this.clock.now();
    }
  }

  /** Moves every object under a directory: copies all, then deletes the sources. Not atomic. */
  private async renameDirectory(fromPath: string, toPath: string): Promise<void> {
    const signal = this.shutdownController.signal;
    const fromPrefix = this.keys.directoryPrefix(fromPath);
    const toPrefix = this.keys.directoryPrefix(toPath);

    // Staged files below the directory are uploaded first, so that they move with it.
    for (const [ino, { writer }] of [...this.writers]) {
      const inode = this.inodes.get(ino);
      if (inode !== undefined && inode.linked && !writer.unlinked && isSameOrDescendant(inode.path, fromPath)) await this.flushWriter(ino);
    }

    this.logger.info({ from: fromPrefix, to: toPrefix }, 'renaming directory: copying every object under it, then deleting the sources; not atomic');
    const sources: ObjectInfo[] = [];
    for await (const info of this.directories.listTree(fromPath)) sources.push(info);

    await runWithConcurrency(sources, this.config.uploadConcurrency, async (info) => {
      const destination = toPrefix + info.key.slice(fromPrefix.length);
      await this.store.copy(info.key, destination, { ifSourceVersion: info.version, sourceSize: info.size, signal });
    });
    for (let start = 0; start < sources.length; start += DELETE_BATCH) {
      await this.store.deleteMany(sources.slice(start, start + DELETE_BATCH).map((info) => info.key), { signal });
    }
    this.logger.info({ from: fromPrefix, to: toPrefix, objects: sources.length }, 'renamed directory');

    for (const [ino, { writer }] of this.writers) {
      const inode = this.inodes.get(ino);
      if (inode !== undefined && inode.linked && isSameOrDescendant(inode.path, fromPath)) {
        writer.retarget(this.keys.fileKey(toPath + inode.path.slice(fromPath.length)));
      }
    }

    this.inodes.move(fromPath, toPath);
    this.cache.invalidateTree(fromPath);
    this.cache.invalidateTree(toPath);
    this.cache.storeMissing(fromPath);
    this.keepParentDirectory(fromPath);
    this.cache.storeEntry(toPath, { kind: 'directory' });
  }

  /** Marks the writer of a file that a rename replaces, so that its close does not bring the old content back. */
  private detachTargetWriter(path: string): void {
    const target = this.inodes.atPath(path);
    if (target === undefined) return;
    const writer = this.writers.get(target.ino)?.writer;
    if (writer !== undefined) writer.unlinked = true;
  }

  private async currentFileInfo(path: string, fresh = false): Promise<ObjectInfo> {
    if (!fresh) {
      const entry = await this.directories.resolve(path);
      if (entry !== 'missing' && entry.kind === 'file' && entry.info.version !== '') return entry.info;
    }
    const info = await this.directories.headFile(path);
    if (info === undefined) throw new FilesystemError(Errno.ENOENT, `${this.describe(path)} no longer exists`, { expected: true });
    return info;
  }

  // ---------------------------------------------------------------------------
  // Helpers: handles, checks, shutdown

  private addHandle(handle: Handle): number {
    const fh = this.nextHandle++;
    this.handles.set(fh, handle);
    return fh;
  }

  private requireHandle(fh: number, kind: 'file'): FileHandle;
  private requireHandle(fh: number, kind: 'directory'): DirectoryHandle;
  private requireHandle(fh: number, kind: Handle['kind']): Handle {
    const handle = this.handles.get(fh);
    if (handle === undefined || handle.kind !== kind) throw new FilesystemError(Errno.EBADF, `no open ${kind} handle ${fh}`);
    return handle;
  }

  private requireDirectory(ino: number): Inode {
    const inode = this.inodes.require(ino);
    if (inode.kind !== 'directory') throw new FilesystemError(Errno.ENOTDIR, `${this.describe(inode.path)} is not a directory`);
    return inode;
  }

  private requireWritable(operation: string, path: string): void {
    if (this.config.readOnly) {
      throw new FilesystemError(Errno.EROFS, `${operation} of ${this.describe(path)} rejected: the bucket is mounted read-only`, { expected: true });
    }
  }

  /** Rejects changes once a shutdown has started, draining or not. */
  private requireRunning(): void {
    if (this.shutdownPromise !== undefined) throw new FilesystemError(Errno.EIO, `the filesystem for bucket ${this.store.bucket} is shutting down: no new files can be opened for writing or changed`);
  }

  /** Rejects I/O once a shutdown has cancelled requests; a draining shutdown still serves open files. */
  private requireNotStopped(): void {
    if (this.shutdownController.signal.aborted) throw new FilesystemError(Errno.EIO, `the filesystem for bucket ${this.store.bucket} has shut down`);
  }

  private describe(path: string): string {
    return `${path === '' ? 'the mount root' : JSON.stringify(path)} (key ${this.keys.fileKey(path) || '(bucket root)'} in bucket ${this.store.bucket})`;
  }

  /** Cancels every store request in flight, multipart uploads included (they are aborted in the store). */
  private abortRequests(): void {
    if (this.shutdownController.signal.aborted) return;
    this.shutdownController.abort(new Error(`filesystem for bucket ${this.store.bucket} shut down`));
  }

  private async runShutdown(drain: boolean): Promise<void> {
    this.logger.info({ drain, openWriters: this.writers.size }, 'filesystem shutdown started');

    // Draining waits for programs to close what they are writing, so each upload completes with
    // the whole file. Uploading a file still being written would store a truncated object.
    if (drain && this.writers.size > 0 && !this.shutdownController.signal.aborted) {
      this.logger.info({ openWriters: this.writers.size }, 'waiting for files open for writing to be closed before unmounting');
      await new Promise<void>((resolve) => {
        this.onWritersIdle = resolve;
        this.shutdownController.signal.addEventListener('abort', () => resolve(), { once: true });
      });
    }

    // Files still open now are abandoned: their uploads are aborted, so no partial object appears.
    const entries = [...this.writers];
    this.writers.clear();
    await Promise.all(
      entries.map(async ([, { writer }]) => {
        this.logger.warn({ key: writer.key }, 'file still open for writing at shutdown; its upload is aborted and nothing is stored');
        await writer.discard();
      }),
    );

    await this.pendingAborts.flush();
    this.pendingAborts.stop();

    this.abortRequests();
    for (const handle of this.handles.values()) {
      if (handle.kind === 'file') handle.reader?.close();
    }
    this.cache.clear();
    this.blocks.clear();
    this.logger.info({ drain, abandonedWriters: entries.length }, 'filesystem shutdown finished');
  }
}
