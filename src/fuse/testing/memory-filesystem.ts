/**
 * A small in-memory `FilesystemOperations` for the FUSE adapter tests: a map
 * of inodes with file contents and directory children, plus counters of what
 * the kernel sent (request sizes, readdirplus batches, accepted entries).
 * It is test scaffolding, not a model of the bucket filesystem.
 */

import { Errno, FilesystemError } from '../../fs/errno.js';
import type {
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
} from '../types.js';
import { ROOT_INODE } from '../types.js';

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const CACHE_SECONDS = 1;

interface Node {
  ino: number;
  parent: number;
  mode: number;
  data: Buffer;
  children: Map<string, number> | undefined;
  mtimeMs: number;
}

/** Options that make single operations fail, hang or return data in another form. */
export interface MemoryFilesystemFaults {
  /** Names whose lookup never settles until `releaseHangingLookups` is called. */
  hangingLookups?: Set<string>;
  /** Names whose open rejects with EACCES. */
  deniedOpens?: Set<string>;
  /** Names whose open returns a direct I/O handle, so reads bypass the page cache. */
  directIoFiles?: Set<string>;
  /** Returns the bytes of each read as an array of pieces of this many bytes (the last one shorter). */
  readPieceBytes?: number;
  /**
   * Makes every flush take this long, like a close that waits for an
   * upload, calling its `renewDeadline` every `renewEveryMs` when set.
   */
  slowFlush?: { durationMs: number; renewEveryMs?: number };
  /** Makes every write wait this long before it copies the data, like a write that waits for an upload slot. */
  slowWriteMs?: number;
}

export class MemoryFilesystem implements FilesystemOperations {
  readonly readSizes: number[] = [];
  readonly writeSizes: number[] = [];
  /** The memory behind each write's data, to see which writes shared a buffer. */
  readonly writeMemory: ArrayBufferLike[] = [];
  readonly readdirBatches: { plus: boolean; offset: number; count: number }[] = [];
  readonly acceptedNames: string[] = [];
  readonly lookupsByIno = new Map<number, number>();

  readonly #nodes = new Map<number, Node>();
  readonly #faults: MemoryFilesystemFaults;
  readonly #hanging: ((reply: EntryReply) => void)[] = [];
  #nextIno = ROOT_INODE + 1;
  #nextHandle = 1;

  constructor(faults: MemoryFilesystemFaults = {}) {
    this.#faults = faults;
    this.#nodes.set(ROOT_INODE, { ino: ROOT_INODE, parent: ROOT_INODE, mode: S_IFDIR | 0o755, data: Buffer.alloc(0), children: new Map(), mtimeMs: Date.now() });
  }

  addFile(parent: number, name: string, data: Buffer, mode = 0o644): number {
    return this.#add(parent, name, { mode: S_IFREG | mode, data, children: undefined });
  }

  addDirectory(parent: number, name: string): number {
    return this.#add(parent, name, { mode: S_IFDIR | 0o755, data: Buffer.alloc(0), children: new Map() });
  }

  contentOf(parent: number, name: string): Buffer | undefined {
    const ino = this.#directory(parent).children!.get(name);
    return ino === undefined ? undefined : this.#nodes.get(ino)!.data;
  }

  /** Settles every hanging lookup with a valid entry, as a slow store finally would. */
  releaseHangingLookups(): number {
    const pending = this.#hanging.splice(0);
    for (const resolve of pending) resolve(this.#entry(this.#nodes.get(ROOT_INODE)!));
    return pending.length;
  }

  #add(parent: number, name: string, fields: Pick<Node, 'mode' | 'data' | 'children'>): number {
    const ino = this.#nextIno++;
    this.#nodes.set(ino, { ino, parent, mtimeMs: Date.now(), ...fields });
    this.#directory(parent).children!.set(name, ino);
    return ino;
  }

  #node(ino: number): Node {
    const node = this.#nodes.get(ino);
    if (node === undefined) throw new FilesystemError(Errno.ESTALE, `inode ${ino} is unknown`);
    return node;
  }

  #directory(ino: number): Node {
    const node = this.#node(ino);
    if (node.children === undefined) throw new FilesystemError(Errno.ENOTDIR, `inode ${ino} is not a directory`);
    return node;
  }

  #attributes(node: Node): AttributesReply {
    return {
      attr: {
        ino: node.ino,
        mode: node.mode,
        nlink: node.children === undefined ? 1 : 2,
        uid: 0,
        gid: 0,
        size: node.data.length,
        atimeMs: node.mtimeMs,
        mtimeMs: node.mtimeMs,
        ctimeMs: node.mtimeMs,
      },
      attrTimeout: CACHE_SECONDS,
    };
  }

  #entry(node: Node): EntryReply {
    return { ...this.#attributes(node), entryTimeout: CACHE_SECONDS };
  }

  #countLookup(ino: number): void {
    this.lookupsByIno.set(ino, (this.lookupsByIno.get(ino) ?? 0) + 1);
  }

  async lookup(parent: number, name: string): Promise<EntryReply> {
    if (this.#faults.hangingLookups?.has(name)) {
      return new Promise<EntryReply>((resolve) => this.#hanging.push(resolve));
    }
    const ino = this.#directory(parent).children!.get(name);
    if (ino === undefined) throw new FilesystemError(Errno.ENOENT, `${name} not found`, { expected: true });
    this.#countLookup(ino);
    return this.#entry(this.#node(ino));
  }

  forget(ino: number, lookups: number): void {
    this.lookupsByIno.set(ino, (this.lookupsByIno.get(ino) ?? 0) - lookups);
  }

  async getattr(ino: number): Promise<AttributesReply> {
    return this.#attributes(this.#node(ino));
  }

  async setattr(ino: number, request: SetAttributesRequest): Promise<AttributesReply> {
    const node = this.#node(ino);
    if (request.size !== undefined) {
      const resized = Buffer.alloc(request.size);
      node.data.copy(resized, 0, 0, Math.min(request.size, node.data.length));
      node.data = resized;
    }
    if (request.mode !== undefined) node.mode = (node.mode & ~0o7777) | (request.mode & 0o7777);
    return this.#attributes(node);
  }

  async opendir(ino: number): Promise<OpenReply> {
    this.#directory(ino);
    return { fh: this.#nextHandle++ };
  }

  async readdir(ino: number, _fh: number, offset: number, _size: number, plus: boolean): Promise<DirectoryEntry[]> {
    const directory = this.#directory(ino);
    const listing: [string, Node][] = [
      ['.', directory],
      ['..', this.#node(directory.parent)],
      ...[...directory.children!].map(([name, child]): [string, Node] => [name, this.#node(child)]),
    ];

    // Returns everything after `offset`: the adapter sends what fits and reports how much that was.
    const entries = listing.slice(offset).map(([name, node], index): DirectoryEntry => {
      const entry: DirectoryEntry = { name, ino: node.ino, mode: node.mode, nextOffset: offset + index + 1 };
      if (plus) entry.entry = this.#entry(node);
      return entry;
    });
    this.readdirBatches.push({ plus, offset, count: entries.length });
    return entries;
  }

  readdirAccepted(entries: DirectoryEntry[]): void {
    for (const entry of entries) {
      if (entry.name === '.' || entry.name === '..') continue;
      this.acceptedNames.push(entry.name);
      this.#countLookup(entry.ino);
    }
  }

  async releasedir(): Promise<void> {}

  async open(ino: number): Promise<OpenReply> {
    const node = this.#node(ino);
    const name = this.#nameOf(node);
    if (this.#faults.deniedOpens?.has(name)) throw new FilesystemError(Errno.EACCES, `open of ${name} is denied`);
    return { fh: this.#nextHandle++, directIo: this.#faults.directIoFiles?.has(name) ?? false };
  }

  async read(ino: number, _fh: number, offset: number, size: number): Promise<ReadData> {
    this.readSizes.push(size);
    const bytes = this.#node(ino).data.subarray(offset, offset + size);
    const pieceBytes = this.#faults.readPieceBytes;
    if (pieceBytes === undefined) return bytes;

    const pieces: Buffer[] = [];
    for (let start = 0; start < bytes.length; start += pieceBytes) pieces.push(bytes.subarray(start, start + pieceBytes));
    return pieces;
  }

  async write(ino: number, _fh: number, offset: number, data: Buffer): Promise<number> {
    this.writeSizes.push(data.length);
    this.writeMemory.push(data.buffer);
    if (this.#faults.slowWriteMs !== undefined) await new Promise((resolve) => setTimeout(resolve, this.#faults.slowWriteMs));
    const node = this.#node(ino);
    const end = offset + data.length;
    if (end > node.data.length) {
      const grown = Buffer.alloc(end);
      node.data.copy(grown);
      node.data = grown;
    }
    data.copy(node.data, offset);
    return data.length;
  }

  async flush(_ino: number, _fh: number, _context: RequestContext, renewDeadline?: () => void): Promise<void> {
    const slow = this.#faults.slowFlush;
    if (slow === undefined) return;

    const renewals = slow.renewEveryMs === undefined || renewDeadline === undefined ? undefined : setInterval(renewDeadline, slow.renewEveryMs);
    try {
      await new Promise((resolve) => setTimeout(resolve, slow.durationMs));
    } finally {
      clearInterval(renewals);
    }
  }
  async fsync(): Promise<void> {}
  async release(): Promise<void> {}

  async create(parent: number, name: string, mode: number): Promise<CreateReply> {
    const ino = this.addFile(parent, name, Buffer.alloc(0), mode & 0o7777);
    this.#countLookup(ino);
    return { entry: this.#entry(this.#node(ino)), open: { fh: this.#nextHandle++ } };
  }

  async mknod(): Promise<EntryReply> {
    throw new FilesystemError(Errno.EPERM, 'mknod is not supported');
  }

  async mkdir(parent: number, name: string): Promise<EntryReply> {
    const ino = this.addDirectory(parent, name);
    this.#countLookup(ino);
    return this.#entry(this.#node(ino));
  }

  async unlink(parent: number, name: string): Promise<void> {
    const directory = this.#directory(parent);
    if (!directory.children!.has(name)) throw new FilesystemError(Errno.ENOENT, `${name} not found`);
    directory.children!.delete(name);
  }

  async rmdir(parent: number, name: string): Promise<void> {
    const directory = this.#directory(parent);
    const ino = directory.children!.get(name);
    if (ino === undefined) throw new FilesystemError(Errno.ENOENT, `${name} not found`);
    if (this.#directory(ino).children!.size > 0) throw new FilesystemError(Errno.ENOTEMPTY, `${name} is not empty`, { expected: true });
    directory.children!.delete(name);
  }

  async rename(parent: number, name: string, newParent: number, newName: string): Promise<void> {
    const ino = this.#directory(parent).children!.get(name);
    if (ino === undefined) throw new FilesystemError(Errno.ENOENT, `${name} not found`);
    this.#directory(parent).children!.delete(name);
    this.#directory(newParent).children!.set(newName, ino);
    this.#node(ino).parent = newParent;
  }

  async statfs(): Promise<StatfsReply> {
    return { blockSize: 4096, fragmentSize: 4096, blocks: 1024, blocksFree: 512, blocksAvailable: 512, files: 100, filesFree: 50, filesAvailable: 50, nameMax: 255 };
  }

  #nameOf(node: Node): string {
    for (const [name, ino] of this.#node(node.parent).children ?? []) {
      if (ino === node.ino) return name;
    }
    return '';
  }
}
