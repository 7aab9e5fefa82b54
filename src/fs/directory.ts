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
 * A lookup of one name sends a HEAD of the file key and a one-key listing of
 * the directory prefix in parallel. When both exist, the directory wins.
 */

import type { Logger } from 'pino';

import type { ObjectInfo, ObjectStore } from '../store/types.js';
import { NotFoundError } from '../store/errors.js';
import type { CachedEntry, MetadataCache } from '../cache/metadata-cache.js';
import { childPath, invalidNameReason, type KeyMapper } from './names.js';

export interface DirectoryModelOptions {
  store: ObjectStore;
  keys: KeyMapper;
  cache: MetadataCache;
  logger: Logger;
  /** Aborted at shutdown. */
  signal: AbortSignal;
}

export class DirectoryModel {
  private readonly store: ObjectStore;
  private readonly keys: KeyMapper;
  private readonly cache: MetadataCache;
  private readonly logger: Logger;
  private readonly signal: AbortSignal;
  /** Keys skipped because they cannot be paths, over the life of the mount. */
  skippedKeyCount = 0;

  constructor(options: DirectoryModelOptions) {
    this.store = options.store;
    this.keys = options.keys;
    this.cache = options.cache;
    this.logger = options.logger;
    this.signal = options.signal;
  }

  /** Returns the entries of a directory, from a fresh cached listing or by listing every page. */
  async list(path: string): Promise<ReadonlyMap<string, CachedEntry>> {
    const cached = this.cache.listing(path);
    if (cached !== undefined) return cached;

    const generation = this.cache.generation;
    const directoryPrefix = this.keys.directoryPrefix(path);
    const files = new Map<string, ObjectInfo>();
    const directories = new Set<string>();
    let skipped = 0;
    let continuationToken: string | undefined;

    do {
      const page = await this.store.list({ prefix: directoryPrefix, delimiter: '/', continuationToken, signal: this.signal });

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

    this.cache.storeFetchedListing(path, listing, generation);
    for (const [name, entry] of listing) {
      this.cache.storeFetchedEntry(childPath(path, name), entry, generation);
    }
    return listing;
  }

  /** Finds what a path is: from the cache when fresh, otherwise with a HEAD and a one-key listing in parallel. */
  async resolve(path: string): Promise<CachedEntry | 'missing'> {
    if (path === '') return { kind: 'directory' };

    const cached = this.cache.lookup(path);
    if (cached !== undefined) return cached;

    const generation = this.cache.generation;
    const [info, isDirectory] = await Promise.all([this.headFile(path), this.directoryExists(path)]);

    let result: CachedEntry | 'missing';
    if (isDirectory) {
      result = { kind: 'directory' };
    } else if (info !== undefined) {
      result = { kind: 'file', info };
    } else {
      result = 'missing';
    }

    this.cache.storeFetchedEntry(path, result, generation);
    return result;
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
