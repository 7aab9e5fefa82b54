/**
 * The inode table of one mount: inode numbers, the path each one stands for,
 * and the kernel's lookup counts.
 *
 * Numbers are allocated from 2 upwards (1 is the root) and never reused within
 * a mount, so a number the kernel still has cannot come to mean another
 * file. The kernel takes one reference per successful lookup, create, mkdir,
 * mknod and accepted readdirplus entry, and returns them with forget. An inode
 * is dropped when it has no kernel references and no open handle.
 *
 * Concurrency: every method is synchronous, and JavaScript runs one callback
 * at a time, so each method sees and leaves the table consistent. Callers that
 * await a store request between reading and changing the table must look the
 * inode up again afterwards instead of trusting what they read before.
 *
 * Invariants between calls:
 * - `byPath` maps a path to the linked inode with that path, and every linked
 *   inode is in `byPath` under its `path`;
 * - an unlinked inode (removed or replaced) stays in `byIno` until its lookup
 *   count and open count are both 0, but no path leads to it;
 * - the root is always present and linked.
 */

import type { ObjectInfo } from '../store/types.js';
import { ROOT_INODE } from '../fuse/types.js';
import { Errno, FilesystemError } from './errno.js';
import { isSameOrDescendant, parentPathOf } from './names.js';

export type NodeKind = 'file' | 'directory';

/** Attribute changes (chmod, chown, utimens) kept in memory for the inode's lifetime and never stored. */
export interface AttributeOverrides {
  /** Permission bits only. */
  permissions?: number;
  uid?: number;
  gid?: number;
  atimeMs?: number;
  mtimeMs?: number;
}

export interface Inode {
  readonly ino: number;
  kind: NodeKind;
  /** Path inside the mount; '' for the root. Stale once `linked` is false. */
  path: string;
  linked: boolean;
  lookupCount: number;
  /** Open file and directory handles. */
  openCount: number;
  /** Open directory handles whose readdir snapshot contains this inode, which keeps its number while they are open. */
  listingCount: number;
  /** Object metadata of a file, as last seen in a listing, HEAD or upload. */
  info: ObjectInfo | undefined;
  /** Clock time when `info` was obtained. */
  infoFetchedAtMs: number;
  overrides: AttributeOverrides;
  /**
   * Object version whose pages the kernel's page cache may hold for this
   * inode, or undefined when it may hold pages of local writes or of more
   * than one version. An open of the same version keeps those pages.
   */
  pageCacheVersion: string | undefined;
}

export class InodeTable {
  /** Every inode the kernel may still name: linked ones and unlinked ones still referenced. */
  private readonly byIno = new Map<number, Inode>();
  /** Linked inodes by path. */
  private readonly byPath = new Map<string, Inode>();
  private nextIno = ROOT_INODE + 1;

  constructor() {
    const root: Inode = {
      ino: ROOT_INODE,
      kind: 'directory',
      path: '',
      linked: true,
      lookupCount: 1,
      openCount: 0,
      listingCount: 0,
      info: undefined,
      infoFetchedAtMs: 0,
      overrides: {},
      pageCacheVersion: undefined,
    };
    this.byIno.set(ROOT_INODE, root);
    this.byPath.set('', root);
  }

  get size(): number {
    return this.byIno.size;
  }

  get(ino: number): Inode | undefined {
    return this.byIno.get(ino);
  }

  /** Returns the inode or throws ESTALE, the errno for a number this mount has dropped or never issued. */
  require(ino: number): Inode {
    const inode = this.byIno.get(ino);
    if (inode === undefined) {
      throw new FilesystemError(Errno.ESTALE, `inode ${ino} is not known to this mount (it was forgotten or never existed)`);
    }
    return inode;
  }

  atPath(path: string): Inode | undefined {
    return this.byPath.get(path);
  }

  /**
   * Returns the linked inode for `path`, creating it when missing. An existing
   * inode of the other kind (a file that became a directory) is unlinked and
   * replaced. The lookup count is not changed.
   */
  remember(path: string, kind: NodeKind, info: ObjectInfo | undefined, nowMs: number): Inode {
    let inode = this.byPath.get(path);
    if (inode !== undefined && inode.kind !== kind) {
      this.unlink(path);
      inode = undefined;
    }

    if (inode === undefined) {
      inode = {
        ino: this.nextIno++,
        kind,
        path,
        linked: true,
        lookupCount: 0,
        openCount: 0,
        listingCount: 0,
        info: undefined,
        infoFetchedAtMs: 0,
        overrides: {},
        pageCacheVersion: undefined,
      };
      this.byIno.set(inode.ino, inode);
      this.byPath.set(path, inode);
    }

    if (info !== undefined) {
      inode.info = info;
      inode.infoFetchedAtMs = nowMs;
    }
    return inode;
  }

  addLookups(inode: Inode, count = 1): void {
    inode.lookupCount += count;
  }

  /** Returns kernel references; drops the inode when nothing refers to it any more. */
  forget(ino: number, count: number): void {
    const inode = this.byIno.get(ino);
    if (inode === undefined || ino === ROOT_INODE) return;
    inode.lookupCount = Math.max(0, inode.lookupCount - count);
    this.dropIfUnused(inode);
  }

  /** Holds the numbers of a readdir snapshot's entries until `unlisted`. */
  listed(inodes: readonly Inode[]): void {
    for (const inode of inodes) inode.listingCount += 1;
  }

  unlisted(inodes: readonly Inode[]): void {
    for (const inode of inodes) {
      inode.listingCount = Math.max(0, inode.listingCount - 1);
      this.dropIfUnused(inode);
    }
  }

  opened(inode: Inode): void {
    inode.openCount += 1;
  }

  closed(inode: Inode): void {
    inode.openCount = Math.max(0, inode.openCount - 1);
    this.dropIfUnused(inode);
  }

  /**
   * Drops an inode that neither the kernel, nor a handle, nor a directory
   * listing refers to. Inodes made only to number readdir entries are dropped
   * this way at releasedir unless the kernel took a reference on them.
   */
  dropIfUnused(inode: Inode): void {
    if (inode.ino === ROOT_INODE || inode.lookupCount > 0 || inode.openCount > 0 || inode.listingCount > 0) return;
    this.byIno.delete(inode.ino);
    if (inode.linked && this.byPath.get(inode.path) === inode) this.byPath.delete(inode.path);
    inode.linked = false;
  }

  /** Removes the path of an inode (unlink, rmdir, or a rename target replaced); the inode lives on while referenced. */
  unlink(path: string): void {
    const inode = this.byPath.get(path);
    if (inode === undefined || inode.ino === ROOT_INODE) return;

    this.byPath.delete(path);
    inode.linked = false;
    this.dropIfUnused(inode);

    // Inodes below a removed directory lose their paths too.
    if (inode.kind === 'directory') {
      for (const descendant of this.linkedBelow(path)) {
        this.byPath.delete(descendant.path);
        descendant.linked = false;
        this.dropIfUnused(descendant);
      }
    }
  }

  /** Moves an inode, and every inode below it, from one path to another; whatever was at the target is unlinked first. */
  move(fromPath: string, toPath: string): void {
    const moving = this.byPath.get(fromPath);
    const below = this.linkedBelow(fromPath);
    this.unlink(toPath);

    if (moving !== undefined) {
      this.byPath.delete(fromPath);
      moving.path = toPath;
      this.byPath.set(toPath, moving);
    }
    for (const descendant of below) {
      this.byPath.delete(descendant.path);
      descendant.path = toPath + descendant.path.slice(fromPath.length);
      this.byPath.set(descendant.path, descendant);
    }
  }

  /** Linked inodes strictly below a directory path. */
  linkedBelow(path: string): Inode[] {
    const found: Inode[] = [];
    for (const [candidatePath, inode] of this.byPath) {
      if (candidatePath !== path && isSameOrDescendant(candidatePath, path)) found.push(inode);
    }
    return found;
  }

  /** Inode number of a path's parent directory, for '..' entries; the root is its own parent. */
  parentInoOf(inode: Inode): number {
    if (inode.ino === ROOT_INODE) return ROOT_INODE;
    return this.byPath.get(parentPathOf(inode.path))?.ino ?? ROOT_INODE;
  }
}
