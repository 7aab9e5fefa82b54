/**
 * The contract between the FUSE adapter (`src/fuse/session.ts`, over the C
 * addon in `native/`) and the filesystem core (`src/fs/`).
 *
 * The adapter turns each kernel request into one call of `FilesystemOperations`
 * and turns the returned promise into exactly one `fuse_reply_*` call. An
 * operation reports failure by rejecting: the adapter maps the error to an
 * errno with `errnoOf` from `src/fs/errno.ts`, logs and counts it, and replies.
 *
 * Inode numbers are plain JavaScript numbers: they are allocated by the
 * filesystem from 2 upwards (1 is the root, `FUSE_ROOT_ID`) and stay far below
 * 2^53. Times are milliseconds since the epoch. Timeouts are seconds, as the
 * kernel takes them.
 */

export const ROOT_INODE = 1;

export interface Attributes {
  ino: number;
  /** File type bits and permission bits, as in `st_mode`. */
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  size: number;
  atimeMs: number;
  mtimeMs: number;
  ctimeMs: number;
}

export interface AttributesReply {
  attr: Attributes;
  /** Seconds the kernel may cache the attributes. */
  attrTimeout: number;
}

export interface EntryReply extends AttributesReply {
  /** Seconds the kernel may cache the name lookup. */
  entryTimeout: number;
}

export interface OpenReply {
  fh: number;
  /** Bypass the page cache for this handle. */
  directIo?: boolean;
  /** Keep cached pages from an earlier open of the same inode. */
  keepCache?: boolean;
  /** Tell the kernel the file is not seekable (never set for objects). */
  nonSeekable?: boolean;
  /** Skip the FLUSH request when the handle is closed (FOPEN_NOFLUSH, FUSE protocol 7.35; older kernels ignore it). */
  noFlush?: boolean;
}

export interface CreateReply {
  entry: EntryReply;
  open: OpenReply;
}

export interface DirectoryEntry {
  name: string;
  ino: number;
  /** File type and permission bits; only the type is used by plain readdir. */
  mode: number;
  /** Offset of the entry after this one, passed back as `offset` by the next readdir. */
  nextOffset: number;
  /** Present in readdirplus replies, absent for plain readdir. */
  entry?: EntryReply;
}

export interface StatfsReply {
  blockSize: number;
  fragmentSize: number;
  blocks: number;
  blocksFree: number;
  blocksAvailable: number;
  files: number;
  filesFree: number;
  filesAvailable: number;
  nameMax: number;
}

export interface SetAttributesRequest {
  mode?: number;
  uid?: number;
  gid?: number;
  size?: number;
  /** Milliseconds since the epoch; `'now'` for UTIME_NOW. */
  atimeMs?: number | 'now';
  mtimeMs?: number | 'now';
  /** Handle when the request came from ftruncate or futimens. */
  fh?: number;
}

export interface RequestContext {
  uid: number;
  gid: number;
  pid: number;
}

/**
 * The bytes of a read: one buffer, or pieces in file order (views of cached
 * blocks, for example) that the adapter sends as one reply without joining
 * them. The adapter may send them after `read` has resolved, so they must not
 * change afterwards, except through a write request to the same bytes: such
 * a write raced the read anyway, and the reply may carry either version.
 */
export type ReadData = Buffer | readonly Buffer[];

/** Returns the number of bytes in `data`. */
export function readDataLength(data: ReadData): number {
  if (Buffer.isBuffer(data)) return data.length;
  let length = 0;
  for (const piece of data) length += piece.length;
  return length;
}

/** Returns `data` as one Buffer, copying only data in several pieces. */
export function joinReadData(data: ReadData): Buffer {
  if (Buffer.isBuffer(data)) return data;
  return data.length === 1 ? data[0]! : Buffer.concat(data);
}

/**
 * Operations of the low-level FUSE API, one method each. Methods that the
 * kernel expects no data from resolve to `void`.
 */
export interface FilesystemOperations {
  lookup(parent: number, name: string, context: RequestContext): Promise<EntryReply>;
  /** Never answered with an error: the kernel does not wait for forget. */
  forget(ino: number, lookups: number): void;
  getattr(ino: number, fh: number | undefined, context: RequestContext): Promise<AttributesReply>;
  setattr(ino: number, request: SetAttributesRequest, context: RequestContext): Promise<AttributesReply>;

  opendir(ino: number, flags: number, context: RequestContext): Promise<OpenReply>;
  /**
   * Entries starting after `offset` (0 for the first call); the adapter sends
   * as many as fit in `size` bytes and then calls `readdirAccepted` with the
   * ones the kernel received, so that readdirplus lookup counts stay exact.
   */
  readdir(ino: number, fh: number, offset: number, size: number, plus: boolean, context: RequestContext): Promise<DirectoryEntry[]>;
  /** Records that the kernel received these readdirplus entries (each one a lookup). */
  readdirAccepted(entries: DirectoryEntry[]): void;
  releasedir(ino: number, fh: number): Promise<void>;

  open(ino: number, flags: number, context: RequestContext): Promise<OpenReply>;
  read(ino: number, fh: number, offset: number, size: number, context: RequestContext): Promise<ReadData>;
  /** `data` is lent until the returned promise settles: the session reuses its memory for later writes, so keep a copy of what must last longer. */
  write(ino: number, fh: number, offset: number, data: Buffer, context: RequestContext): Promise<number>;
  /**
   * Flush, fsync and release may wait for an upload to finish. Each call of
   * `renewDeadline` restarts the request's --request-timeout deadline, so an
   * upload that keeps making progress is not cut off with ETIMEDOUT.
   */
  flush(ino: number, fh: number, context: RequestContext, renewDeadline?: () => void): Promise<void>;
  fsync(ino: number, fh: number, dataOnly: boolean, context: RequestContext, renewDeadline?: () => void): Promise<void>;
  release(ino: number, fh: number, flags: number, renewDeadline?: () => void): Promise<void>;

  create(parent: number, name: string, mode: number, flags: number, context: RequestContext): Promise<CreateReply>;
  mknod(parent: number, name: string, mode: number, rdev: number, context: RequestContext): Promise<EntryReply>;
  mkdir(parent: number, name: string, mode: number, context: RequestContext): Promise<EntryReply>;
  unlink(parent: number, name: string, context: RequestContext): Promise<void>;
  rmdir(parent: number, name: string, context: RequestContext): Promise<void>;
  rename(parent: number, name: string, newParent: number, newName: string, flags: number, context: RequestContext): Promise<void>;
  statfs(ino: number, context: RequestContext): Promise<StatfsReply>;
}
