import { constants as fsConstants } from 'node:fs';

import { describe, expect, it } from 'vitest';

import { Errno } from './errno.js';
import { context, createTestMount, errnoOfRejection } from './test-support.js';

const { S_IFMT, S_IFDIR, S_IFREG } = fsConstants;

describe('directory model', () => {
  it('shows implicit directories of a nested key', async () => {
    const { memory, mount } = createTestMount();
    memory.putRaw('a/b/c.txt', 'hello');

    expect(await mount.names('')).toEqual(['a']);
    expect(await mount.names('a')).toEqual(['b']);
    expect(await mount.names('a/b')).toEqual(['c.txt']);
    expect((await mount.stat('a')).mode & S_IFMT).toBe(S_IFDIR);
    expect((await mount.stat('a/b')).mode & S_IFMT).toBe(S_IFDIR);
    expect((await mount.stat('a/b/c.txt')).size).toBe(5);
    expect((await mount.readFile('a/b/c.txt')).toString()).toBe('hello');
  });

  it('lists 2,500 keys completely with small buffers', async () => {
    const { memory, mount, store } = createTestMount();
    const expected: string[] = [];
    for (let index = 0; index < 2500; index += 1) {
      const name = `file-${String(index).padStart(5, '0')}`;
      memory.putRaw(`big/${name}`, 'x');
      expected.push(name);
    }

    const plain = await mount.names('big', { bufferSize: 200 });
    expect(plain).toEqual(expected);
    expect(store.count('list')).toBeGreaterThanOrEqual(3);

    const plus = await mount.names('big', { bufferSize: 400, plus: true });
    expect(plus).toEqual(expected);
  });

  it('serves the first readdir from the start-up listing of the root', async () => {
    const { memory, mount, store, fs } = createTestMount();
    for (const name of ['a', 'b', 'c']) memory.putRaw(name, name);

    await fs.prefetchRootListing();
    expect(store.count('list')).toBe(1);

    expect(await mount.names('')).toEqual(['a', 'b', 'c']);
    expect(store.count('list')).toBe(1);
  });

  it('joins a root listing still in flight instead of listing again', async () => {
    const { memory, mount, store, fs } = createTestMount();
    for (const name of ['a', 'b']) memory.putRaw(`d-${name}/x`, name);

    const prefetch = fs.prefetchRootListing();
    const names = await mount.names('');
    await prefetch;

    expect(names).toEqual(['d-a', 'd-b']);
    expect(store.count('list')).toBe(1);
  });

  it('lists a root of several pages fully after the one-page prefetch', async () => {
    const { memory, mount, store, fs } = createTestMount();
    const expected: string[] = [];
    for (let index = 0; index < 2500; index += 1) {
      const name = `file-${String(index).padStart(5, '0')}`;
      memory.putRaw(name, 'x');
      expected.push(name);
    }

    await fs.prefetchRootListing();
    expect(store.count('list')).toBe(1);

    expect(await mount.names('')).toEqual(expected);
    expect(store.count('list')).toBeGreaterThanOrEqual(4);
  });

  it('lists one entry per offset even when a buffer fits one entry', async () => {
    const { memory, mount } = createTestMount();
    for (const name of ['a', 'b', 'c']) memory.putRaw(`d/${name}`, name);

    const entries = await mount.readdir('d', { bufferSize: 1 });
    expect(entries.map((entry) => entry.name)).toEqual(['.', '..', 'a', 'b', 'c']);
    expect(entries.map((entry) => entry.nextOffset)).toEqual([1, 2, 3, 4, 5]);
  });

  it('shows a directory and shadows a file of the same name', async () => {
    const { memory, mount } = createTestMount();
    memory.putRaw('out', 'file body');
    memory.putRaw('out/x', 'inner');

    expect(await mount.names('')).toEqual(['out']);
    expect((await mount.stat('out')).mode & S_IFMT).toBe(S_IFDIR);
    expect(await mount.names('out')).toEqual(['x']);
  });

  it('treats a marker with a body as a directory', async () => {
    const { memory, mount } = createTestMount();
    memory.putRaw('photos/', 'a body that is not shown');

    expect(await mount.names('')).toEqual(['photos']);
    expect((await mount.stat('photos')).mode & S_IFMT).toBe(S_IFDIR);
    expect(await mount.names('photos')).toEqual([]);
  });

  it('skips keys that cannot be paths without aliasing', async () => {
    const { memory, mount, fs } = createTestMount();
    memory.putRaw('d/good', 'good');
    memory.putRaw('d//empty-segment', 'bad');
    memory.putRaw('d/./dot', 'bad');
    memory.putRaw('d/../dot-dot', 'bad');
    memory.putRaw('d/..', 'bad');
    memory.putRaw(`d/${'n'.repeat(256)}`, 'bad');
    memory.putRaw('d/nul\u0000name', 'bad');

    expect(await mount.names('d')).toEqual(['good']);
    expect(fs.statistics().skippedKeys).toBe(6);

    // '..' and '.' are resolved by the kernel, so the nearest a caller gets is these names, which must not reach the bad keys.
    expect(await errnoOfRejection(mount.stat('d/empty-segment'))).toBe(Errno.ENOENT);
    expect(await errnoOfRejection(mount.stat('d/dot'))).toBe(Errno.ENOENT);
    expect(await errnoOfRejection(mount.stat(`d/${'n'.repeat(256)}`))).toBe(Errno.ENAMETOOLONG);
    expect(await errnoOfRejection(fs.lookup(1, 'nul\u0000name', context))).toBe(Errno.EINVAL);
  });

  it('reaches nothing outside the mounted prefix', async () => {
    const { memory, mount } = createTestMount({ config: { prefix: 'team/' } });
    memory.putRaw('team/data.csv', 'inside');
    memory.putRaw('team/sub/x', 'inside');
    memory.putRaw('other/secret', 'outside');
    memory.putRaw('teammate/file', 'outside');
    memory.putRaw('team', 'outside');

    expect(await mount.names('')).toEqual(['data.csv', 'sub']);
    expect((await mount.readFile('data.csv')).toString()).toBe('inside');
    expect(await errnoOfRejection(mount.stat('other'))).toBe(Errno.ENOENT);
    expect(await errnoOfRejection(mount.stat('secret'))).toBe(Errno.ENOENT);

    await mount.writeFile('new.txt', Buffer.from('written'));
    expect(memory.getRaw('team/new.txt')?.toString()).toBe('written');
    expect(memory.getRaw('new.txt')).toBeUndefined();
  });

  it('uses the listing for readdirplus attributes without a HEAD per entry', async () => {
    const { memory, mount, store } = createTestMount();
    for (let index = 0; index < 20; index += 1) memory.putRaw(`many/f${index}`, 'x'.repeat(index));
    await mount.lookup('many');
    const headsAfterLookup = store.count('head');

    const entries = await mount.readdir('many', { plus: true });
    const files = entries.filter((entry) => entry.name.startsWith('f'));
    expect(files).toHaveLength(20);
    for (const entry of files) {
      expect(entry.entry!.attr.size).toBe(Number(entry.name.slice(1)));
      expect(entry.entry!.attr.mode & S_IFMT).toBe(S_IFREG);
    }
    expect(store.count('head')).toBe(headsAfterLookup);
  });

  it('answers lookups from a fresh listing and asks again after the TTL', async () => {
    const { memory, mount, store, clock, fs } = createTestMount({ config: { metadataTtlMs: 1000 } });
    memory.putRaw('dir/one', '1');
    await mount.names('dir');
    const listsBefore = store.count('list');
    const headsBefore = store.count('head');

    await mount.stat('dir/one');
    expect(await errnoOfRejection(mount.stat('dir/two'))).toBe(Errno.ENOENT);
    expect(store.count('head')).toBe(headsBefore);

    memory.putRaw('dir/two', '22');
    expect(await errnoOfRejection(mount.stat('dir/two'))).toBe(Errno.ENOENT);
    clock.advance(1001);
    expect((await mount.stat('dir/two')).size).toBe(2);
    expect(store.count('list')).toBeGreaterThan(listsBefore);
    expect(fs.config.metadataTtlMs).toBe(1000);
  });
});
