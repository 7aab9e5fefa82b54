/**
 * Readahead across the small files of one directory.
 *
 * Programs often open the files of a directory for reading in name order:
 * a data loader that sorts its file list, or `tar c` and `cp -r`, which
 * follow readdir order (sorted on this mount). Such a program spends most of
 * each file's time waiting for its one GET. Once two such opens in a row have
 * ascending names, this fetches the next `FILES_AHEAD` small files of the
 * cached listing into the block cache, so that each GET overlaps the work on
 * the files before it. A file qualifies when it is not empty and fits in the
 * first fetch that a reader makes anyway (`FETCH_ALIGNMENT`, at most one
 * block), so a prefetch fetches the same bytes as a first read at offset 0
 * would.
 *
 * Each prefetch is a GET pinned to the version in the listing, into the
 * block that a reader of that version reads. An open that pins the same
 * version reads it from the cache. An open that pins another version (the
 * object changed) misses it and fetches its own version, so the version
 * semantics of reads do not change. What a wrong guess costs is at most
 * `FILES_AHEAD` GETs of small files per walk that stops or turns away.
 *
 * Prefetches are sent once, without retries, and at most
 * `MAX_PREFETCHES_IN_FLIGHT` at a time for the whole mount. A failed prefetch
 * is logged at debug level, and the reader that needs the bytes fetches them
 * itself and gets any error.
 */

import type { Logger } from 'pino';

import { entryBoundedCache } from '../cache/entry-bounded-cache.js';
import type { BlockCache, BlockId } from '../cache/block-cache.js';
import type { MetadataCache } from '../cache/metadata-cache.js';
import { FETCH_ALIGNMENT } from '../read/reader.js';
import type { ObjectInfo, ObjectStore } from '../store/types.js';
import { baseNameOf, parentPathOf } from './names.js';

/** Files fetched ahead of the one opened; another batch starts when fewer than half are left ahead. */
export const FILES_AHEAD = 8;

/** Prefetch GETs in flight for the whole mount, so that a walk cannot crowd out the reads that programs wait for. */
export const MAX_PREFETCHES_IN_FLIGHT = 8;

/** Opens in ascending name order before the next files are fetched. */
const MIN_ASCENDING_OPENS = 2;

/** Directories whose walk is remembered; the least recently used are forgotten first. */
const TRACKED_DIRECTORIES = 1_000;

/** The read-only opens in one directory so far. */
interface DirectoryWalk {
  lastName: string;
  lastOpenedAtMs: number;
  /** Opens in a row, each of a name after the one before. */
  ascendingOpens: number;
  /** Names after `lastName` already fetched or skipped, in ascending order. */
  ahead: string[];
}

export interface FileReadaheadOptions {
  store: ObjectStore;
  blocks: BlockCache;
  metadata: MetadataCache;
  logger: Logger;
  /** Aborted at shutdown. */
  signal: AbortSignal;
  blockSize: number;
  /** Opens further apart than this do not continue a walk; the metadata TTL, which also bounds how old the listing is. */
  walkTimeoutMs: number;
  now: () => number;
}

export class FileReadahead {
  private readonly options: FileReadaheadOptions;
  private readonly maxFileBytes: number;
  private readonly walks = entryBoundedCache<string, DirectoryWalk>(TRACKED_DIRECTORIES);
  private inFlight = 0;

  constructor(options: FileReadaheadOptions) {
    this.options = options;
    this.maxFileBytes = Math.min(FETCH_ALIGNMENT, options.blockSize);
  }

  /** Records a read-only open of the file at `path`, and fetches the files after it when the opens walk the directory. */
  opened(path: string): void {
    if (path === '' || this.options.signal.aborted) return;
    const directory = parentPathOf(path);
    const name = baseNameOf(path);
    const nowMs = this.options.now();

    const previous = this.walks.get(directory);
    const continues = previous !== undefined && name > previous.lastName && nowMs - previous.lastOpenedAtMs < this.options.walkTimeoutMs;
    const walk: DirectoryWalk = continues
      ? { lastName: name, lastOpenedAtMs: nowMs, ascendingOpens: previous.ascendingOpens + 1, ahead: previous.ahead.filter((other) => other > name) }
      : { lastName: name, lastOpenedAtMs: nowMs, ascendingOpens: 1, ahead: [] };
    this.walks.set(directory, walk);

    if (walk.ascendingOpens < MIN_ASCENDING_OPENS || walk.ahead.length >= FILES_AHEAD / 2) return;

    // Only a cached listing is used, so a walk never sends a listing request of its own.
    const listing = this.options.metadata.listing(directory);
    if (listing === undefined) return;

    const after = walk.ahead.at(-1) ?? name;
    for (const next of smallestNamesAfter(listing.keys(), after, FILES_AHEAD - walk.ahead.length)) {
      walk.ahead.push(next);
      const entry = listing.get(next);
      if (entry?.kind === 'file') this.prefetch(entry.info);
    }
  }

  private prefetch(info: ObjectInfo): void {
    if (info.size === 0 || info.size > this.maxFileBytes || info.version === '' || this.inFlight >= MAX_PREFETCHES_IN_FLIGHT) return;

    const { store, blocks, logger, signal } = this.options;
    const block: BlockId = { key: info.key, version: info.version, index: 0 };
    if (blocks.covers(block, 0, info.size)) return;

    this.inFlight += 1;
    blocks
      .load(block, 0, info.size, async (start, end) => (await store.get(info.key, { range: { start, end }, ifVersion: info.version, signal })).body)
      .catch((error: unknown) => {
        // The reader that needs these bytes fetches them itself and reports its own error.
        logger.debug({ key: info.key, version: info.version, err: error }, 'prefetch of a small file failed');
      })
      .finally(() => {
        this.inFlight -= 1;
      });
  }
}

/** Returns up to `count` of `names` that sort after `after`, smallest first, in one pass over them. */
function smallestNamesAfter(names: Iterable<string>, after: string, count: number): string[] {
  const smallest: string[] = [];
  if (count <= 0) return smallest;

  for (const name of names) {
    if (name <= after) continue;
    if (smallest.length === count && name >= smallest[count - 1]!) continue;

    let index = smallest.length;
    while (index > 0 && smallest[index - 1]! > name) index -= 1;
    smallest.splice(index, 0, name);
    if (smallest.length > count) smallest.pop();
  }
  return smallest;
}
