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
 * listing from it, so one request replaces a listing per directory. The page
 * after it is requested at once, and completes the sibling that the first
 * page cut off when the walk reaches that sibling. When the directory alone
 * has more keys than a page, it is listed as usual, and its siblings are
 * listed one by one for `LARGE_DIRECTORY_RETRY_MS`.
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

/** Walks through the children of different directories that are continued at once; the oldest is dropped. */
const MAX_TREE_WALKS = 16;

/** A walk through the children of one directory, continued page by page. */
interface TreeWalk {
  /** The child directory that the last page cut off, which the next page completes. */
  resumePath: string;
  /** The keys of that directory in the last page. */
  carried: ObjectInfo[];
  /** The next page, requested as soon as the last one arrived. */
  nextPage: Promise<ListPage>;
  /** The cache token of the next page, taken before it was requested. */
  fetch: MetadataFetch;
  startedAtMs: number;
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
  /** Walks to continue, by the path of the directory whose children are walked, oldest first. */
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
   * Lists one page of the parent's keys without a delimiter, starting at the
   * keys of `path`, and caches the listing of every directory that the page
   * covers completely. Returns the listing of `path`, or undefined when the
   * page does not cover it, the listing could not be cached, or the request
   * failed (the caller then lists `path` as usual).
   */
  private async listWithSiblings(path: string): Promise<ReadonlyMap<string, CachedEntry> | undefined> {
    const parent = parentPathOf(path);
    const parentPrefix = this.keys.directoryPrefix(parent);
    // The directory's prefix without its '/': keys of siblings that sort after it come along.
    const startAfter = this.keys.directoryPrefix(path).slice(0, -1);

    const walk = this.takeTreeWalk(parent, path);
    const fetch = walk?.fetch ?? this.cache.beginFetch(parent, 'tree');
    let objects: ObjectInfo[];
    let nextToken: string | undefined;
    try {
      const page = await (walk?.nextPage ?? this.store.list({ prefix: parentPrefix, startAfter, signal: this.signal }));
      objects = walk === undefined ? page.objects : [...walk.carried, ...page.objects];
      nextToken = page.nextToken;
    } catch (error) {
      this.cache.abandonFetch(fetch);
      this.logger.debug({ bucket: this.store.bucket, prefix: parentPrefix, startAfter, err: error }, 'listing the keys of a directory and its siblings failed; listing the directory alone');
      return undefined;
    }

    const listings = this.listingsFromPage(parent, parentPrefix, objects, nextToken !== undefined);
    const listing = listings.get(path);
    if (listing === undefined) {
      this.deepDirectories.set(parent, this.now() + LARGE_DIRECTORY_RETRY_MS);
      this.logger.debug(
        { bucket: this.store.bucket, prefix: this.keys.directoryPrefix(path), retryMs: LARGE_DIRECTORY_RETRY_MS },
        'directory has more keys than one page; listing its siblings one by one',
      );
    }
    if (!this.cache.finishTreeFetch(fetch, listings)) return undefined;

    if (listing !== undefined && nextToken !== undefined) this.continueTreeWalk(parent, parentPrefix, objects, nextToken);
    return listing;
  }

  /**
   * Requests the page after `objects` at once, so that it is on its way
   * while the program reads the directories already listed, and keeps the
   * keys of the directory the page cut off for it. The cache token is taken
   * in the same turn as the last page was stored, so a local change from now
   * on keeps the next page out of the cache.
   */
  private continueTreeWalk(parent: string, parentPrefix: string, objects: readonly ObjectInfo[], nextToken: string): void {
    const relative = objects.at(-1)!.key.slice(parentPrefix.length);
    const slash = relative.indexOf('/');
    // A page cut among the parent's own files leaves no directory to resume.
    if (slash < 0) return;

    const cutPrefix = parentPrefix + relative.slice(0, slash + 1);
    let firstCarried = objects.length;
    while (firstCarried > 0 && objects[firstCarried - 1]!.key.startsWith(cutPrefix)) firstCarried -= 1;

    const fetch = this.cache.beginFetch(parent, 'tree');
    const nextPage = this.store.list({ prefix: parentPrefix, continuationToken: nextToken, signal: this.signal });
    // Awaited by the readdir that resumes the walk; a walk that is dropped ignores its failure.
    nextPage.catch(() => undefined);

    this.dropTreeWalk(parent);
    if (this.treeWalks.size >= MAX_TREE_WALKS) this.dropTreeWalk(this.treeWalks.keys().next().value!);
    this.treeWalks.set(parent, {
      resumePath: childPath(parent, relative.slice(0, slash)),
      carried: objects.slice(firstCarried),
      nextPage,
      fetch,
      startedAtMs: this.now(),
    });
  }

  /** Returns the walk of `parent` when it resumes at `path` within the TTL, and drops any other. */
  private takeTreeWalk(parent: string, path: string): TreeWalk | undefined {
    const walk = this.treeWalks.get(parent);
    if (walk === undefined) return undefined;

    this.treeWalks.delete(parent);
    if (walk.resumePath === path && this.now() - walk.startedAtMs < this.metadataTtlMs) return walk;
    this.cache.abandonFetch(walk.fetch);
    return undefined;
  }

  private dropTreeWalk(parent: string): void {
    const walk = this.treeWalks.get(parent);
    if (walk === undefined) return;
    this.treeWalks.delete(parent);
    this.cache.abandonFetch(walk.fetch);
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
