import { describe, expect, it } from 'vitest';

import type { ObjectInfo } from '../store/types.js';
import { MetadataCache, type CachedEntry } from './metadata-cache.js';

const TTL_MS = 1000;

function fileEntry(key: string, size = 1): CachedEntry {
  const info: ObjectInfo = { key, size, version: `v-${key}-${size}`, lastModified: new Date(0) };
  return { kind: 'file', info };
}

function createCache(ttlMs = TTL_MS): { cache: MetadataCache; advance: (ms: number) => void } {
  let nowMs = 1_000_000;
  const cache = new MetadataCache({ ttlMs, now: () => nowMs });
  return { cache, advance: (ms) => (nowMs += ms) };
}

describe('MetadataCache fetches', () => {
  it('stores a listing and the entries of its children', () => {
    const { cache, advance } = createCache();
    const fetch = cache.beginFetch('dir', 'listing');
    cache.finishListingFetch(fetch, new Map([['a', fileEntry('dir/a')]]), true);

    expect(cache.listing('dir')?.has('a')).toBe(true);
    expect(cache.lookup('dir/a')).toEqual(fileEntry('dir/a'));
    expect(cache.lookup('dir/b')).toBe('missing');

    advance(TTL_MS);
    expect(cache.listing('dir')).toBeUndefined();
    expect(cache.lookup('dir/a')).toBeUndefined();
  });

  it('applies changes to children made during a listing', () => {
    const { cache } = createCache();
    const fetch = cache.beginFetch('dir', 'listing');
    cache.storeEntry('dir/uploaded', fileEntry('dir/uploaded', 7));
    cache.storeMissing('dir/removed');

    const listing = cache.finishListingFetch(
      fetch,
      new Map([
        ['removed', fileEntry('dir/removed')],
        ['kept', fileEntry('dir/kept')],
      ]),
      true,
    );

    expect([...listing.keys()].sort()).toEqual(['kept', 'uploaded']);
    expect(cache.listing('dir')).toBe(listing);
    expect(cache.lookup('dir/uploaded')).toEqual(fileEntry('dir/uploaded', 7));
    expect(cache.lookup('dir/removed')).toBe('missing');
    expect(cache.lookup('dir/kept')).toEqual(fileEntry('dir/kept'));
  });

  it('keeps a directory over a file written during a listing', () => {
    const { cache } = createCache();
    const fetch = cache.beginFetch('dir', 'listing');
    cache.storeEntry('dir/both', fileEntry('dir/both'));

    const listing = cache.finishListingFetch(fetch, new Map<string, CachedEntry>([['both', { kind: 'directory' }]]), true);

    expect(listing.get('both')).toEqual({ kind: 'directory' });
  });

  it('does not store a listing whose child was invalidated during it', () => {
    const { cache } = createCache();
    const fetch = cache.beginFetch('dir', 'listing');
    cache.invalidate('dir/unknown');

    const listing = cache.finishListingFetch(fetch, new Map([['a', fileEntry('dir/a')]]), true);

    expect(listing.has('a')).toBe(true);
    expect(cache.listing('dir')).toBeUndefined();
    expect(cache.lookup('dir/a')).toBeUndefined();
  });

  it('does not store a listing of a directory removed during it', () => {
    const { cache } = createCache();
    const fetch = cache.beginFetch('dir', 'listing');
    cache.storeMissing('dir');

    cache.finishListingFetch(fetch, new Map([['a', fileEntry('dir/a')]]), true);

    expect(cache.listing('dir')).toBeUndefined();
    expect(cache.lookup('dir/a')).toBeUndefined();
  });

  it('does not store an entry whose path changed during the fetch', () => {
    const { cache } = createCache();
    const fetch = cache.beginFetch('dir/a', 'entry');
    cache.storeEntry('dir/a', fileEntry('dir/a', 2));

    cache.finishEntryFetch(fetch, 'missing');

    expect(cache.lookup('dir/a')).toEqual(fileEntry('dir/a', 2));
  });

  it('skips a parent entry after a child change', () => {
    const { cache } = createCache();
    const fetch = cache.beginFetch('dir', 'entry');
    cache.storeEntry('dir/sub/new', fileEntry('dir/sub/new'));

    cache.finishEntryFetch(fetch, 'missing');

    expect(cache.lookup('dir')).toBeUndefined();
  });

  it('stores fetches that a change in another directory does not affect', () => {
    const { cache } = createCache();
    const entryFetch = cache.beginFetch('one/a', 'entry');
    const listingFetch = cache.beginFetch('one', 'listing');
    cache.storeEntry('two/b', fileEntry('two/b'));
    cache.invalidate('two/c');

    cache.finishEntryFetch(entryFetch, fileEntry('one/a'));
    cache.finishListingFetch(listingFetch, new Map([['a', fileEntry('one/a')]]), true);

    expect(cache.lookup('one/a')).toEqual(fileEntry('one/a'));
    expect(cache.listing('one')?.size).toBe(1);
  });

  it('does not store fetches below a tree invalidated during them', () => {
    const { cache } = createCache();
    const entryFetch = cache.beginFetch('tree/sub/a', 'entry');
    const listingFetch = cache.beginFetch('tree/sub', 'listing');
    cache.invalidateTree('tree');

    cache.finishEntryFetch(entryFetch, fileEntry('tree/sub/a'));
    cache.finishListingFetch(listingFetch, new Map([['a', fileEntry('tree/sub/a')]]), true);

    expect(cache.lookup('tree/sub/a')).toBeUndefined();
    expect(cache.listing('tree/sub')).toBeUndefined();
  });

  it('lookup listing resolves listed names only', () => {
    const { cache } = createCache();
    const fetch = cache.beginFetch('dir', 'listing');
    cache.finishListingFetch(fetch, new Map([['a', fileEntry('dir/a')]]), false);

    expect(cache.lookup('dir/a')).toEqual(fileEntry('dir/a'));
    expect(cache.lookup('dir/b')).toBeUndefined();
    expect(cache.listing('dir')?.size).toBe(1);
    expect(cache.listing('dir', { resolvesMissingNames: true })).toBeUndefined();
  });

  it('stores nothing for an abandoned fetch and nothing without a TTL', () => {
    const { cache } = createCache();
    const abandoned = cache.beginFetch('dir/a', 'entry');
    cache.abandonFetch(abandoned);
    expect(cache.lookup('dir/a')).toBeUndefined();

    const uncached = createCache(0).cache;
    const fetch = uncached.beginFetch('dir', 'listing');
    const listing = uncached.finishListingFetch(fetch, new Map([['a', fileEntry('dir/a')]]), true);
    expect(listing.size).toBe(1);
    expect(uncached.listing('dir')).toBeUndefined();
    uncached.storeNewDirectory('new');
    expect(uncached.lookup('new/a')).toBeUndefined();
  });
});

describe('MetadataCache local changes', () => {
  it('new directory resolves names as missing', () => {
    const { cache, advance } = createCache();
    cache.storeNewDirectory('new');

    expect(cache.lookup('new')).toEqual({ kind: 'directory' });
    expect(cache.lookup('new/a')).toBe('missing');

    cache.storeEntry('new/a', fileEntry('new/a'));
    expect(cache.listing('new')?.get('a')).toEqual(fileEntry('new/a'));

    advance(TTL_MS);
    expect(cache.lookup('new/b')).toBeUndefined();
  });
});

describe('MetadataCache confirmed versions', () => {
  it('restarts the TTL of a served version', () => {
    const { cache, advance } = createCache();
    const entry = fileEntry('dir/a');
    cache.storeEntry('dir/a', entry);
    advance(TTL_MS - 1);

    cache.confirmFile('dir/a', (entry as { info: ObjectInfo }).info.version);
    advance(TTL_MS - 1);
    expect(cache.lookup('dir/a')).toEqual(entry);

    advance(1);
    expect(cache.lookup('dir/a')).toBeUndefined();
  });

  it('renews an expired current entry', () => {
    const { cache, advance } = createCache();
    const entry = fileEntry('dir/a');
    cache.storeEntry('dir/a', entry);
    advance(TTL_MS * 3);

    cache.confirmFile('dir/a', (entry as { info: ObjectInfo }).info.version);
    expect(cache.lookup('dir/a')).toEqual(entry);
  });

  it('leaves other entries to expire', () => {
    const { cache, advance } = createCache();
    cache.storeEntry('dir/a', fileEntry('dir/a', 1));
    cache.storeMissing('dir/gone');
    cache.storeEntry('dir/sub', { kind: 'directory' });
    advance(TTL_MS - 1);

    cache.confirmFile('dir/a', (fileEntry('dir/a', 2) as { info: ObjectInfo }).info.version);
    cache.confirmFile('dir/gone', 'any');
    cache.confirmFile('dir/sub', 'any');
    cache.confirmFile('dir/never-cached', 'any');
    advance(1);

    expect(cache.lookup('dir/a')).toBeUndefined();
    expect(cache.lookup('dir/gone')).toBeUndefined();
    expect(cache.lookup('dir/sub')).toBeUndefined();
    expect(cache.lookup('dir/never-cached')).toBeUndefined();
  });

  it('renews nothing without TTL or version', () => {
    const { cache: uncached } = createCache(0);
    const entry = fileEntry('dir/a');
    uncached.storeEntry('dir/a', entry);
    uncached.confirmFile('dir/a', (entry as { info: ObjectInfo }).info.version);
    expect(uncached.lookup('dir/a')).toBeUndefined();

    const { cache, advance } = createCache();
    const unversioned: CachedEntry = { kind: 'file', info: { key: 'dir/b', size: 0, version: '', lastModified: new Date(0) } };
    cache.storeEntry('dir/b', unversioned);
    advance(TTL_MS - 1);
    cache.confirmFile('dir/b', '');
    advance(1);
    expect(cache.lookup('dir/b')).toBeUndefined();
  });
});
