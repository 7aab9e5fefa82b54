/**
 * Store requests per file for programs that walk a directory of small files:
 * these tests pin the counts, so that a change that adds a round trip per
 * file fails here instead of only slowing the benchmark.
 */

import { describe, expect, it } from 'vitest';

import { LARGE_DIRECTORY_RETRY_MS, LOOKUP_LISTING_MAX_PAGES, TREE_PAGES_AHEAD } from './directory.js';
import { MemoryStore } from '../store/memory.js';
import type { ListPage, ListRequest } from '../store/types.js';
import { Errno } from './errno.js';
import { createTestMount, errnoOfRejection, O_RDONLY, patternBytes, settle, type ControlledStore, type PathOperations } from './test-support.js';

const TTL_MS = 5000;

/** Returns the calls made from index `from` on, as `operation key` strings; a delimited listing shows as `listing prefix`. */
function callsSince(store: ControlledStore, from: number): string[] {
  return store.calls.slice(from).map((call) => {
    const delimited = call.operation === 'list' && (call.detail as { delimiter?: string }).delimiter === '/';
    return `${delimited ? 'listing' : call.operation} ${call.key ?? ''}`;
  });
}

describe('small files: request counts', () => {
  it('creates files in a new directory with one PUT each', async () => {
    const { mount, store } = createTestMount({ config: { metadataTtlMs: TTL_MS } });
    await mount.mkdir('new');
    const start = store.calls.length;

    for (let index = 0; index < 5; index += 1) await mount.writeFile(`new/f${index}`, Buffer.from(`content ${index}`));

    expect(callsSince(store, start)).toEqual(['put new/f0', 'put new/f1', 'put new/f2', 'put new/f3', 'put new/f4']);
  });

  it('reads listed files with one GET each and no HEAD', async () => {
    const { memory, mount, store } = createTestMount({ config: { metadataTtlMs: TTL_MS } });
    for (let index = 0; index < 5; index += 1) memory.putRaw(`dir/f${index}`, patternBytes(4096, index + 1));
    await mount.names('dir');
    const start = store.calls.length;

    for (let index = 0; index < 5; index += 1) {
      expect((await mount.readFile(`dir/f${index}`)).equals(patternBytes(4096, index + 1))).toBe(true);
    }

    // Readahead may fetch a file before its open (see file-readahead.ts), so only the set of requests is fixed.
    expect(callsSince(store, start).sort()).toEqual(['get dir/f0', 'get dir/f1', 'get dir/f2', 'get dir/f3', 'get dir/f4']);
  });

  it('reads a small file with one whole GET', async () => {
    const { memory, mount, store } = createTestMount({ config: { metadataTtlMs: TTL_MS } });
    const content = patternBytes(300 * 1024);
    memory.putRaw('dir/small', content);
    await mount.names('dir');
    const start = store.calls.length;

    expect((await mount.readFile('dir/small', 4096)).equals(content)).toBe(true);

    expect(callsSince(store, start)).toEqual(['get dir/small']);
    expect(store.calls[start]!.detail).toMatchObject({ range: { start: 0, end: content.length } });
  });

  it('lists the directory at the second miss', async () => {
    const { memory, mount, store } = createTestMount({ config: { metadataTtlMs: TTL_MS } });
    for (let index = 0; index < 5; index += 1) memory.putRaw(`dir/f${index}`, 'x');
    await mount.lookup('dir');
    const start = store.calls.length;

    await mount.stat('dir/f0');
    expect(callsSince(store, start).sort()).toEqual(['head dir/f0', 'list dir/f0/']);

    const afterFirst = store.calls.length;
    await mount.stat('dir/f1');
    expect(callsSince(store, afterFirst)).toEqual(['listing dir/']);

    const afterListing = store.calls.length;
    for (let index = 2; index < 5; index += 1) expect((await mount.stat(`dir/f${index}`)).size).toBe(1);
    expect(callsSince(store, afterListing)).toEqual([]);
  });

  it('finds an object created by another client after a listing for lookups', async () => {
    const { memory, mount, store } = createTestMount({ config: { metadataTtlMs: TTL_MS } });
    memory.putRaw('dir/f0', 'x');
    memory.putRaw('dir/f1', 'x');
    await mount.stat('dir/f0');
    await mount.stat('dir/f1');
    expect(callsSince(store, 0)).toContain('listing dir/');

    memory.putRaw('dir/foreign', 'new');
    const start = store.calls.length;
    expect((await mount.stat('dir/foreign')).size).toBe(3);
    expect(await errnoOfRejection(mount.stat('dir/missing'))).toBe(Errno.ENOENT);
    expect(callsSince(store, start).sort()).toEqual(['head dir/foreign', 'head dir/missing', 'list dir/foreign/', 'list dir/missing/']);
  });

  it('readdir listing resolves missing names', async () => {
    const { memory, mount, store } = createTestMount({ config: { metadataTtlMs: TTL_MS } });
    memory.putRaw('dir/f0', 'x');
    await mount.names('dir');
    const start = store.calls.length;

    expect(await errnoOfRejection(mount.stat('dir/missing'))).toBe(Errno.ENOENT);
    expect(callsSince(store, start)).toEqual([]);
  });

  it('lists again for readdir after a listing for lookups', async () => {
    const { memory, mount, store } = createTestMount({ config: { metadataTtlMs: TTL_MS } });
    memory.putRaw('dir/f0', 'x');
    memory.putRaw('dir/f1', 'x');
    await mount.stat('dir/f0');
    await mount.stat('dir/f1');
    memory.putRaw('dir/foreign', 'new');
    const start = store.calls.length;

    expect(await mount.names('dir')).toEqual(['f0', 'f1', 'foreign']);
    expect(callsSince(store, start)).toEqual(['listing dir/']);
  });

  it('renews a listing in use once half of its TTL has passed', async () => {
    const { memory, mount, store, clock } = createTestMount({ config: { metadataTtlMs: TTL_MS } });
    for (let index = 0; index < 4; index += 1) memory.putRaw(`dir/f${index}`, 'x');
    await mount.names('dir');
    await mount.stat('dir/f0');
    clock.advance(TTL_MS * 0.6);
    memory.putRaw('dir/late', 'new');
    const start = store.calls.length;

    await mount.stat('dir/f1');
    await settle();
    expect(callsSince(store, start)).toEqual(['listing dir/']);

    // The first listing has expired, and the renewed one resolves lookups, including those of missing names.
    clock.advance(TTL_MS * 0.4);
    const afterRenewal = store.calls.length;
    expect((await mount.stat('dir/late')).size).toBe(3);
    await mount.stat('dir/f2');
    expect(await errnoOfRejection(mount.stat('dir/missing'))).toBe(Errno.ENOENT);
    const inDirectory = callsSince(store, afterRenewal).filter((call) => call !== 'head dir' && call !== 'list dir/');
    expect(inDirectory).toEqual([]);
  });

  it('renewed lookup listing resolves listed names only', async () => {
    const { memory, mount, store, clock } = createTestMount({ config: { metadataTtlMs: TTL_MS } });
    for (let index = 0; index < 4; index += 1) memory.putRaw(`dir/f${index}`, 'x');
    await mount.stat('dir/f0');
    await mount.stat('dir/f1');
    clock.advance(TTL_MS * 0.6);
    await mount.stat('dir/f2');
    await settle();
    clock.advance(TTL_MS * 0.4);
    const start = store.calls.length;

    await mount.stat('dir/f3');
    expect(await errnoOfRejection(mount.stat('dir/missing'))).toBe(Errno.ENOENT);
    const inDirectory = callsSince(store, start).filter((call) => call !== 'head dir' && call !== 'list dir/');
    expect(inDirectory.sort()).toEqual(['head dir/missing', 'list dir/missing/']);
  });

  it('sends HEADs for one name looked up again and again', async () => {
    const { memory, mount, store, clock } = createTestMount({ config: { metadataTtlMs: TTL_MS } });
    memory.putRaw('dir/polled', 'x');
    await mount.lookup('dir');
    const start = store.calls.length;

    for (let round = 0; round < 3; round += 1) {
      await mount.stat('dir/polled');
      clock.advance(TTL_MS);
      await mount.lookup('dir');
    }

    const calls = callsSince(store, start).filter((call) => call.includes('polled'));
    expect(calls.sort()).toEqual(['head dir/polled', 'head dir/polled', 'head dir/polled', 'list dir/polled/', 'list dir/polled/', 'list dir/polled/']);
    expect(callsSince(store, start).filter((call) => call.startsWith('listing'))).toEqual([]);
  });

  it('shares one listing among concurrent lookups', async () => {
    const { memory, mount, store } = createTestMount({ config: { metadataTtlMs: TTL_MS } });
    for (let index = 0; index < 5; index += 1) memory.putRaw(`dir/f${index}`, 'x');
    await mount.stat('dir/f0');
    const start = store.calls.length;

    store.hold((operation, key) => operation === 'list' && key === 'dir/');
    const lookups = [1, 2, 3, 4].map((index) => mount.stat(`dir/f${index}`));
    await new Promise((resolve) => setImmediate(resolve));
    store.release();
    const sizes = (await Promise.all(lookups)).map((attributes) => attributes.size);

    expect(sizes).toEqual([1, 1, 1, 1]);
    expect(callsSince(store, start)).toEqual(['listing dir/']);
  });

  it('falls back to HEADs in a directory with too many pages', async () => {
    const pageSize = 2;
    const fileCount = pageSize * LOOKUP_LISTING_MAX_PAGES + 3;
    const { memory, mount, store, clock } = createTestMount({ config: { metadataTtlMs: TTL_MS }, store: { maxListKeys: pageSize } });
    for (let index = 0; index < fileCount; index += 1) memory.putRaw(`big/f${String(index).padStart(2, '0')}`, 'x');
    await mount.lookup('big');
    await mount.stat('big/f00');
    const start = store.calls.length;

    // The second miss tries a listing, gives up after the page limit and sends a HEAD.
    await mount.stat('big/f01');
    const attempt = callsSince(store, start);
    expect(attempt.filter((call) => call === 'listing big/')).toHaveLength(LOOKUP_LISTING_MAX_PAGES);
    expect(attempt.slice(LOOKUP_LISTING_MAX_PAGES).sort()).toEqual(['head big/f01', 'list big/f01/']);

    // Further misses go straight to HEADs until the retry time has passed.
    const afterAttempt = store.calls.length;
    await mount.stat('big/f02');
    expect(callsSince(store, afterAttempt).sort()).toEqual(['head big/f02', 'list big/f02/']);

    clock.advance(LARGE_DIRECTORY_RETRY_MS);
    await mount.lookup('big');
    await mount.stat('big/f03');
    const beforeRetry = store.calls.length;
    await mount.stat('big/f04');
    expect(callsSince(store, beforeRetry).filter((call) => call === 'listing big/')).toHaveLength(LOOKUP_LISTING_MAX_PAGES);

    // The failed retry starts a new wait.
    const afterRetry = store.calls.length;
    await mount.stat('big/f05');
    expect(callsSince(store, afterRetry).sort()).toEqual(['head big/f05', 'list big/f05/']);
  });

  it('lists a directory for lookups of at most the page limit in full', async () => {
    const pageSize = 2;
    const fileCount = pageSize * LOOKUP_LISTING_MAX_PAGES;
    const { memory, mount, store } = createTestMount({ config: { metadataTtlMs: TTL_MS }, store: { maxListKeys: pageSize } });
    for (let index = 0; index < fileCount; index += 1) memory.putRaw(`dir/f${index}`, 'x');
    await mount.stat('dir/f0');
    await mount.stat('dir/f1');
    const start = store.calls.length;

    for (let index = 2; index < fileCount; index += 1) await mount.stat(`dir/f${index}`);

    expect(callsSince(store, start)).toEqual([]);
  });

  it('reopens a file just read without HEAD', async () => {
    const { memory, mount, store, clock } = createTestMount({ config: { metadataTtlMs: TTL_MS, blockSize: 64 * 1024 } });
    const content = patternBytes(1024 * 1024);
    memory.putRaw('dir/read', content);
    await mount.stat('dir/read');
    const file = await mount.open('dir/read', O_RDONLY);

    // Each read is a GET pinned to the opened version, more than a TTL after the lookup in all.
    for (const offset of [0, 512 * 1024]) {
      clock.advance(TTL_MS * 0.8);
      const before = store.calls.length;
      expect((await mount.fs.read(file.ino, file.fh, offset, 4096)) as Buffer).toEqual(content.subarray(offset, offset + 4096));
      expect(callsSince(store, before)).toEqual(['get dir/read']);
    }
    await mount.close(file);

    clock.advance(TTL_MS * 0.8);
    const start = store.calls.length;
    expect((await mount.stat('dir/read')).size).toBe(content.length);
    await mount.close(await mount.open('dir/read', O_RDONLY));
    // The walk from the root looks up the directory again; the file needs nothing.
    expect(callsSince(store, start).filter((call) => call.includes('dir/read'))).toEqual([]);

    // Another client's change shows once a TTL has passed since the last GET.
    memory.putRaw('dir/read', 'replaced');
    clock.advance(TTL_MS * 0.2);
    expect((await mount.stat('dir/read')).size).toBe(8);
  });

  it('never lists for lookups without a metadata TTL', async () => {
    const { memory, mount, store } = createTestMount({ config: { metadataTtlMs: 0 } });
    memory.putRaw('dir/a', 'x');
    memory.putRaw('dir/b', 'x');
    const start = store.calls.length;

    await mount.stat('dir/a');
    await mount.stat('dir/b');
    const file = await mount.open('dir/a', O_RDONLY);
    await mount.fs.release(file.ino, file.fh, 0);

    const calls = callsSince(store, start);
    expect(calls.filter((call) => call.startsWith('listing'))).toEqual([]);
    expect(calls).toContain('head dir/b');
  });
});

/** A memory store whose pages of keys listed without a delimiter from a start key are computed at once but delivered only on `releasePages`. */
class PageHoldingStore extends MemoryStore {
  heldPages = 0;
  private gate: Promise<void>;
  private open: () => void = () => undefined;

  constructor() {
    super();
    this.gate = new Promise((resolve) => {
      this.open = resolve;
    });
  }

  override async list(request: ListRequest): Promise<ListPage> {
    const page = await super.list(request);
    if (request.delimiter !== undefined || request.startAfter === undefined) return page;

    this.heldPages += 1;
    await this.gate;
    return page;
  }

  releasePages(): void {
    this.open();
  }
}

describe('tree walks: request counts', () => {
  /** Puts directories tree/d0, tree/d1, ... with `counts[index]` files f0, f1, ... each, and lists tree and tree/d0. */
  async function seedWalkedTree(memory: MemoryStore, mount: PathOperations, counts: number[]): Promise<void> {
    counts.forEach((count, directory) => {
      for (let file = 0; file < count; file += 1) memory.putRaw(`tree/d${directory}/f${file}`, 'x');
    });
    await mount.names('tree');
    await mount.names('tree/d0');
  }
  /** Returns the flat listings (without a delimiter) made from index `from` on, as `prefix after startAfter` or `prefix continued`. */
  function flatListingsSince(store: ControlledStore, from: number): string[] {
    return store.calls
      .slice(from)
      .filter((call) => call.operation === 'list' && (call.detail as { delimiter?: string }).delimiter === undefined)
      .map((call) => {
        const detail = call.detail as { startAfter?: string; continuationToken?: string };
        return detail.continuationToken === undefined ? `${call.key ?? ''} after ${detail.startAfter ?? ''}` : `${call.key ?? ''} continued`;
      });
  }

  it('lists walked siblings with one page', async () => {
    const { memory, mount, store } = createTestMount({ config: { metadataTtlMs: TTL_MS }, store: { maxListKeys: 10 } });
    for (let directory = 0; directory < 6; directory += 1) {
      for (let file = 0; file < 3; file += 1) memory.putRaw(`tree/d${directory}/f${file}`, 'x');
    }
    memory.putRaw('tree/d3/', '');
    memory.putRaw('tree/d4/sub/deep', 'x');
    await mount.names('tree');
    await mount.names('tree/d0');
    const start = store.calls.length;

    const listed: string[][] = [];
    for (let directory = 1; directory < 6; directory += 1) listed.push(await mount.names(`tree/d${directory}`));
    expect(await mount.names('tree/d4/sub')).toEqual(['deep']);

    expect(listed).toEqual([
      ['f0', 'f1', 'f2'],
      ['f0', 'f1', 'f2'],
      ['f0', 'f1', 'f2'],
      ['f0', 'f1', 'f2', 'sub'],
      ['f0', 'f1', 'f2'],
    ]);
    // Pages of 10 keys: d1 and d2, with d3 cut off; then d3, d4 and d4/sub, with d5 cut off; then d5.
    // The first page covered two directories, so the pages ahead start two directories apart.
    expect(callsSince(store, start)).toEqual(['list tree/', 'list tree/', 'list tree/']);
    expect(flatListingsSince(store, start)).toEqual(['tree/ after tree/d1', 'tree/ after tree/d3', 'tree/ after tree/d5']);
  });

  it('requests pages ahead at once', async () => {
    const { memory, mount, store } = createTestMount({ config: { metadataTtlMs: TTL_MS }, store: { maxListKeys: 6 } });
    await seedWalkedTree(memory, mount, [4, 4, 4, 4, 4, 4]);
    const start = store.calls.length;

    await mount.names('tree/d1');
    await settle();
    // Each page of 6 keys contains one directory completely and cuts the next one off, so each page
    // ahead starts at the next directory. All of them were requested before the walk went on.
    const requestedAhead = flatListingsSince(store, start);
    const listed: string[][] = [];
    for (let directory = 2; directory < 6; directory += 1) listed.push(await mount.names(`tree/d${directory}`));

    expect(requestedAhead).toEqual(['tree/ after tree/d1', 'tree/ after tree/d2', 'tree/ after tree/d3', 'tree/ after tree/d4', 'tree/ after tree/d5']);
    expect(listed).toEqual(Array.from({ length: 4 }, () => ['f0', 'f1', 'f2', 'f3']));
    expect(store.calls.length - start).toBe(requestedAhead.length);
  });

  it('limits the pages ahead', async () => {
    const { memory, mount, store } = createTestMount({ config: { metadataTtlMs: TTL_MS }, store: { maxListKeys: 4 } });
    await seedWalkedTree(memory, mount, Array.from({ length: 30 }, () => 3));
    const start = store.calls.length;

    await mount.names('tree/d1');
    await settle();

    // The page from d1 covers d1 and cuts off d10, which sorts after d1. So the pages ahead are one
    // directory apart, and there are TREE_PAGES_AHEAD of them while the walk stays at d1.
    const requested = flatListingsSince(store, start);
    expect(requested).toHaveLength(1 + TREE_PAGES_AHEAD);
    expect(requested[0]).toBe('tree/ after tree/d1');
  });

  it('lists a sibling past the pages ahead', async () => {
    const { memory, mount, store } = createTestMount({ config: { metadataTtlMs: TTL_MS }, store: { maxListKeys: 4 } });
    await seedWalkedTree(memory, mount, Array.from({ length: 9 }, () => 3));
    await mount.names('tree/d1');
    await settle();
    const start = store.calls.length;

    expect(await mount.names('tree/d8')).toEqual(['f0', 'f1', 'f2']);
    await settle();

    // d8 is past every page requested ahead of d1, and it is the last directory of the parent.
    expect(flatListingsSince(store, start)).toEqual(['tree/ after tree/d8']);
  });

  it('relists after a failed page ahead', async () => {
    const { memory, mount, store } = createTestMount({ config: { metadataTtlMs: TTL_MS }, store: { maxListKeys: 6 } });
    await seedWalkedTree(memory, mount, [4, 4, 4, 4, 4, 4]);
    const start = store.calls.length;
    // The third listing of tree/ without a delimiter is the page ahead that starts at d3.
    let flatListings = 0;
    store.failWhen = (operation, key) => {
      if (operation !== 'list' || key !== 'tree/') return undefined;
      flatListings += 1;
      return flatListings === 3 ? new Error('injected listing failure') : undefined;
    };

    const listed: string[][] = [];
    for (let directory = 1; directory < 6; directory += 1) listed.push(await mount.names(`tree/d${directory}`));

    expect(listed).toEqual(Array.from({ length: 5 }, () => ['f0', 'f1', 'f2', 'f3']));
    expect(flatListingsSince(store, start).filter((listing) => listing === 'tree/ after tree/d3')).toHaveLength(2);
  });

  it('keeps no page requested ahead of a local change', async () => {
    const memory = new MemoryStore({ maxListKeys: 4 });
    const { mount } = createTestMount({ config: { metadataTtlMs: TTL_MS }, memory });
    await seedWalkedTree(memory, mount, [3, 3, 3, 1]);
    // The page from d1 cuts d2 off, and the next page (the rest of d2, and d3) is requested ahead, before the write below.
    await mount.names('tree/d1');
    await settle();
    await mount.writeFile('tree/d3/new', Buffer.from('new'));

    expect(await mount.names('tree/d2')).toEqual(['f0', 'f1', 'f2']);
    expect(await mount.names('tree/d3')).toEqual(['f0', 'new']);
  });

  it('resolves lookups from the walked page', async () => {
    const { memory, mount, store } = createTestMount({ config: { metadataTtlMs: TTL_MS } });
    for (let directory = 0; directory < 3; directory += 1) memory.putRaw(`tree/d${directory}/file`, 'abc');
    await mount.names('tree');
    await mount.names('tree/d0');
    await mount.names('tree/d1');
    const start = store.calls.length;

    expect((await mount.stat('tree/d2/file')).size).toBe(3);
    expect(await errnoOfRejection(mount.stat('tree/d2/missing'))).toBe(Errno.ENOENT);
    expect(await mount.names('tree/d2')).toEqual(['file']);
    expect(callsSince(store, start)).toEqual([]);
  });

  it('lists a directory larger than a page alone', async () => {
    const { memory, mount, store } = createTestMount({ config: { metadataTtlMs: TTL_MS }, store: { maxListKeys: 4 } });
    await seedWalkedTree(memory, mount, [2, 6, 2]);
    const start = store.calls.length;

    expect(await mount.names('tree/d1')).toEqual(['f0', 'f1', 'f2', 'f3', 'f4', 'f5']);
    expect(await mount.names('tree/d2')).toEqual(['f0', 'f1']);

    // The page from d1 contains only d1's keys, so d1 and then its siblings are listed one by one.
    expect(callsSince(store, start)).toEqual(['list tree/', 'listing tree/d1/', 'listing tree/d1/', 'listing tree/d2/']);
  });

  it('keeps no page that a local change overlapped', async () => {
    const memory = new PageHoldingStore();
    const { mount } = createTestMount({ config: { metadataTtlMs: TTL_MS }, memory });
    for (let directory = 0; directory < 3; directory += 1) memory.putRaw(`tree/d${directory}/file`, 'x');
    await mount.names('tree');
    await mount.names('tree/d0');

    // The store computes the page before the file exists and returns it after the file was written.
    const walked = mount.names('tree/d1');
    await settle();
    expect(memory.heldPages).toBe(1);
    await mount.writeFile('tree/d2/new', Buffer.from('new'));
    memory.releasePages();

    expect(await walked).toEqual(['file']);
    expect(await mount.names('tree/d2')).toEqual(['file', 'new']);
  });

  it('lists the first sibling of a walk as usual', async () => {
    const { memory, mount, store } = createTestMount({ config: { metadataTtlMs: TTL_MS } });
    for (let directory = 0; directory < 3; directory += 1) memory.putRaw(`tree/d${directory}/file`, 'x');
    await mount.names('tree');
    const start = store.calls.length;

    await mount.names('tree/d0');

    expect(callsSince(store, start)).toEqual(['listing tree/d0/']);
  });
});
