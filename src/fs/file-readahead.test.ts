import { describe, expect, it } from 'vitest';

import { FILES_AHEAD } from './file-readahead.js';
import { createTestMount, MiB, patternBytes, settle, type ControlledStore } from './test-support.js';

const TTL_MS = 5000;
const FILE_COUNT = FILES_AHEAD + 6;

function fileName(index: number): string {
  return `f${String(index).padStart(2, '0')}`;
}

/** Returns the keys of the GETs sent from index `from` on, in order. */
function getsSince(store: ControlledStore, from = 0): string[] {
  return store.calls
    .slice(from)
    .filter((call) => call.operation === 'get')
    .map((call) => call.key ?? '');
}

function createListedDirectory(options: { ttlMs?: number } = {}) {
  const test = createTestMount({ config: { metadataTtlMs: options.ttlMs ?? TTL_MS } });
  for (let index = 0; index < FILE_COUNT; index += 1) test.memory.putRaw(`dir/${fileName(index)}`, patternBytes(4096, index + 1));
  return test;
}

describe('FileReadahead', () => {
  it('prefetches files opened in name order', async () => {
    const { mount, store } = createListedDirectory();
    await mount.names('dir');

    await mount.readFile(`dir/${fileName(0)}`);
    await mount.readFile(`dir/${fileName(1)}`);
    await settle();
    const expected = Array.from({ length: FILES_AHEAD + 2 }, (_, index) => `dir/${fileName(index)}`);
    expect(getsSince(store).sort()).toEqual(expected);

    for (let index = 2; index < FILE_COUNT; index += 1) {
      expect((await mount.readFile(`dir/${fileName(index)}`)).equals(patternBytes(4096, index + 1))).toBe(true);
    }
    await settle();

    // Every file was fetched once, whether ahead of its open or by its read.
    const all = Array.from({ length: FILE_COUNT }, (_, index) => `dir/${fileName(index)}`);
    expect(getsSince(store).sort()).toEqual(all);
  });

  it('prefetches nothing for opens out of name order', async () => {
    const { mount, store } = createListedDirectory();
    await mount.names('dir');

    await mount.readFile(`dir/${fileName(9)}`);
    await mount.readFile(`dir/${fileName(5)}`);
    await mount.readFile(`dir/${fileName(2)}`);
    await mount.readFile(`dir/${fileName(2)}`);
    await settle();

    expect(getsSince(store)).toEqual([`dir/${fileName(9)}`, `dir/${fileName(5)}`, `dir/${fileName(2)}`]);
  });

  it('prefetches nothing when opens are further apart than the TTL', async () => {
    const { mount, store, clock } = createListedDirectory({ ttlMs: TTL_MS });
    await mount.names('dir');

    await mount.readFile(`dir/${fileName(0)}`);
    clock.advance(TTL_MS);
    await mount.names('dir');
    await mount.readFile(`dir/${fileName(1)}`);
    await settle();

    expect(getsSince(store)).toEqual([`dir/${fileName(0)}`, `dir/${fileName(1)}`]);
  });

  it('prefetches nothing without a cached listing', async () => {
    const { mount, store } = createListedDirectory({ ttlMs: 0 });

    await mount.readFile(`dir/${fileName(0)}`);
    await mount.readFile(`dir/${fileName(1)}`);
    await mount.readFile(`dir/${fileName(2)}`);
    await settle();

    expect(getsSince(store)).toEqual([`dir/${fileName(0)}`, `dir/${fileName(1)}`, `dir/${fileName(2)}`]);
  });

  it('skips empty files and files above the first fetch', async () => {
    const { memory, mount, store } = createTestMount({ config: { metadataTtlMs: TTL_MS } });
    memory.putRaw('dir/a', 'a');
    memory.putRaw('dir/b', 'b');
    memory.putRaw('dir/c-empty', '');
    memory.putRaw('dir/d-large', patternBytes(2 * MiB));
    memory.putRaw('dir/e', 'e');
    await mount.names('dir');

    await mount.readFile('dir/a');
    await mount.readFile('dir/b');
    await settle();

    expect(getsSince(store)).toEqual(['dir/a', 'dir/e', 'dir/b']);
  });

  it('pins each prefetch to the listed version', async () => {
    const { mount, store } = createListedDirectory();
    await mount.names('dir');

    await mount.readFile(`dir/${fileName(0)}`);
    await mount.readFile(`dir/${fileName(1)}`);
    await settle();

    const prefetches = store.calls.filter((call) => call.operation === 'get' && call.key !== `dir/${fileName(0)}` && call.key !== `dir/${fileName(1)}`);
    expect(prefetches).toHaveLength(FILES_AHEAD);
    for (const call of prefetches) expect((call.detail as { ifVersion?: string }).ifVersion).toMatch(/.+/);
  });

  it('reads the new content of a file replaced after the listing', async () => {
    const { memory, mount, store } = createListedDirectory();
    await mount.names('dir');
    memory.putRaw(`dir/${fileName(3)}`, 'replaced');

    await mount.readFile(`dir/${fileName(0)}`);
    await mount.readFile(`dir/${fileName(1)}`);
    await settle();
    const start = store.calls.length;

    expect((await mount.readFile(`dir/${fileName(2)}`)).equals(patternBytes(4096, 3))).toBe(true);
    expect((await mount.readFile(`dir/${fileName(3)}`)).toString()).toBe('replaced');
    expect(store.calls.slice(start).map((call) => `${call.operation} ${call.key}`)).toContain(`head dir/${fileName(3)}`);
  });
});
