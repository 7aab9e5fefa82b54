/**
 * Short-lived cache of object metadata, directory listings and negative
 * lookups for one mount.
 *
 * Entries expire `ttlMs` after they were stored, read from an injected clock.
 * A fresh listing of a directory also resolves lookups of its children: a
 * name in it exists, and a name missing from it does not. The mount's own changes
 * (create, upload, unlink, mkdir, rmdir, rename) update the entry and the
 * cached listing of its parent at once, so they are visible without waiting
 * for expiry. Other writers' changes show once the TTL has passed.
 *
 * Both maps are bounded LRUs: entries by count, listings by total number of
 * names, so that listing a huge directory cannot take unbounded memory.
 * Access is synchronous, so nothing interleaves inside one method.
 */

import { LRUCache } from 'lru-cache';

import type { ObjectInfo } from '../store/types.js';
import { baseNameOf, isSameOrDescendant, parentPathOf } from '../fs/names.js';

export type CachedEntry = { kind: 'file'; info: ObjectInfo } | { kind: 'directory' };

/** A cached lookup result: an entry, `'missing'` (negative), or undefined when nothing fresh is known. */
export type CachedLookup = CachedEntry | 'missing' | undefined;

interface Stamped<T> {
  value: T;
  expiresAtMs: number;
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
  /**
   * Counts local changes. A listing or HEAD that started before a change may
   * have missed it, so its result is stored only when the count is unchanged.
   */
  private changeCount = 0;
  private readonly entries = new LRUCache<string, Stamped<CachedEntry | 'missing'>>({ max: MAX_ENTRIES });
  private readonly listings = new LRUCache<string, Stamped<Map<string, CachedEntry>>>({
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
    const listing = this.listing(parentPathOf(path));
    if (listing === undefined) return undefined;
    return listing.get(baseNameOf(path)) ?? 'missing';
  }

  /** Returns a fresh listing of a directory (names to entries), which callers must not change. */
  listing(path: string): ReadonlyMap<string, CachedEntry> | undefined {
    return this.fresh(this.listings.get(path));
  }

  /** Value to pass back to the `store...Fetched` methods after a store request. */
  get generation(): number {
    return this.changeCount;
  }

  /** Stores a listing fetched from the store, unless a local change happened since `generation`. */
  storeFetchedListing(path: string, listing: Map<string, CachedEntry>, generation: number): void {
    if (this.ttlMs <= 0 || generation !== this.changeCount) return;
    this.listings.set(path, this.stamp(listing));
  }

  /** Stores a lookup result fetched from the store, unless a local change happened since `generation`. */
  storeFetchedEntry(path: string, entry: CachedEntry | 'missing', generation: number): void {
    if (this.ttlMs <= 0 || generation !== this.changeCount) return;
    this.entries.set(path, this.stamp(entry));
  }

  /** Records a local change: the path now contains `entry`. */
  storeEntry(path: string, entry: CachedEntry): void {
    this.changeCount += 1;
    this.updateParentListing(path, entry);
    if (this.ttlMs <= 0) return;
    this.entries.set(path, this.stamp(entry));
  }

  /** Records a local change: nothing is at the path any more. */
  storeMissing(path: string): void {
    this.changeCount += 1;
    this.updateParentListing(path, undefined);
    this.listings.delete(path);
    if (this.ttlMs <= 0) return;
    this.entries.set(path, this.stamp('missing'));
  }

  /** Forgets what is cached about one path, so that the next lookup requests it from the store. */
  invalidate(path: string): void {
    this.changeCount += 1;
    this.entries.delete(path);
    this.listings.delete(path);
  }

  /** Forgets a path, everything below it, and the listing of its parent. */
  invalidateTree(path: string): void {
    this.changeCount += 1;
    for (const key of [...this.entries.keys()]) {
      if (isSameOrDescendant(key, path)) this.entries.delete(key);
    }
    for (const key of [...this.listings.keys()]) {
      if (isSameOrDescendant(key, path)) this.listings.delete(key);
    }
    if (path !== '') this.listings.delete(parentPathOf(path));
  }

  clear(): void {
    this.entries.clear();
    this.listings.clear();
  }

  private updateParentListing(path: string, entry: CachedEntry | undefined): void {
    if (path === '') return;
    const stamped = this.listings.get(parentPathOf(path));
    if (stamped === undefined) return;

    const name = baseNameOf(path);
    if (entry === undefined) {
      stamped.value.delete(name);
    } else if (entry.kind === 'file' && stamped.value.get(name)?.kind === 'directory') {
      // A directory shadows a file of the same name, so a write of the file does not replace it.
    } else {
      stamped.value.set(name, entry);
    }
  }

  private stamp<T>(value: T): Stamped<T> {
    return { value, expiresAtMs: this.now() + this.ttlMs };
  }

  private fresh<T>(stamped: Stamped<T> | undefined): T | undefined {
    if (stamped === undefined || stamped.expiresAtMs <= this.now()) return undefined;
    return stamped.value;
  }
}
