/**
 * The FUSE adapter: mounts through the C addon and turns every kernel request
 * into one call of `FilesystemOperations`, then into exactly one reply.
 *
 * This is the one place that logs, counts and replies per operation. A
 * rejection becomes an errno through `errnoOf`; expected outcomes
 * (`FilesystemError.expected`, and ENOENT from lookup) log at debug, all
 * other failures at warn. A request that the filesystem does not finish
 * within `requestTimeoutMs` is answered with ETIMEDOUT by the addon; its late
 * result is dropped. Flush, fsync and release get a callback that restarts
 * that deadline, which the filesystem calls while an upload progresses.
 *
 * Unsupported operations (symlink, link) are rejected here with EPERM, the
 * errno link(2) and symlink(2) document for a filesystem that cannot create
 * links. Extended attributes, locks and fallocate never reach JavaScript; see
 * native/src/requests.c.
 */

import { readFileSync } from 'node:fs';
import { stat, statfs } from 'node:fs/promises';
import { constants } from 'node:os';
import path from 'node:path';

import { BufferPool } from '../cache/buffer-pool.js';
import { Errno, FilesystemError, errnoOf } from '../fs/errno.js';
import { detachMount } from './detach.js';
import { parseMountinfo, type MountinfoEntry } from './mountinfo.js';
import { COLLECTION_CHECK_INTERVAL_MS, FreeMemoryReleaser, GarbageCollectionPacer, takeOverBufferCollection } from './free-memory.js';
import type { Logger } from '../observability/logger.js';
import {
  loadNativeAddon,
  type NativeInitInfo,
  type NativeLogEntry,
  type NativeOperation,
  type NativeAddon,
  type NativeRequest,
  type NativeSession,
  type NativeTimeoutInfo,
  type ReceivedDescriptor,
} from './native.js';
import { readDataLength, type FilesystemOperations, type ReadData, type RequestContext } from './types.js';

/** Reads and writes of up to 1 MiB arrive as one request (the largest libfuse 3.14 receives). */
export const MAX_IO_SIZE = 1024 * 1024;

/**
 * Readahead requests in flight per mount. The kernel default of 12 keeps too
 * few GETs in flight against an object store with tens of milliseconds of
 * latency.
 */
export const DEFAULT_MAX_BACKGROUND = 64;

/**
 * Readahead window in KiB. The kernel sizes a FUSE mount's readahead from the
 * block device default (128 KiB), so buffered sequential reads would arrive
 * as 128 KiB requests; 1024 KiB lets them arrive as one 1 MiB request each.
 */
export const DEFAULT_READ_AHEAD_KIB = 1024;

/** How long mount() waits for the kernel's INIT request before it gives up. */
const INIT_TIMEOUT_MS = 30_000;
/** Failed operations with the same errno produce at most one warning per interval; the rest log at debug. */
const FAILURE_LOG_INTERVAL_MS = 60_000;

export type FuseOperation = NativeOperation;

export interface FuseMountOptions {
  /** An empty directory, or `/dev/fd/N` for a /dev/fuse descriptor mounted by a privileged helper. */
  mountpoint: string;
  /** Source shown in /proc/mounts and `df`. */
  fsName: string;
  /** Filesystem type shown as `fuse.<subtype>`. */
  subtype: string;
  /** Let users other than the mounting one use the mount (needs root or user_allow_other in /etc/fuse.conf). */
  allowOther: boolean;
  readOnly: boolean;
  /** libfuse prints every request and reply to stderr. */
  debug: boolean;
  /** A request unanswered after this many milliseconds gets ETIMEDOUT. */
  requestTimeoutMs: number;
  /** libfuse worker threads reading /dev/fuse; they only copy and hand over requests. */
  maxThreads: number;
  /** Kernel limit on background (readahead) requests in flight; default DEFAULT_MAX_BACKGROUND. */
  maxBackground?: number;
  /** Have fusermount3 unmount when this process dies, so that kill -9 leaves no dead mount point. Default true. */
  autoUnmount?: boolean;
  /** Let the kernel check permissions against mode, uid and gid. Default true. */
  defaultPermissions?: boolean;
  /**
   * Readahead window of the mount in KiB, written to /sys/class/bdi/MAJOR:MINOR/read_ahead_kb
   * (needs root; skipped for /dev/fd/N mounts). Default DEFAULT_READ_AHEAD_KIB; 0 keeps the kernel default.
   */
  readAheadKib?: number;
  /**
   * Resident set size in bytes above which the free pages of the C library's
   * heaps are returned to the system, checked every second. Undefined
   * disables it. The setting is per process, so the first mount's value applies.
   */
  residentTargetBytes?: number;
  /**
   * Growth of buffer memory after which a full garbage collection runs, in
   * place of V8's fixed 64 MiB. Undefined keeps V8's default. The setting is
   * per process, so the first mount's value applies.
   */
  collectGarbageAfterBytes?: number;
  /**
   * Called once per answered request with the errno sent (0 for success), for
   * metrics. `bytes` is the data length of a successful read reply and the
   * count of a successful write reply, and 0 otherwise.
   */
  onOperationDone?: (op: FuseOperation, errno: number, durationMs: number, bytes: number) => void;
}

const ERRNO_NAMES = new Map<number, string>();
for (const [name, value] of Object.entries(constants.errno)) {
  if (!ERRNO_NAMES.has(value)) ERRNO_NAMES.set(value, name);
}

/** Returns the symbolic name of a positive errno, such as 'ENOENT'. */
export function errnoName(errno: number): string {
  return ERRNO_NAMES.get(errno) ?? `errno ${errno}`;
}

function contextOf(request: { context: RequestContext }): RequestContext {
  return request.context;
}

/** Returns the inode a request is about, for logs: the parent directory for operations on a name. */
function subjectInode(request: NativeRequest): number | undefined {
  if ('ino' in request) return request.ino;
  if ('parent' in request) return request.parent;
  return undefined;
}

/** Returns the bytes a successful read or write reply moved: the data of a read, the count of a write. */
function transferredBytes(op: FuseOperation, value: unknown): number {
  if (op === 'read' && (Buffer.isBuffer(value) || Array.isArray(value))) return readDataLength(value as ReadData);
  if (op === 'write' && typeof value === 'number') return value;
  return 0;
}

function isDescriptorMountpoint(mountpoint: string): boolean {
  return /^\/dev\/fd\/\d+$/.test(mountpoint);
}

/**
 * Allocations from this size up (cache blocks, upload parts) get their own
 * mapping, which is unmapped when the buffer is freed. Write requests of up to
 * 1 MiB stay below it, so the many of them do not each cost a mapping.
 */
const LARGE_ALLOCATION_BYTES = 2 * 1024 * 1024;

/** Idle write request buffers (MAX_IO_SIZE each) kept for reuse, enough for the writes of 16 processes at once. */
const IDLE_WRITE_BUFFERS = 16;

let largeAllocationThresholdSet = false;

/**
 * Keeps the resident memory of freed buffers from piling up in the C
 * library's heap, once per process. Large buffers (blocks, parts) get their
 * own mappings, and the free pages of the smaller ones are returned while the
 * process is larger than `residentTargetBytes`. Unreachable buffers are
 * collected after every `collectGarbageAfterBytes` of buffer growth.
 */
function returnFreedBuffersToSystem(addon: NativeAddon, logger: Logger, options: FuseMountOptions): void {
  if (largeAllocationThresholdSet) return;
  largeAllocationThresholdSet = true;

  if (addon.setLargeAllocationThreshold(LARGE_ALLOCATION_BYTES)) {
    logger.debug({ bytes: LARGE_ALLOCATION_BYTES }, 'buffers of this size and larger are returned to the system when freed');
  } else {
    logger.info({ bytes: LARGE_ALLOCATION_BYTES }, 'the C library has no mmap threshold to set; freed buffers may stay resident, and RSS may exceed --memory-limit by more');
  }

  // The pacer and the releaser run for the life of the process, like the threshold above.
  const collectAfterBytes = options.collectGarbageAfterBytes;
  if (collectAfterBytes !== undefined) {
    // Taking over creates a V8 context (about 2 ms), so it runs after the mount has served its first requests.
    const takeOver = (): void => {
      const collect = takeOverBufferCollection(logger);
      if (collect !== undefined) new GarbageCollectionPacer({ collect, thresholdBytes: collectAfterBytes, logger }).start();
    };
    setTimeout(takeOver, COLLECTION_CHECK_INTERVAL_MS).unref();
  }

  if (options.residentTargetBytes !== undefined) {
    new FreeMemoryReleaser({ release: () => addon.releaseFreeMemory(), targetBytes: options.residentTargetBytes, logger }).start();
  }
}

/** Errors of a FUSE mount whose daemon is gone: ENOTCONN, or ECONNABORTED when a request was cut off by the abort. */
const DEAD_CONNECTION_CODES = new Set(['ENOTCONN', 'ECONNABORTED']);

/** How long the liveness probe of a FUSE mount found at the mount point may take before the mount goes ahead anyway. */
const DEAD_MOUNT_PROBE_TIMEOUT_MS = 5_000;

/**
 * Rejects a mount point that does not exist or is not a directory. A dead
 * FUSE mount there is detached, so that a restarted daemon recovers its
 * mount point on its own. Such a mount remains when a daemon is killed and
 * libfuse's auto_unmount helper misses it. The helper unmounts only if its
 * open of the mount point fails with ENOTCONN, and it sometimes gets
 * ECONNABORTED because the connection was aborted while its request waited.
 */
async function checkMountpoint(mountpoint: string, logger: Logger): Promise<void> {
  // Dead mounts can be stacked; a few rounds clear them, and the bound stops a detach that does not take.
  for (let detached = 0; ; detached += 1) {
    const deadError = await probeFuseMount(mountpoint, logger);
    if (deadError === undefined) break;
    if (detached === 4) {
      throw new Error(`mount point ${mountpoint} still fails with ${deadError.code} after detaching ${detached} dead FUSE mounts; run \`fusermount3 -u -z ${mountpoint}\` and check /proc/self/mountinfo`, { cause: deadError });
    }
    await detachDeadMount(mountpoint, logger);
  }

  try {
    const stats = await stat(mountpoint);
    if (!stats.isDirectory()) throw new Error(`mount point ${mountpoint} is not a directory`);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new Error(`mount point ${mountpoint} does not exist; create the directory first`, { cause: error });
    throw error;
  }
}

/**
 * Returns the error of a dead FUSE mount on top of `mountpoint`, or
 * undefined. stat(2) can succeed on a dead mount from cached attributes, so
 * the probe is statfs(2), which always goes to the daemon. It runs only when
 * /proc/self/mountinfo shows a FUSE mount there. A live daemon that does not
 * respond within DEAD_MOUNT_PROBE_TIMEOUT_MS counts as alive.
 */
async function probeFuseMount(mountpoint: string, logger: Logger): Promise<NodeJS.ErrnoException | undefined> {
  const mount = readMountinfo().findLast((entry) => entry.mountpoint === mountpoint);
  if (mount === undefined || !mount.fstype.startsWith('fuse')) return undefined;

  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), DEAD_MOUNT_PROBE_TIMEOUT_MS);
  });
  try {
    const outcome = await Promise.race([statfs(mountpoint).then(() => 'alive' as const), timedOut]);
    if (outcome === 'timeout') logger.warn({ mountpoint, fstype: mount.fstype }, 'statfs of the FUSE mount at the mount point timed out; mounting on top of it');
    return undefined;
  } catch (error) {
    const failure = error as NodeJS.ErrnoException;
    if (failure.code !== undefined && DEAD_CONNECTION_CODES.has(failure.code)) return failure;
    logger.warn({ mountpoint, fstype: mount.fstype, err: error }, 'statfs of the FUSE mount at the mount point failed; mounting on top of it');
    return undefined;
  } finally {
    clearTimeout(timer);
  }
}

async function detachDeadMount(mountpoint: string, logger: Logger): Promise<void> {
  logger.warn({ mountpoint }, 'found a dead FUSE mount at the mount point (its daemon is gone); detaching it');
  try {
    await detachMount(mountpoint, true);
  } catch (error) {
    throw new Error(`mount point ${mountpoint} is a FUSE mount whose daemon is gone and detaching it failed (${(error as Error).message}); run \`fusermount3 -u -z ${mountpoint}\` as its owner`, { cause: error });
  }
  logger.info({ mountpoint }, 'detached the dead FUSE mount');
}

/**
 * Returns the mounts of this process's namespace, in mount order. The read
 * is synchronous because the kernel generates the file without waiting on a
 * device, while an asynchronous read waits for the busy event loop at each
 * thread-pool step.
 */
function readMountinfo(): MountinfoEntry[] {
  return parseMountinfo(readFileSync('/proc/self/mountinfo', 'utf8'));
}

/** Logs the outcome of setting the readahead window, which the addon does after INIT and before it serves other requests. */
function logReadAhead(info: NativeInitInfo, mountpoint: string, kib: number, logger: Logger): void {
  const file = info.readAheadFile;
  if (info.readAheadErrno === 0) {
    if (file !== undefined) logger.debug({ mountpoint, file, kib }, 'set the readahead window');
  } else if (file === undefined) {
    logger.warn({ mountpoint }, 'cannot set the readahead window: the mount is missing from /proc/self/mountinfo');
  } else {
    logger.info({ mountpoint, file, errno: errnoName(info.readAheadErrno) }, 'cannot set the readahead window (needs root); buffered reads arrive in 128 KiB requests');
  }
}

/**
 * Receives an open, already mounted /dev/fuse descriptor from a privileged
 * helper over the Unix socket at `socketPath`, waiting up to `timeoutMs` for
 * the helper. Mount the result with the mount point `/dev/fd/N`, and keep
 * `connection` open while serving, because the helper detaches the mount when it closes.
 */
export async function receiveFuseDescriptor(socketPath: string, timeoutMs: number): Promise<ReceivedDescriptor> {
  return loadNativeAddon().receiveDescriptor(socketPath, timeoutMs);
}

export class FuseSession {
  /** Resolves when the request loop has ended and the session is torn down; never rejects. */
  readonly closed: Promise<void>;
  readonly mountpoint: string;

  #native: NativeSession | undefined;
  #initInfo: NativeInitInfo | undefined;
  readonly #operations: FilesystemOperations;
  readonly #writeBuffers = new BufferPool(IDLE_WRITE_BUFFERS);
  readonly #logger: Logger;
  /** Last warning time and failures left out since, per errno name; touched only on the event loop. */
  readonly #failureLogs = new Map<string, { loggedAt: number; suppressed: number }>();
  readonly #onOperationDone: FuseMountOptions['onOperationDone'];
  #resolveClosed!: () => void;
  #unmountStarted = false;

  private constructor(mountpoint: string, operations: FilesystemOperations, logger: Logger, onOperationDone: FuseMountOptions['onOperationDone']) {
    this.mountpoint = mountpoint;
    this.#operations = operations;
    this.#logger = logger;
    this.#onOperationDone = onOperationDone;
    this.closed = new Promise<void>((resolve) => {
      this.#resolveClosed = resolve;
    });
  }

  /** Connection parameters the kernel accepted (max_write, capabilities). */
  get connection(): NativeInitInfo {
    if (this.#initInfo === undefined) throw new Error('the FUSE connection is not initialised yet');
    return this.#initInfo;
  }

  /**
   * Mounts `operations` at `options.mountpoint` and resolves once the kernel
   * has initialised the connection, so that the mount is usable.
   */
  static async mount(options: FuseMountOptions, operations: FilesystemOperations, logger: Logger): Promise<FuseSession> {
    const mountpoint = isDescriptorMountpoint(options.mountpoint) ? options.mountpoint : path.resolve(options.mountpoint);
    if (!isDescriptorMountpoint(mountpoint)) await checkMountpoint(mountpoint, logger);

    const addon = loadNativeAddon();
    returnFreedBuffersToSystem(addon, logger, options);
    const session = new FuseSession(mountpoint, operations, logger, options.onOperationDone);
    const maxBackground = options.maxBackground ?? DEFAULT_MAX_BACKGROUND;

    let markInitialised!: (info: NativeInitInfo) => void;
    let markEnded!: (errno: number) => void;
    const initialised = new Promise<NativeInitInfo>((resolve, reject) => {
      markInitialised = resolve;
      markEnded = (errno) => reject(new Error(`the FUSE session at ${mountpoint} ended before the kernel initialised it (${errnoName(errno)})`));
    });

    logger.info({ mountpoint, libfuse: addon.libfuseVersion }, 'mounting FUSE filesystem');
    session.#native = addon.mount(
      {
        mountpoint,
        fsName: options.fsName,
        subtype: options.subtype,
        allowOther: options.allowOther,
        readOnly: options.readOnly,
        defaultPermissions: options.defaultPermissions ?? true,
        autoUnmount: (options.autoUnmount ?? true) && !isDescriptorMountpoint(mountpoint),
        debug: options.debug,
        maxIoSize: MAX_IO_SIZE,
        maxThreads: options.maxThreads,
        maxBackground,
        congestionThreshold: Math.max(1, Math.floor((maxBackground * 3) / 4)),
        requestTimeoutMs: options.requestTimeoutMs,
        readAheadKib: options.readAheadKib ?? DEFAULT_READ_AHEAD_KIB,
      },
      {
        request: (request) => session.#dispatch(request),
        init: (info) => {
          session.#initInfo = info;
          markInitialised(info);
        },
        timeout: (info) => session.#onTimeout(info),
        log: (entry) => session.#onNativeLog(entry),
        destroy: () => logger.debug({ mountpoint }, 'libfuse destroyed the session'),
        exit: ({ errno }) => {
          markEnded(errno);
          session.#onExit(errno);
        },
        writeBuffer: (length) => session.#lendWriteBuffer(length),
      },
    );

    let initTimer: NodeJS.Timeout | undefined;
    const initTimeout = new Promise<never>((_resolve, reject) => {
      initTimer = setTimeout(() => reject(new Error(`the kernel did not initialise the FUSE connection at ${mountpoint} within ${INIT_TIMEOUT_MS} ms`)), INIT_TIMEOUT_MS);
    });

    try {
      const info = await Promise.race([initialised, initTimeout]);
      logReadAhead(info, mountpoint, options.readAheadKib ?? DEFAULT_READ_AHEAD_KIB, logger);
      logger.info(
        { mountpoint, maxWrite: info.maxWrite, maxRead: info.maxRead, readdirplus: info.readdirplus, protocol: `${info.protocolMajor}.${info.protocolMinor}` },
        'FUSE filesystem mounted',
      );
      return session;
    } catch (error) {
      await session.unmount();
      throw error;
    } finally {
      clearTimeout(initTimer);
    }
  }

  /** Unmounts (lazily, like `fusermount3 -u -z`) and resolves when the session is closed. Idempotent. */
  async unmount(): Promise<void> {
    if (!this.#unmountStarted && this.#native !== undefined && this.#native.state === 'mounted') {
      this.#unmountStarted = true;
      this.#logger.info({ mountpoint: this.mountpoint }, 'unmounting FUSE filesystem');
      this.#native.unmount();
    }
    await this.closed;
  }

  #onExit(errno: number): void {
    if (errno === 0) {
      this.#logger.info({ mountpoint: this.mountpoint }, 'FUSE session closed');
    } else {
      this.#logger.error({ mountpoint: this.mountpoint, errno: errnoName(errno) }, 'FUSE request loop failed; session closed');
    }
    this.#resolveClosed();
  }

  #onTimeout(info: NativeTimeoutInfo): void {
    this.#logger.warn(
      { op: info.op, requestId: info.id, elapsedMs: Math.round(info.elapsedMs), errno: errnoName(info.errno) },
      'filesystem operation did not finish before the request deadline; the kernel got ETIMEDOUT',
    );
    this.#reportDone(info.op, info.errno, info.elapsedMs);
  }

  #onNativeLog(entry: NativeLogEntry): void {
    const fields = { mountpoint: this.mountpoint, ...(entry.errno !== 0 ? { errno: errnoName(entry.errno) } : {}) };
    this.#logger[entry.level](fields, entry.message);
  }

  #reportDone(op: FuseOperation, errno: number, durationMs: number, bytes = 0): void {
    if (this.#onOperationDone === undefined) return;
    try {
      this.#onOperationDone(op, errno, durationMs, bytes);
    } catch (error) {
      this.#logger.error({ err: error, op }, 'onOperationDone callback threw');
    }
  }

  // ---------------------------------------------------------------------------
  // Dispatch

  #dispatch(request: NativeRequest): void {
    try {
      this.#route(request);
    } catch (error) {
      // Only a bug gets here (the routes catch operation failures); reply EIO so the caller does not wait for the deadline.
      this.#logger.error({ err: error, op: request.op }, 'FUSE request dispatch failed');
      this.#answerError(request, Errno.EIO, performance.now());
    }
  }

  /** Lends a pooled buffer for the data of a write request, which the addon copies into it. */
  #lendWriteBuffer(length: number): Buffer | undefined {
    if (length > MAX_IO_SIZE) return undefined;
    return this.#writeBuffers.take(MAX_IO_SIZE).subarray(0, length);
  }

  /** Runs a write and takes its lent buffer back once the filesystem is done with the data. */
  async #write(request: Extract<NativeRequest, { op: 'write' }>): Promise<number> {
    try {
      return await this.#operations.write(request.ino, request.fh, request.offset, request.data, contextOf(request));
    } finally {
      if (request.lent) this.#writeBuffers.give(Buffer.from(request.data.buffer, 0, MAX_IO_SIZE));
    }
  }

  #route(request: NativeRequest): void {
    const native = this.#native!;
    const operations = this.#operations;
    const started = performance.now();

    switch (request.op) {
      case 'forget':
        this.#forget([{ ino: request.ino, lookups: request.lookups }]);
        native.replyNone(request.id);
        return;
      case 'forgetMulti':
        this.#forget(request.items);
        native.replyNone(request.id);
        return;

      case 'lookup':
        return this.#serve(request, started, () => operations.lookup(request.parent, request.name, contextOf(request)), (entry) => native.replyEntry(request.id, entry));
      case 'getattr':
        return this.#serve(
          request,
          started,
          () => operations.getattr(request.ino, request.fh, contextOf(request)),
          (reply) => native.replyAttr(request.id, reply.attr, reply.attrTimeout),
        );
      case 'setattr':
        return this.#serve(
          request,
          started,
          () => operations.setattr(request.ino, request.request, contextOf(request)),
          (reply) => native.replyAttr(request.id, reply.attr, reply.attrTimeout),
        );

      case 'opendir':
        return this.#serve(request, started, () => operations.opendir(request.ino, request.flags, contextOf(request)), (open) => native.replyOpen(request.id, open));
      case 'readdir':
      case 'readdirplus': {
        const plus = request.op === 'readdirplus';
        return this.#serve(
          request,
          started,
          () => operations.readdir(request.ino, request.fh, request.offset, request.size, plus, contextOf(request)),
          (entries) => {
            const added = native.replyDirectory(request.id, request.size, entries, plus);
            if (added === false) return false;
            if (plus && added > 0) this.#acceptEntries(entries.slice(0, added));
            return true;
          },
        );
      }
      case 'releasedir':
        return this.#serve(request, started, () => operations.releasedir(request.ino, request.fh), () => native.replyError(request.id, 0));

      case 'open':
        return this.#serve(request, started, () => operations.open(request.ino, request.flags, contextOf(request)), (open) => native.replyOpen(request.id, open));
      case 'read':
        return this.#serve(
          request,
          started,
          () => operations.read(request.ino, request.fh, request.offset, request.size, contextOf(request)),
          (data) => native.replyBuffer(request.id, data),
        );
      case 'write':
        return this.#serve(
          request,
          started,
          () => this.#write(request),
          (count) => native.replyWrite(request.id, count),
        );
      case 'flush':
        return this.#serve(
          request,
          started,
          () => operations.flush(request.ino, request.fh, contextOf(request), () => native.renewDeadline(request.id)),
          () => native.replyError(request.id, 0),
        );
      case 'fsync':
        return this.#serve(
          request,
          started,
          () => operations.fsync(request.ino, request.fh, request.dataOnly, contextOf(request), () => native.renewDeadline(request.id)),
          () => native.replyError(request.id, 0),
        );
      case 'release':
        return this.#serve(
          request,
          started,
          () => operations.release(request.ino, request.fh, request.flags, () => native.renewDeadline(request.id)),
          () => native.replyError(request.id, 0),
        );

      case 'create':
        return this.#serve(
          request,
          started,
          () => operations.create(request.parent, request.name, request.mode, request.flags, contextOf(request)),
          (reply) => native.replyCreate(request.id, reply.entry, reply.open),
        );
      case 'mknod':
        return this.#serve(
          request,
          started,
          () => operations.mknod(request.parent, request.name, request.mode, request.rdev, contextOf(request)),
          (entry) => native.replyEntry(request.id, entry),
        );
      case 'mkdir':
        return this.#serve(
          request,
          started,
          () => operations.mkdir(request.parent, request.name, request.mode, contextOf(request)),
          (entry) => native.replyEntry(request.id, entry),
        );
      case 'unlink':
        return this.#serve(request, started, () => operations.unlink(request.parent, request.name, contextOf(request)), () => native.replyError(request.id, 0));
      case 'rmdir':
        return this.#serve(request, started, () => operations.rmdir(request.parent, request.name, contextOf(request)), () => native.replyError(request.id, 0));
      case 'rename':
        return this.#serve(
          request,
          started,
          () => operations.rename(request.parent, request.name, request.newParent, request.newName, request.flags, contextOf(request)),
          () => native.replyError(request.id, 0),
        );
      case 'statfs':
        return this.#serve(request, started, () => operations.statfs(request.ino, contextOf(request)), (reply) => native.replyStatfs(request.id, reply));

      case 'symlink':
      case 'link':
        return this.#rejectUnsupported(request, started, Errno.EPERM);

      default: {
        const unknown: never = request;
        throw new Error(`unknown FUSE request ${JSON.stringify(unknown)}`);
      }
    }
  }

  /**
   * Runs one operation and sends its reply. `reply` returns false when the
   * addon had already answered the request after its deadline.
   */
  #serve<T>(request: NativeRequest, started: number, call: () => Promise<T>, reply: (value: T) => boolean): void {
    let pending: Promise<T>;
    try {
      pending = call();
    } catch (error) {
      pending = Promise.reject(error);
    }

    pending.then(
      (value) => {
        let delivered: boolean;
        try {
          delivered = reply(value);
        } catch (error) {
          // The reply did not fit the request (an invalid attribute, a too long buffer); the request is still open.
          this.#logger.error({ err: error, op: request.op, ino: subjectInode(request) }, 'filesystem returned an invalid reply; replying EIO');
          this.#answerError(request, Errno.EIO, started);
          return;
        }
        if (delivered) {
          this.#reportDone(request.op, 0, performance.now() - started, transferredBytes(request.op, value));
        } else {
          this.#logger.debug({ op: request.op, requestId: request.id }, 'dropped a reply that arrived after the request deadline');
        }
      },
      (error: unknown) => {
        this.#logFailure(request, error);
        this.#answerError(request, errnoOf(error), started);
      },
    );
  }

  #logFailure(request: NativeRequest, error: unknown): void {
    const errno = errnoOf(error);
    const expected = (error instanceof FilesystemError && error.expected) || (request.op === 'lookup' && errno === Errno.ENOENT);
    const fields = {
      op: request.op,
      ino: subjectInode(request),
      ...('name' in request ? { name: request.name } : {}),
      errno: errnoName(errno),
      err: error,
    };
    if (expected) {
      this.#logger.debug(fields, 'filesystem operation failed');
      return;
    }

    // One warning per errno per interval: when access is revoked or storage
    // is down, every operation fails the same way, and a line per operation
    // would flood the log. The next warning counts the ones left out.
    const name = errnoName(errno);
    const now = Date.now();
    const previous = this.#failureLogs.get(name);
    if (previous !== undefined && now - previous.loggedAt < FAILURE_LOG_INTERVAL_MS) {
      previous.suppressed += 1;
      this.#logger.debug(fields, 'filesystem operation failed');
      return;
    }
    this.#failureLogs.set(name, { loggedAt: now, suppressed: 0 });
    this.#logger.warn({ ...fields, suppressedSinceLastWarning: previous?.suppressed ?? 0, intervalSeconds: FAILURE_LOG_INTERVAL_MS / 1000 }, 'filesystem operation failed');
  }

  #answerError(request: NativeRequest, errno: number, started: number): void {
    let delivered = false;
    try {
      delivered = request.op === 'forget' || request.op === 'forgetMulti' ? this.#native!.replyNone(request.id) : this.#native!.replyError(request.id, errno);
    } catch (error) {
      this.#logger.error({ err: error, op: request.op, requestId: request.id }, 'sending the error reply failed');
      return;
    }
    if (delivered) {
      this.#reportDone(request.op, errno, performance.now() - started);
    } else {
      this.#logger.debug({ op: request.op, requestId: request.id }, 'dropped an error reply that arrived after the request deadline');
    }
  }

  #rejectUnsupported(request: NativeRequest, started: number, errno: number): void {
    this.#logger.debug({ op: request.op, ino: subjectInode(request), errno: errnoName(errno) }, 'unsupported filesystem operation');
    this.#answerError(request, errno, started);
  }

  #forget(items: readonly { ino: number; lookups: number }[]): void {
    for (const { ino, lookups } of items) {
      try {
        this.#operations.forget(ino, lookups);
      } catch (error) {
        this.#logger.error({ err: error, ino, lookups }, 'forget failed; the inode may stay cached');
      }
    }
  }

  #acceptEntries(entries: Parameters<FilesystemOperations['readdirAccepted']>[0]): void {
    try {
      this.#operations.readdirAccepted(entries);
    } catch (error) {
      this.#logger.error({ err: error, count: entries.length }, 'readdirAccepted failed; lookup counts may be wrong');
    }
  }
}
