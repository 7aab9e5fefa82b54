/**
 * Short-lived cache of object metadata, directory listings and negative
 * lookups for one mount.
 *
 * Entries expire `ttlMs` after they were stored, read from an injected clock.
 * A fresh listing of a directory also resolves lookups of its children: a
 * name in it exists. A name missing from it does not exist when the listing
 * was taken for readdir or by mkdir. A listing that the mount took on its own
 * to resolve lookups (see src/fs/directory.ts) resolves no missing name, so
 * that an object another client has just created is found by its first
 * lookup, as it would be without that listing. The mount's own changes
 * (create, upload, unlink, mkdir, rmdir, rename) update the entry and the
 * cached listing of its parent at once, so they are visible without waiting
 * for expiry. Other writers' changes show once the TTL has passed.
 *
 * Results of store requests are cached through a `MetadataFetch` token taken
 * before the request. A local change that happens while the request is in
 * flight would be missing from its result. A change to a child of a directory
 * being listed is therefore recorded and applied to the listing before it is
 * stored. Any other change marks the fetches it affects stale: their results
 * are returned to the callers but not cached. Only fetches of the changed
 * path, its parent, its ancestors' entries and (for `invalidateTree`) its
 * descendants are affected, so that a busy writer in one directory does not
 * keep other directories from being cached.
 *
 * Both maps are bounded LRUs: entries by count, listings by total number of
 * names, so that listing a huge directory cannot take unbounded memory.
 * Access is synchronous, so nothing interleaves inside one method.
 */

import { LRUCache } from 'lru-cache';

import { entryBoundedCache } from './entry-bounded-cache.js';
import type { ObjectInfo } from '../store/types.js';
import { baseNameOf, childPath, isSameOrDescendant, parentPathOf } from '../fs/names.js';

export type CachedEntry = { kind: 'file'; info: ObjectInfo } | { kind: 'directory' };

/** A cached lookup result: an entry, `'missing'` (negative), or undefined when nothing fresh is known. */
export type CachedLookup = CachedEntry | 'missing' | undefined;

/** A store request in flight whose result may be cached; see `beginFetch`. */
export interface MetadataFetch {
  readonly path: string;
  /**
   * `entry`: what the path is (HEAD and one-key listing). `listing`: the
   * entries of the directory at the path. `tree`: listings of directories
   * below the path, from one page of keys without a delimiter.
   */
  readonly kind: 'entry' | 'listing' | 'tree';
  /** Set by a local change that makes the result unsafe to cache. */
  stale: boolean;
  /** For a listing: local changes to its children during the fetch, by name, applied before it is stored. */
  readonly changes: Map<string, CachedEntry | 'missing'>;
}

interface Stamped<T> {
  value: T;
  expiresAtMs: number;
}

interface StampedListing extends Stamped<Map<string, CachedEntry>> {
  /** Whether a lookup of a name missing from the listing resolves as missing; see the file comment. */
  resolvesMissingNames: boolean;
}

/** Upper bounds that keep the cache small next to the block cache; each entry costs a few hundred bytes. */
const MAX_ENTRIES = 100_000;
const MAX_LISTED_NAMES = 500_000;

export interface MetadataCacheOptions {
  ttlMs: number;
  now: () => number;
}

export class MetadataCache {
  private readonly ttlMs: number;
  private readonly now: () => number;
  /** Fetches in flight, by path. */
  private readonly pending = new Map<string, Set<MetadataFetch>>();
  private readonly entries = entryBoundedCache<string, Stamped<CachedEntry | 'missing'>>(MAX_ENTRIES);
  private readonly listings = new LRUCache<string, StampedListing>({
    maxSize: MAX_LISTED_NAMES,
    sizeCalculation: (listing) => listing.value.size + 1,
  });

  constructor(options: MetadataCacheOptions) {
    this.ttlMs = options.ttlMs;
    this.now = options.now;
  }

  lookup(path: string): CachedLookup {
    const stamped = this.fresh(this.entries.get(path));
    if (stamped !== undefined) return stamped;

    if (path === '') return undefined;
    const stampedListing = this.listings.get(parentPathOf(path));
    const listing = this.fresh(stampedListing);
    if (listing === undefined) return undefined;
    return listing.get(baseNameOf(path)) ?? (stampedListing!.resolvesMissingNames ? 'missing' : undefined);
  }

  /**
   * Returns a fresh listing of a directory (names to entries), which callers
   * must not change. With `resolvesMissingNames`, only a listing taken for
   * readdir or by mkdir is returned.
   */
  listing(path: string, options: { resolvesMissingNames?: boolean } = {}): ReadonlyMap<string, CachedEntry> | undefined {
    const stamped = this.listings.get(path);
    if (options.resolvesMissingNames === true && stamped?.resolvesMissingNames !== true) return undefined;
    return this.fresh(stamped);
  }

  /**
   * Returns how to renew the fresh listing of a directory once half of its
   * TTL has passed (whether it resolves missing names), or undefined when
   * there is none or it is younger. Renewing a listing that is in use before
   * it expires spares the lookup that would find it expired a wait for a new
   * listing.
   */
  listingDueForRenewal(path: string): { resolvesMissingNames: boolean } | undefined {
    const stamped = this.listings.get(path);
    if (stamped === undefined || this.fresh(stamped) === undefined) return undefined;
    const ageMs = this.now() - (stamped.expiresAtMs - this.ttlMs);
    return ageMs >= this.ttlMs / 2 ? { resolvesMissingNames: stamped.resolvesMissingNames } : undefined;
  }

  /**
   * Registers a store request about `path` before it is sent. Every token
   * must be passed to `finishEntryFetch`, `finishListingFetch` or
   * `abandonFetch` once the request settles.
   */
  beginFetch(path: string, kind: MetadataFetch['kind']): MetadataFetch {
    const fetch: MetadataFetch = { path, kind, stale: false, changes: new Map() };
    let set = this.pending.get(path);
    if (set === undefined) {
      set = new Set();
      this.pending.set(path, set);
    }
    set.add(fetch);
    return fetch;
  }

  /** Ends a fetch whose request failed; nothing is stored. */
  abandonFetch(fetch: MetadataFetch): void {
    const set = this.pending.get(fetch.path);
    if (set === undefined) return;
    set.delete(fetch);
    if (set.size === 0) this.pending.delete(fetch.path);
  }

  /** Stores what a path is, as fetched from the store, unless a local change made the result stale. */
  finishEntryFetch(fetch: MetadataFetch, entry: CachedEntry | 'missing'): void {
    this.abandonFetch(fetch);
    if (this.ttlMs <= 0 || fetch.stale) return;
    this.entries.set(fetch.path, this.stamp(entry));
  }

  /**
   * Applies the local changes made during the fetch to a listing fetched from
   * the store, and stores it and its children's entries unless a change made
   * it stale. `resolvesMissingNames` is true for a listing taken for readdir
   * and false for one taken to resolve lookups. Returns the listing with the
   * changes applied. The cache may keep and later update it, so callers must
   * not change it.
   */
  finishListingFetch(fetch: MetadataFetch, listing: Map<string, CachedEntry>, resolvesMissingNames: boolean): ReadonlyMap<string, CachedEntry> {
    this.abandonFetch(fetch);
    for (const [name, change] of fetch.changes) applyChange(listing, name, change);
    if (this.ttlMs <= 0 || fetch.stale) return listing;

    this.listings.set(fetch.path, { ...this.stamp(listing), resolvesMissingNames });
    for (const [name, entry] of listing) {
      // A name changed during the fetch already has the entry of that change.
      if (!fetch.changes.has(name)) this.entries.set(childPath(fetch.path, name), this.stamp(entry));
    }
    return listing;
  }

  /**
   * Stores listings of directories below `fetch.path`, fetched as one page
   * of keys, unless a local change anywhere below that path made them stale.
   * Returns whether they were stored.
   */
  finishTreeFetch(fetch: MetadataFetch, listings: ReadonlyMap<string, Map<string, CachedEntry>>): boolean {
    this.abandonFetch(fetch);
    if (this.ttlMs <= 0 || fetch.stale) return false;

    for (const [path, listing] of listings) {
      this.listings.set(path, { ...this.stamp(listing), resolvesMissingNames: true });
      for (const [name, entry] of listing) this.entries.set(childPath(path, name), this.stamp(entry));
    }
    return true;
  }

  /** Records a local change: the path now contains `entry`. */
  storeEntry(path: string, entry: CachedEntry): void {
    this.notePendingChange(path, entry);
    this.updateParentListing(path, entry);
    if (this.ttlMs <= 0) return;
    this.entries.set(path, this.stamp(entry));
  }

  /**
   * Records that `path` is still a directory after a child of it was removed
   * or moved away through this mount, although the bucket may no longer show
   * it (see `BucketFilesystem.keepParentDirectory`). Only entry fetches of
   * the path in flight become stale, because a listing of it in flight has
   * already recorded the child's change.
   */
  keepDirectory(path: string): void {
    for (const fetch of this.pending.get(path) ?? []) {
      if (fetch.kind === 'entry') fetch.stale = true;
    }
    if (this.ttlMs <= 0) return;
    this.entries.set(path, this.stamp({ kind: 'directory' }));
  }

  /**
   * Records a local change: a directory was just created at `path` where no
   * key was seen, so it is empty and lookups of names in it need no request
   * until the TTL passes.
   */
  storeNewDirectory(path: string): void {
    this.storeEntry(path, { kind: 'directory' });
    if (this.ttlMs <= 0) return;
    this.listings.set(path, { ...this.stamp(new Map()), resolvesMissingNames: true });
  }

  /**
   * Restarts the TTL of the cached entry of the file at `path` when it
   * contains `version`, which the store has just served. An entry of another
   * version, or of no file, is left to expire. A listing of the parent is not
   * renewed, so a name that another client added next to the file still
   * shows within the TTL. So does a directory of the same name, which shadows
   * the file only once the cached entry is gone.
   */
  confirmFile(path: string, version: string): void {
    if (this.ttlMs <= 0 || version === '') return;

    const stamped = this.entries.get(path);
    if (stamped === undefined || stamped.value === 'missing' || stamped.value.kind !== 'file') return;
    if (stamped.value.info.version !== version) return;
    stamped.expiresAtMs = this.now() + this.ttlMs;
  }

  /** Records a local change: nothing is at the path any more. */
  storeMissing(path: string): void {
    this.notePendingChange(path, 'missing');
    this.updateParentListing(path, undefined);
    this.listings.delete(path);
    if (this.ttlMs <= 0) return;
    this.entries.set(path, this.stamp('missing'));
  }

  /** Forgets what is cached about one path, so that the next lookup requests it from the store. */
  invalidate(path: string): void {
    this.notePendingChange(path, undefined);
    this.entries.delete(path);
    this.listings.delete(path);
  }

  /** Forgets a path, everything below it, and the listing of its parent. */
  invalidateTree(path: string): void {
    this.notePendingChange(path, undefined);
    for (const [pendingPath, set] of this.pending) {
      if (!isSameOrDescendant(pendingPath, path)) continue;
      for (const fetch of set) fetch.stale = true;
    }

    for (const key of [...this.entries.keys()]) {
      if (isSameOrDescendant(key, path)) this.entries.delete(key);
    }
    for (const key of [...this.listings.keys()]) {
      if (isSameOrDescendant(key, path)) this.listings.delete(key);
    }
    if (path !== '') this.listings.delete(parentPathOf(path));
  }

  clear(): void {
    for (const set of this.pending.values()) {
      for (const fetch of set) fetch.stale = true;
    }
    this.entries.clear();
    this.listings.clear();
  }

  /**
   * Tells the fetches in flight that `path` changed to `change` (undefined:
   * to something unknown). A listing of the parent records the change. Every
   * other fetch of the path becomes stale, and so does every entry fetch of
   * an ancestor, because the change may create or remove an implicit
   * directory above it, and every tree fetch of an ancestor, because its
   * page may contain the path. Listings of further ancestors are kept: like the
   * cached listings that `updateParentListing` changes, they learn of an
   * implicit directory that appeared or vanished only when the TTL passes.
   */
  private notePendingChange(path: string, change: CachedEntry | 'missing' | undefined): void {
    if (this.pending.size === 0) return;

    for (const fetch of this.pending.get(path) ?? []) fetch.stale = true;
    if (path === '') return;

    const parent = parentPathOf(path);
    for (const fetch of this.pending.get(parent) ?? []) {
      if (fetch.kind !== 'listing' || change === undefined) fetch.stale = true;
      else fetch.changes.set(baseNameOf(path), change);
    }

    // A page of keys below an ancestor may contain the changed path.
    for (let ancestor = parent; ancestor !== ''; ) {
      ancestor = parentPathOf(ancestor);
      for (const fetch of this.pending.get(ancestor) ?? []) {
        if (fetch.kind !== 'listing') fetch.stale = true;
      }
    }
  }

  private updateParentListing(path: string, entry: CachedEntry | undefined): void {
    if (path === '') return;
    const stamped = this.listings.get(parentPathOf(path));
    if (stamped === undefined) return;
    applyChange(stamped.value, baseNameOf(path), entry ?? 'missing');
  }

  private stamp<T>(value: T): Stamped<T> {
    return { value, expiresAtMs: this.now() + this.ttlMs };
  }

  private fresh<T>(stamped: Stamped<T> | undefined): T | undefined {
    if (stamped === undefined || stamped.expiresAtMs <= this.now()) return undefined;
    return stamped.value;
  }
}

/** Applies a local change of the child `name` to a listing of its directory. */
function applyChange(listing: Map<string, CachedEntry>, name: string, change: CachedEntry | 'missing'): void {
  if (change === 'missing') {
    listing.delete(name);
  } else if (change.kind === 'file' && listing.get(name)?.kind === 'directory') {
    // A directory shadows a file of the same name, so a write of the file does not replace it.
  } else {
    listing.set(name, change);
  }
}
