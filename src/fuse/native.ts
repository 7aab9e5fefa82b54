/**
 * Typed loader of the C addon in `native/` (libfuse3 low-level API).
 *
 * The addon copies each kernel request into a `NativeRequest` and passes it
 * to `handlers.request` on the main thread; the request is answered later by
 * exactly one reply method of the `NativeSession`. Only `src/fuse/session.ts`
 * should use this module.
 */

import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import type { Attributes, DirectoryEntry, EntryReply, OpenReply, SetAttributesRequest, StatfsReply } from './types.js';

export interface NativeMountOptions {
  /** A directory, or `/dev/fd/N` for a /dev/fuse descriptor opened and mounted by a privileged helper. */
  mountpoint: string;
  fsName: string;
  subtype: string;
  allowOther: boolean;
  readOnly: boolean;
  defaultPermissions: boolean;
  autoUnmount: boolean;
  /** libfuse prints every request and reply to stderr. */
  debug: boolean;
  /** max_read and max_write in bytes, 4096 to 1048576. */
  maxIoSize: number;
  maxThreads: number;
  maxBackground: number;
  congestionThreshold: number;
  /** A request JavaScript has not answered after this long gets ETIMEDOUT from the addon. */
  requestTimeoutMs: number;
  /** Readahead window in KiB that the addon sets after INIT, before it serves other requests. 0 keeps the kernel default. */
  readAheadKib: number;
}

export interface NativeRequestContext {
  uid: number;
  gid: number;
  pid: number;
}

interface RequestBase {
  /** Request handle, passed to exactly one reply method. */
  id: number;
  context: NativeRequestContext;
}

export type NativeRequest =
  | { op: 'forget'; id: number; ino: number; lookups: number }
  | { op: 'forgetMulti'; id: number; items: { ino: number; lookups: number }[] }
  | (RequestBase & { op: 'lookup' | 'unlink' | 'rmdir'; parent: number; name: string })
  | (RequestBase & { op: 'getattr'; ino: number; fh?: number })
  | (RequestBase & { op: 'setattr'; ino: number; request: SetAttributesRequest })
  | (RequestBase & { op: 'opendir' | 'open'; ino: number; flags: number })
  | (RequestBase & { op: 'readdir' | 'readdirplus' | 'read'; ino: number; fh: number; offset: number; size: number })
  | (RequestBase & { op: 'releasedir' | 'flush' | 'release'; ino: number; fh: number; flags: number })
  | (RequestBase & { op: 'fsync'; ino: number; fh: number; dataOnly: boolean })
  /** `lent` is true when `data` came from the `writeBuffer` handler, which can have it back once the write finished. */
  | (RequestBase & { op: 'write'; ino: number; fh: number; offset: number; data: Buffer; lent: boolean })
  | (RequestBase & { op: 'create'; parent: number; name: string; mode: number; flags: number })
  | (RequestBase & { op: 'mknod'; parent: number; name: string; mode: number; rdev: number })
  | (RequestBase & { op: 'mkdir'; parent: number; name: string; mode: number })
  | (RequestBase & { op: 'rename'; parent: number; name: string; newParent: number; newName: string; flags: number })
  | (RequestBase & { op: 'statfs'; ino: number })
  | (RequestBase & { op: 'symlink'; parent: number; name: string; target: string })
  | (RequestBase & { op: 'link'; ino: number; newParent: number; newName: string });

export type NativeOperation = NativeRequest['op'];

/** Connection parameters after the INIT negotiation. */
export interface NativeInitInfo {
  protocolMajor: number;
  protocolMinor: number;
  maxWrite: number;
  maxRead: number;
  maxReadahead: number;
  maxBackground: number;
  congestionThreshold: number;
  /** FUSE_CAP_* bits the kernel offers and the bits requested. */
  capable: number;
  want: number;
  readdirplus: boolean;
  asyncRead: boolean;
  parallelDirops: boolean;
  writebackCache: boolean;
  /** The read_ahead_kb file written after INIT; absent when none was attempted or the mount was not found. */
  readAheadFile?: string;
  /** errno of setting the readahead window: 0 on success or when not attempted, ENOENT when the mount was not found. */
  readAheadErrno: number;
}

export interface NativeTimeoutInfo {
  id: number;
  op: NativeOperation;
  elapsedMs: number;
  /** The errno the kernel received (ETIMEDOUT). */
  errno: number;
}

export interface NativeLogEntry {
  level: 'warn' | 'error' | 'info' | 'debug';
  message: string;
  /** Positive errno, or 0. */
  errno: number;
}

export interface NativeHandlers {
  request(request: NativeRequest): void;
  init(info: NativeInitInfo): void;
  timeout(info: NativeTimeoutInfo): void;
  log(entry: NativeLogEntry): void;
  /** libfuse ran its destroy callback (the session had been initialised). Called just before `exit`. */
  destroy(): void;
  /** The request loop ended and the session is torn down; `errno` is 0 after a normal unmount. */
  exit(info: { errno: number }): void;
  /**
   * Optional: returns a Buffer of exactly `length` bytes that the addon copies
   * a write request's data into, instead of making a new Buffer over its own
   * copy. Anything else (undefined, another length) makes the addon do that.
   */
  writeBuffer?(length: number): Buffer | undefined;
}

/**
 * A mounted session. Each reply method returns true when it answered the
 * request and false when the addon had already answered it (deadline passed,
 * or the session closed); it throws for an unknown or already answered id, a
 * reply that does not fit the operation, or an invalid argument, and in the
 * last two cases the request is still pending.
 */
export interface NativeSession {
  /** errno 0 is the success reply of unlink, rmdir, rename, flush, release, releasedir and fsync. */
  replyError(id: number, errno: number): boolean;
  replyEntry(id: number, entry: EntryReply): boolean;
  replyCreate(id: number, entry: EntryReply, open: OpenReply): boolean;
  replyAttr(id: number, attr: Attributes, timeoutSeconds: number): boolean;
  replyOpen(id: number, open: OpenReply): boolean;
  /**
   * Sends the data of a read: one Uint8Array, or an array of them sent in
   * order as one reply. A reply of 64 KiB or more is written later by the
   * addon's reply thread straight from this memory, which the addon keeps
   * referenced until then, so the bytes must not change after the call.
   */
  replyBuffer(id: number, data: Uint8Array | readonly Uint8Array[]): boolean;
  replyWrite(id: number, count: number): boolean;
  replyStatfs(id: number, statfs: StatfsReply): boolean;
  /** Ends a forget or forgetMulti request. */
  replyNone(id: number): boolean;
  /**
   * Packs `entries` in order into `size` bytes and returns how many the
   * kernel received, or false for a late reply.
   */
  replyDirectory(id: number, size: number, entries: readonly DirectoryEntry[], plus: boolean): number | false;
  /**
   * Restarts the deadline of a pending request from now. Returns false when
   * the request already got its reply, timed out or was cancelled.
   */
  renewDeadline(id: number): boolean;
  /** Starts the unmount and returns at once; `handlers.exit` follows. Idempotent. */
  unmount(): void;
  readonly state: 'mounted' | 'unmounting' | 'closed';
}

/** An open /dev/fuse descriptor received from a privileged helper, and the socket it came over. */
export interface ReceivedDescriptor {
  /** Close-on-exec descriptor of /dev/fuse (checked to be the character device 10:229); mount it as `/dev/fd/N`. */
  descriptor: number;
  /** The connected socket. Keep it open while serving: the helper detaches the mount when it closes. */
  connection: number;
}

export interface NativeAddon {
  mount(options: NativeMountOptions, handlers: NativeHandlers): NativeSession;
  /**
   * Connects to the Unix socket at `path`, retrying while it is missing or
   * refuses connections, and receives one descriptor sent as SCM_RIGHTS.
   * Rejects with an Error (code ERR_BUCKETMOUNT_DESCRIPTOR, `errno` set) on a
   * timeout after `timeoutMs`, a socket error, or a descriptor that is not /dev/fuse.
   */
  receiveDescriptor(path: string, timeoutMs: number): Promise<ReceivedDescriptor>;
  /**
   * Has the C library give allocations of at least `bytes` (4 KiB to 32 MiB)
   * back to the system as soon as they are freed. Returns false where the C
   * library offers no such setting.
   */
  setLargeAllocationThreshold(bytes: number): boolean;
  /**
   * Returns the free pages inside the C library's heaps to the system
   * (glibc malloc_trim). Returns true when memory was released, and false
   * when none was or the C library has no such call.
   */
  releaseFreeMemory(): boolean;
  libfuseVersion: string;
}

const ADDON_RELATIVE_PATH = 'native/build/Release/bucketmount_fuse.node';

/** Finds the repository root (the directory with package.json and native/) above this file, in `src/fuse/` or `dist/src/fuse/`. */
function findRepositoryRoot(): string {
  let directory = path.dirname(fileURLToPath(import.meta.url));
  for (let level = 0; level < 5; level += 1) {
    if (existsSync(path.join(directory, 'package.json')) && existsSync(path.join(directory, 'native'))) return directory;
    directory = path.dirname(directory);
  }
  throw new Error(`cannot find the bucketmount repository root above ${fileURLToPath(import.meta.url)}`);
}

/** Loads the addon (require caches it); throws with the build command when it has not been built. */
export function loadNativeAddon(): NativeAddon {
  const root = findRepositoryRoot();
  const addonPath = path.join(root, ADDON_RELATIVE_PATH);
  if (!existsSync(addonPath)) {
    throw new Error(
      `the FUSE addon ${addonPath} is missing; build it with \`npm run build:native\` ` +
        '(needs libfuse3-dev, pkg-config and a C compiler)',
    );
  }

  const require = createRequire(import.meta.url);
  return require(addonPath) as NativeAddon;
}
