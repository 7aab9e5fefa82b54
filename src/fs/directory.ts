/**
 * The directory model: how keys of a flat bucket become directories and files.
 *
 * - A directory exists when its marker object `dir/` exists (whatever its
 *   body) or when any key starts with `dir/` (an implicit directory).
 * - When both an object `a` and keys under `a/` exist, `a` is a directory and
 *   the object is shadowed: it cannot be opened through the mount.
 * - A key with a segment that is not a valid file name (empty from `//`, `.`,
 *   `..`, over 255 bytes, containing NUL) is skipped, so that no path reaches
 *   two keys and nothing outside the mounted prefix is reachable. Skips are
 *   logged per key at debug and counted per listing at info.
 *
 * Listings use the delimiter '/' and follow continuation tokens to the end.
 * Concurrent listings of one directory share one series of requests.
 *
 * A lookup that the cache cannot resolve sends a HEAD of the file key and a
 * one-key listing of the directory prefix in parallel. When both exist, the
 * directory wins. But when the lookup comes within the metadata TTL of a
 * lookup of another name in the same directory, a program is walking that
 * directory (opening its files one after another), so the directory is
 * listed instead, and the listing resolves lookups of the names it contains
 * until the TTL passes. A name missing from such a listing is still looked up with
 * a HEAD and a one-key listing, so that an object that another client has
 * just created is found at once (see src/cache/metadata-cache.ts). A listing
 * for lookups stops after `LOOKUP_LISTING_MAX_PAGES` pages. Lookups in a
 * directory that has more use HEADs and one-key listings for
 * `LARGE_DIRECTORY_RETRY_MS`.
 *
 * While lookups walk a directory, its cached listing is renewed in the
 * background once half of its TTL has passed, within the same page limit, so
 * that the walk does not stall on a new listing each time the TTL runs out.
 * A renewed listing resolves missing names when the one it replaces did (a
 * listing from readdir or mkdir), because what it shows is still at most one
 * TTL old.
 *
 * A program that walks a tree (find, du, os.walk) lists one sibling
 * directory after another. When readdir misses the cache within the TTL of a
 * readdir of a sibling, the parent's keys are listed without a delimiter,
 * one page starting at the directory's own keys. That page contains the
 * whole contents of the directory and of the next siblings (and their
 * subdirectories) whose keys it covers, and each of those gets its cached
 * listing from it, so one request replaces a listing per directory. A page
 * that starts at a given key needs no page before it, so the walk then
 * requests up to `TREE_PAGES_AHEAD` pages at once. Each starts at the sibling
 * where the one before is expected to end, as many siblings apart as the last
 * page covered. The start points come from the parent's cached listing. A sibling
 * that no page covered (its siblings were larger than expected) gets a page
 * of its own when the walk reaches it. When the directory alone has more keys
 * than a page, it is listed as usual, and its siblings are listed one by one
 * for `LARGE_DIRECTORY_RETRY_MS`.
 */

import type { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';

import { entryBoundedCache } from '../cache/entry-bounded-cache.js';
import type { ListPage, ObjectInfo, ObjectStore } from '../store/types.js';
import { NotFoundError } from '../store/errors.js';
import type { CachedEntry, MetadataCache, MetadataFetch } from '../cache/metadata-cache.js';
import { baseNameOf, childPath, invalidNameReason, parentPathOf, type KeyMapper } from './names.js';

/**
 * Pages that a listing started by lookups may fetch. Each page (1,000 keys on
 * S3 and GCS) replaces up to a thousand HEAD-and-list pairs, and four pages
 * bound what a lookup in a huge directory may cost before it falls back.
 */
export const LOOKUP_LISTING_MAX_PAGES = 4;

/** How long a directory that had more than `LOOKUP_LISTING_MAX_PAGES` pages is not listed for lookups. */
export const LARGE_DIRECTORY_RETRY_MS = 60_000;

/** Directories whose last lookup is remembered; the least recently used are forgotten first. */
const TRACKED_DIRECTORIES = 10_000;

/** Listings of directories found complete in one page of keys listed without a delimiter, by path. */
type TreeListings = Map<string, Map<string, CachedEntry>>;

/** Maximum tree walks tracked at once. A new walk beyond it drops the least recently used one. */
const MAX_TREE_WALKS = 16;

/**
 * Maximum pages of keys that one tree walk has in flight. A page that starts
 * at a given key needs no earlier page, so pages ahead run in parallel. An
 * estimate from one 2-core VM: the 10,000 keys of 100 directories of 100
 * objects on MinIO, page cache dropped, took about 780 ms to list with four
 * pages at once and 950 ms one page after another.
 */
export const TREE_PAGES_AHEAD = 4;

/** A page of a parent's keys in flight for a tree walk. */
interface PendingTreePage {
  /** Index of the child directory whose keys the page starts at. */
  startIndex: number;
  /** Index of the first child directory the page is not expected to cover completely. */
  expectedEndIndex: number;
  /** Settles once the page's listings are cached, or the request failed. */
  done: Promise<void>;
}

/** A walk through the children of one directory. */
interface TreeWalk {
  /** The parent's child directories in name order, from its listing when the walk started. */
  directories: string[];
  /** Number of child directories that the last truncated page covered completely, used as the distance between pages ahead. */
  spacing: number;
  /** Index of the first child directory that no page requested so far starts at or is expected to cover. */
  frontier: number;
  /** Index of the child directory the walk reached last. */
  position: number;
  /** Pages in flight, by start index. */
  pages: Map<number, PendingTreePage>;
  lastUsedMs: number;
}

/** The last lookup in a directory, which decides whether the next one lists it. */
interface LookupActivity {
  name: string;
  atMs: number;
}

/** A listing in flight, shared by the callers that need it. */
interface ListingInFlight {
  /** Undefined when the directory had more pages than `maxPages`. */
  promise: Promise<ReadonlyMap<string, CachedEntry> | undefined>;
  maxPages: number;
  resolvesMissingNames: boolean;
}

export interface DirectoryModelOptions {
  store: ObjectStore;
  keys: KeyMapper;
  cache: MetadataCache;
  logger: Logger;
  /** Aborted at shutdown. */
  signal: AbortSignal;
  /** Lifetime of cached metadata; lookups closer together than this in one directory list it. */
  metadataTtlMs: number;
  /** Milliseconds since the epoch, from the filesystem's clock. */
  now: () => number;
}

export class DirectoryModel {
  private readonly store: ObjectStore;
  private readonly keys: KeyMapper;
  private readonly cache: MetadataCache;
  private readonly logger: Logger;
  private readonly signal: AbortSignal;
  private readonly metadataTtlMs: number;
  private readonly now: () => number;
  private readonly listingsInFlight = new Map<string, ListingInFlight>();
  /** The last lookup in each recently used directory, by directory path. */
  private readonly lookupActivity = entryBoundedCache<string, LookupActivity>(TRACKED_DIRECTORIES);
  /** Directories with more than `LOOKUP_LISTING_MAX_PAGES` pages, with the time until which they are not listed for lookups. */
  private readonly largeDirectories = entryBoundedCache<string, number>(TRACKED_DIRECTORIES);
  /** The last child listed for readdir in each recently used directory, by directory path. */
  private readonly readdirActivity = entryBoundedCache<string, LookupActivity>(TRACKED_DIRECTORIES);
  /** Directories with a child too large for one page of keys, with the time until which their children are listed one by one. */
  private readonly deepDirectories = entryBoundedCache<string, number>(TRACKED_DIRECTORIES);
  /** Tree walks, by the path of the directory whose children are walked, least recently used first. */
  private readonly treeWalks = new Map<string, TreeWalk>();
  /** Keys skipped because they cannot be paths, over the life of the mount. */
  skippedKeyCount = 0;

  constructor(options: DirectoryModelOptions) {
    this.store = options.store;
    this.keys = options.keys;
    this.cache = options.cache;
    this.logger = options.logger;
    this.signal = options.signal;
    this.metadataTtlMs = options.metadataTtlMs;
    this.now = options.now;
  }

  /**
   * Returns the entries of a directory for readdir, from a fresh cached
   * listing or by listing every page. A listing taken for lookups is not
   * reused, because it does not resolve missing names.
   */
  async list(path: string): Promise<ReadonlyMap<string, CachedEntry>> {
    const walking = this.recordReaddir(path);
    const cached = this.cache.listing(path, { resolvesMissingNames: true });
    if (cached !== undefined) return cached;

    if (walking && !this.listingsInFlight.has(path)) {
      const listed = await this.listWithSiblings(path);
      if (listed !== undefined) return listed;
    }

    // A bounded listing in flight (the first page that `prefetch` requested) serves this readdir
    // when the directory fits in it. When it does not, or fails, this readdir lists every page.
    const inFlight = this.listingsInFlight.get(path);
    if (inFlight !== undefined && inFlight.resolvesMissingNames && inFlight.maxPages !== Number.POSITIVE_INFINITY) {
      const bounded = await inFlight.promise.catch(() => undefined);
      if (bounded !== undefined) return bounded;
    }

    // A listing without a page limit always completes.
    const listing = await this.sharedListing(path, Number.POSITIVE_INFINITY, true);
    return listing!;
  }

  /**
   * Records a readdir of `path`, and returns whether a cache miss should list
   * it together with its next siblings: when another child of its parent was
   * listed within the TTL and no child there was too large for one page.
   */
  private recordReaddir(path: string): boolean {
    if (path === '') return false;

    return this.followsAnotherName(this.readdirActivity, this.deepDirectories, parentPathOf(path), baseNameOf(path));
  }

  /**
   * Lists pages of the parent's keys without a delimiter for a tree walk
   * that reached `path`, and caches the listing of every directory that a
   * page covers completely. Waits for a page requested ahead when one is
   * expected to cover `path`, otherwise requests one that starts at the keys
   * of `path`. Returns the listing of `path`, or undefined when no page covers
   * it, the listing could not be cached, or the request failed (the caller
   * then lists `path` as usual).
   */
  private async listWithSiblings(path: string): Promise<ReadonlyMap<string, CachedEntry> | undefined> {
    const parent = parentPathOf(path);
    const walk = this.treeWalkOf(parent);
    const index = walk === undefined ? -1 : sortedIndexOf(walk.directories, baseNameOf(path));
    if (walk !== undefined && index >= 0) {
      walk.position = index;
      walk.lastUsedMs = this.now();

      const ahead = [...walk.pages.values()].find((page) => page.startIndex <= index && index < page.expectedEndIndex);
      if (ahead !== undefined) {
        await ahead.done;
        const cached = this.cache.listing(path, { resolvesMissingNames: true });
        if (cached !== undefined) {
          this.extendTreeWalk(parent, walk);
          return cached;
        }
      }
    }

    const listings = await this.requestTreePage(parent, path, walk, index, index + 1);
    if (listings === undefined) return undefined;
    const listing = listings.get(path);
    if (listing === undefined) {
      this.deepDirectories.set(parent, this.now() + LARGE_DIRECTORY_RETRY_MS);
      this.logger.debug(
        { bucket: this.store.bucket, prefix: this.keys.directoryPrefix(path), retryMs: LARGE_DIRECTORY_RETRY_MS },
        'directory has more keys than one page; listing its siblings one by one',
      );
    }
    return listing;
  }

  /**
   * Returns the walk through the children of `parent`, continuing one used
   * within the TTL or starting one from the parent's cached listing, whose
   * child directories give the points where pages ahead start. Returns
   * undefined when the parent's listing is not cached: its children are then
   * listed one page at a time, as they are reached.
   */
  private treeWalkOf(parent: string): TreeWalk | undefined {
    const existing = this.treeWalks.get(parent);
    if (existing !== undefined && this.now() - existing.lastUsedMs < this.metadataTtlMs) {
      // Most recently used last, so that the oldest walk is the one dropped.
      this.treeWalks.delete(parent);
      this.treeWalks.set(parent, existing);
      return existing;
    }
    this.treeWalks.delete(parent);

    const parentListing = this.cache.listing(parent);
    if (parentListing === undefined) return undefined;
    const directories = [...parentListing].filter(([, entry]) => entry.kind === 'directory').map(([name]) => name);

    if (this.treeWalks.size >= MAX_TREE_WALKS) this.treeWalks.delete(this.treeWalks.keys().next().value!);
    const walk: TreeWalk = { directories, spacing: 1, frontier: 0, position: 0, pages: new Map(), lastUsedMs: this.now() };
    this.treeWalks.set(parent, walk);
    return walk;
  }

  /**
   * Requests pages ahead of the walk's position, each starting where the
   * pages before it are expected to end, so that up to `TREE_PAGES_AHEAD`
   * pages are on their way while the program reads the directories already
   * listed. Pages go at most that many pages' worth of directories past the
   * position, so a walk that stops leaves little listed for nothing.
   */
  private extendTreeWalk(parent: string, walk: TreeWalk): void {
    if (this.signal.aborted || this.treeWalks.get(parent) !== walk) return;

    const limit = Math.min(walk.directories.length, walk.position + 1 + TREE_PAGES_AHEAD * walk.spacing);
    while (walk.pages.size < TREE_PAGES_AHEAD && walk.frontier < limit) {
      const startIndex = walk.frontier;
      const path = childPath(parent, walk.directories[startIndex]!);
      void this.requestTreePage(parent, path, walk, startIndex, startIndex + walk.spacing);
    }
  }

  /**
   * Requests one page of the parent's keys, starting at the keys of `path`,
   * and caches the listing of every directory it covers completely. With a
   * walk, the page is registered as covering the child directories from
   * `startIndex` to before `expectedEndIndex` until it arrives, and its
   * arrival moves the walk on. The page is registered, and the walk's
   * frontier moved past it, before the first await: `extendTreeWalk` relies
   * on that to end its loop. Returns the listings, or undefined when the
   * request failed or a local change kept them out of the cache.
   */
  private async requestTreePage(parent: string, path: string, walk: TreeWalk | undefined, startIndex: number, expectedEndIndex: number): Promise<TreeListings | undefined> {
    const parentPrefix = this.keys.directoryPrefix(parent);
    // The directory's prefix without its '/': keys of siblings that sort after it come along.
    const startAfter = this.keys.directoryPrefix(path).slice(0, -1);
    // Taken before the request, so that a local change from now on keeps this page out of the cache.
    const fetch = this.cache.beginFetch(parent, 'tree');

    const request = (async (): Promise<TreeListings | undefined> => {
      let page: ListPage;
      try {
        page = await this.store.list({ prefix: parentPrefix, startAfter, signal: this.signal });
      } catch (error) {
        this.cache.abandonFetch(fetch);
        this.logger.debug({ bucket: this.store.bucket, prefix: parentPrefix, startAfter, err: error }, 'listing a page of keys for a tree walk failed; the directories it would have covered are listed when readdir reaches them');
        return undefined;
      }

      const truncated = page.nextToken !== undefined;
      const listings = this.listingsFromPage(parent, parentPrefix, page.objects, truncated);
      if (walk !== undefined && startIndex >= 0) this.advanceTreeWalk(parent, walk, listings, startIndex, truncated);
      return this.cache.finishTreeFetch(fetch, listings) ? listings : undefined;
    })();

    if (walk === undefined || startIndex < 0) return request;

    const pending: PendingTreePage = { startIndex, expectedEndIndex, done: request.then(() => undefined) };
    walk.pages.set(startIndex, pending);
    walk.frontier = Math.max(walk.frontier, expectedEndIndex);
    const listings = await request;
    if (walk.pages.get(startIndex) === pending) walk.pages.delete(startIndex);
    this.extendTreeWalk(parent, walk);
    return listings;
  }

  /**
   * Records what a page that started at child directory `startIndex`
   * covered: the walk's next page starts after the last child directory it
   * contains completely, and pages ahead are spaced by as many directories.
   * A page that contains no child directory completely ends the walk.
   */
  private advanceTreeWalk(parent: string, walk: TreeWalk, listings: TreeListings, startIndex: number, truncated: boolean): void {
    if (!truncated) {
      walk.frontier = walk.directories.length;
      return;
    }

    let lastComplete: string | undefined;
    for (const path of listings.keys()) {
      if (parentPathOf(path) !== parent) continue;
      const name = baseNameOf(path);
      if (lastComplete === undefined || name > lastComplete) lastComplete = name;
    }
    if (lastComplete === undefined) {
      // A child directory has more keys than a page, so each page ahead would contain only part of one directory.
      if (this.treeWalks.get(parent) === walk) this.treeWalks.delete(parent);
      return;
    }

    // The first child directory after the last complete one: where the page was cut.
    const cutIndex = sortedInsertionIndex(walk.directories, lastComplete, true);
    walk.frontier = Math.max(walk.frontier, cutIndex);
    walk.spacing = Math.max(1, cutIndex - startIndex);
  }

  /**
   * Builds the listing of every directory below `parent` whose keys all lie
   * in one page of keys listed without a delimiter. Each key names its
   * directories one segment at a time, and a segment that is not a valid
   * name hides the key from that level down, as a delimited listing would.
   */
  private listingsFromPage(parent: string, parentPrefix: string, objects: readonly ObjectInfo[], truncated: boolean): TreeListings {
    const listings: TreeListings = new Map();
    const lastKey = objects.at(-1)?.key ?? '';

    for (const info of objects) {
      const segments = info.key.slice(parentPrefix.length).split('/');
      // The first segment names a child of the parent, whose own listing this page does not give.
      if (segments.length < 2 || invalidNameReason(segments[0]!) !== undefined) continue;

      let directory = childPath(parent, segments[0]!);
      let directoryPrefix = `${parentPrefix}${segments[0]!}/`;
      for (let index = 1; index < segments.length; index += 1) {
        // Keys of a directory sort together, so the last key of a truncated page may cut only the directory it is in.
        if (truncated && lastKey.startsWith(directoryPrefix)) break;

        let listing = listings.get(directory);
        if (listing === undefined) {
          listing = new Map();
          listings.set(directory, listing);
        }

        const name = segments[index]!;
        const isFile = index === segments.length - 1;
        // A key ending in '/' is the marker of its directory, not an entry of it.
        if (isFile && name === '') break;
        if (invalidNameReason(name) !== undefined) {
          this.logger.debug({ bucket: this.store.bucket, key: info.key, name }, 'skipped a key that cannot be a file name while listing a tree');
          break;
        }

        if (isFile) {
          // A directory shadows a file of the same name.
          if (listing.get(name)?.kind !== 'directory') listing.set(name, { kind: 'file', info });
          break;
        }
        listing.set(name, { kind: 'directory' });
        directory = childPath(directory, name);
        directoryPrefix = `${directoryPrefix}${name}/`;
      }
    }

    // In name order, as a delimited listing gives them ('a-b' sorts before 'a/' among keys, after 'a' among names).
    for (const [path, listing] of listings) {
      listings.set(path, new Map([...listing.keys()].sort().map((name) => [name, listing.get(name)!])));
    }
    return listings;
  }

  /**
   * Lists up to `maxPages` pages of a directory into the cache, as readdir
   * would, so that a later readdir within the TTL, or one that arrives
   * meanwhile, uses that listing. A directory with more pages is left for
   * readdir to list. Store errors are thrown.
   */
  async prefetch(path: string, maxPages: number): Promise<void> {
    if (this.cache.listing(path, { resolvesMissingNames: true }) !== undefined) return;
    await this.sharedListing(path, maxPages, true);
  }

  /**
   * Returns the listing in flight for `path` when it can serve a caller that
   * accepts `maxPages`, or starts one that is stored as resolving missing
   * names or not (see the file comment). A listing bounded below
   * `maxPages` cannot serve: it may give up where this caller must go on.
   */
  private sharedListing(path: string, maxPages: number, resolvesMissingNames: boolean): Promise<ReadonlyMap<string, CachedEntry> | undefined> {
    const inFlight = this.listingsInFlight.get(path);
    if (inFlight !== undefined && inFlight.maxPages >= maxPages) return inFlight.promise;

    const promise = this.fetchListing(path, maxPages, resolvesMissingNames).finally(() => {
      if (this.listingsInFlight.get(path)?.promise === promise) this.listingsInFlight.delete(path);
    });
    this.listingsInFlight.set(path, { promise, maxPages, resolvesMissingNames });
    return promise;
  }

  /** Lists a directory page by page; returns undefined, storing nothing, when it has more than `maxPages` pages. */
  private async fetchListing(path: string, maxPages: number, resolvesMissingNames: boolean): Promise<ReadonlyMap<string, CachedEntry> | undefined> {
    const fetch = this.cache.beginFetch(path, 'listing');
    try {
      const directoryPrefix = this.keys.directoryPrefix(path);
      const files = new Map<string, ObjectInfo>();
      const directories = new Set<string>();
      let skipped = 0;
      let continuationToken: string | undefined;
      let pages = 0;

      do {
        if (pages === maxPages) {
          this.cache.abandonFetch(fetch);
          return undefined;
        }
        const page = await this.store.list({ prefix: directoryPrefix, delimiter: '/', continuationToken, signal: this.signal });
        pages += 1;

        for (const info of page.objects) {
          // The directory's own marker is not an entry of it.
          if (info.key === directoryPrefix) continue;

          const name = info.key.slice(directoryPrefix.length);
          if (this.skipInvalid(name, info.key)) {
            skipped += 1;
            continue;
          }
          files.set(name, info);
        }

        for (const prefix of page.prefixes) {
          const name = prefix.slice(directoryPrefix.length, -1);
          if (this.skipInvalid(name, prefix)) {
            skipped += 1;
            continue;
          }
          directories.add(name);
        }

        continuationToken = page.nextToken;
      } while (continuationToken !== undefined);

      if (skipped > 0) {
        this.skippedKeyCount += skipped;
        this.logger.info({ bucket: this.store.bucket, prefix: directoryPrefix, skipped }, 'skipped keys that cannot be file names while listing a directory');
      }

      const listing = new Map<string, CachedEntry>();
      const names = [...new Set([...files.keys(), ...directories])].sort();
      for (const name of names) {
        // A directory shadows a file of the same name.
        if (directories.has(name)) {
          listing.set(name, { kind: 'directory' });
        } else {
          listing.set(name, { kind: 'file', info: files.get(name)! });
        }
      }
      return this.cache.finishListingFetch(fetch, listing, resolvesMissingNames);
    } catch (error) {
      this.cache.abandonFetch(fetch);
      throw error;
    }
  }

  /**
   * Finds what a path is: from the cache when fresh, from a listing of its
   * directory when lookups there come in quick succession, otherwise with a
   * HEAD and a one-key listing in parallel.
   */
  async resolve(path: string): Promise<CachedEntry | 'missing'> {
    if (path === '') return { kind: 'directory' };

    const parent = parentPathOf(path);
    const listParent = this.recordLookup(parent, baseNameOf(path));
    if (listParent) this.renewListingAhead(parent);

    const cached = this.cache.lookup(path);
    if (cached !== undefined) return cached;

    // Keys listed under the path's prefix make it a directory, whatever else has its name.
    if ((this.cache.listing(path)?.size ?? 0) > 0) return { kind: 'directory' };

    if (listParent) {
      const listed = (await this.listForLookups(parent))?.get(baseNameOf(path));
      if (listed !== undefined) return listed;
    }

    const fetch = this.cache.beginFetch(path, 'entry');
    let result: CachedEntry | 'missing';
    try {
      const [info, isDirectory] = await Promise.all([this.headFile(path), this.directoryExists(path)]);
      if (isDirectory) {
        result = { kind: 'directory' };
      } else if (info !== undefined) {
        result = { kind: 'file', info };
      } else {
        result = 'missing';
      }
    } catch (error) {
      this.cache.abandonFetch(fetch);
      throw error;
    }

    this.cache.finishEntryFetch(fetch, result);
    return result;
  }

  /**
   * Records a lookup of `name` in the directory `parent`, and returns whether
   * a cache miss should list the directory: when another name there was
   * looked up within the TTL and the directory is not known to be too large.
   * Repeated lookups of one name (a program polling a file) do not count.
   */
  private recordLookup(parent: string, name: string): boolean {
    return this.followsAnotherName(this.lookupActivity, this.largeDirectories, parent, name);
  }

  /**
   * Records in `activity` that `name` in the directory `parent` was just
   * used, and returns whether another name there was used within the TTL,
   * unless `pausedUntilMs` has a time still to come for `parent`.
   */
  private followsAnotherName(
    activity: Pick<LRUCache<string, LookupActivity>, 'get' | 'set'>,
    pausedUntilMs: Pick<LRUCache<string, number>, 'get'>,
    parent: string,
    name: string,
  ): boolean {
    const nowMs = this.now();
    const previous = activity.get(parent);
    activity.set(parent, { name, atMs: nowMs });

    if (previous === undefined || previous.name === name || nowMs - previous.atMs >= this.metadataTtlMs) return false;
    const untilMs = pausedUntilMs.get(parent);
    return untilMs === undefined || untilMs <= nowMs;
  }

  /** Lists a directory for lookups, at most `LOOKUP_LISTING_MAX_PAGES` pages; undefined when it has more. */
  private async listForLookups(path: string): Promise<ReadonlyMap<string, CachedEntry> | undefined> {
    const cached = this.cache.listing(path);
    if (cached !== undefined) return cached;

    const listing = await this.sharedListing(path, LOOKUP_LISTING_MAX_PAGES, false);
    if (listing === undefined) this.markLarge(path);
    return listing;
  }

  /** Starts a background listing that replaces the cached listing of `path` when half of its TTL has passed. */
  private renewListingAhead(path: string): void {
    const renewal = this.cache.listingDueForRenewal(path);
    if (renewal === undefined || this.listingsInFlight.has(path) || this.signal.aborted) return;

    this.sharedListing(path, LOOKUP_LISTING_MAX_PAGES, renewal.resolvesMissingNames).then(
      (listing) => {
        if (listing === undefined) this.markLarge(path);
      },
      (error: unknown) => {
        // The next lookup that needs the listing lists again, or sends a HEAD, and reports its own error.
        this.logger.debug({ bucket: this.store.bucket, prefix: this.keys.directoryPrefix(path), err: error }, 'renewing a directory listing in the background failed');
      },
    );
  }

  private markLarge(path: string): void {
    const nowMs = this.now();
    // Lookups that shared one listing all report it; the first one sets the retry time.
    if ((this.largeDirectories.get(path) ?? 0) > nowMs) return;
    this.largeDirectories.set(path, nowMs + LARGE_DIRECTORY_RETRY_MS);
    this.logger.debug(
      { bucket: this.store.bucket, prefix: this.keys.directoryPrefix(path), maxPages: LOOKUP_LISTING_MAX_PAGES, retryMs: LARGE_DIRECTORY_RETRY_MS },
      'directory has more entries than a listing for lookups fetches; looking up its names one by one',
    );
  }

  /** Returns the current metadata of a file with a HEAD, or undefined when the key does not exist. */
  async headFile(path: string): Promise<ObjectInfo | undefined> {
    try {
      return await this.store.head(this.keys.fileKey(path), { signal: this.signal });
    } catch (error) {
      if (error instanceof NotFoundError) return undefined;
      throw error;
    }
  }

  async directoryExists(path: string): Promise<boolean> {
    if (path === '') return true;
    const page = await this.store.list({ prefix: this.keys.directoryPrefix(path), maxKeys: 1, signal: this.signal });
    return page.objects.length + page.prefixes.length > 0;
  }

  /** Returns whether a directory has no key besides its own marker, counting keys that cannot be shown as entries. */
  async isEmpty(path: string): Promise<boolean> {
    const directoryPrefix = this.keys.directoryPrefix(path);
    const page = await this.store.list({ prefix: directoryPrefix, maxKeys: 2, signal: this.signal });
    return page.objects.every((info) => info.key === directoryPrefix) && page.prefixes.length === 0;
  }

  /** Yields every object under a directory prefix, its marker included, in a flat listing. */
  async *listTree(path: string): AsyncGenerator<ObjectInfo> {
    const directoryPrefix = this.keys.directoryPrefix(path);
    let continuationToken: string | undefined;
    do {
      const page = await this.store.list({ prefix: directoryPrefix, continuationToken, signal: this.signal });
      yield* page.objects;
      continuationToken = page.nextToken;
    } while (continuationToken !== undefined);
  }

  private skipInvalid(name: string, key: string): boolean {
    const reason = invalidNameReason(name);
    if (reason === undefined) return false;
    this.logger.debug({ bucket: this.store.bucket, key, reason }, 'skipped a key that cannot be a file name');
    return true;
  }
}

/** Returns the index of `name` in the sorted array `names`, or -1. */
function sortedIndexOf(names: readonly string[], name: string): number {
  const index = sortedInsertionIndex(names, name, false);
  return names[index] === name ? index : -1;
}

/** Returns the index of the first element of the sorted array `names` at or after `name` (`after`: strictly after). */
function sortedInsertionIndex(names: readonly string[], name: string, after: boolean): number {
  let low = 0;
  let high = names.length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    const before = after ? names[middle]! <= name : names[middle]! < name;
    if (before) low = middle + 1;
    else high = middle;
  }
  return low;
}
