import { constants as fsConstants } from 'node:fs';

import { describe, expect, it } from 'vitest';

import { ROOT_INODE } from '../fuse/types.js';
import { Errno } from './errno.js';
import { RENAME_EXCHANGE, RENAME_NOREPLACE } from './filesystem.js';
import { context, createTestMount, errnoOfRejection, O_CREAT, O_EXCL, O_RDONLY, O_WRONLY } from './test-support.js';

const { S_IFMT, S_IFDIR, S_IFREG, S_IFIFO } = fsConstants;

describe('directories', () => {
  it('mkdir writes a marker and rmdir deletes it', async () => {
    const { memory, mount } = createTestMount();

    await mount.mkdir('new');
    expect(memory.getRaw('new/')?.length).toBe(0);
    expect(await mount.names('')).toEqual(['new']);
    expect((await mount.stat('new')).mode & S_IFMT).toBe(S_IFDIR);

    await mount.rmdir('new');
    expect(memory.keys()).toEqual([]);
    expect(await mount.names('')).toEqual([]);
    expect(await errnoOfRejection(mount.stat('new'))).toBe(Errno.ENOENT);
  });

  it('mkdir persists for a second mount of the same bucket', async () => {
    const first = createTestMount();
    await first.mount.mkdir('kept');
    const second = createTestMount({ memory: first.memory });
    expect(await second.mount.names('')).toEqual(['kept']);
  });

  it('mkdir of an existing name is EEXIST', async () => {
    const { memory, mount } = createTestMount();
    memory.putRaw('file', 'x');
    memory.putRaw('dir/child', 'x');
    expect(await errnoOfRejection(mount.mkdir('file'))).toBe(Errno.EEXIST);
    expect(await errnoOfRejection(mount.mkdir('dir'))).toBe(Errno.EEXIST);
  });

  it('rmdir of a non-empty directory is ENOTEMPTY', async () => {
    const { memory, mount } = createTestMount();
    memory.putRaw('full/', '');
    memory.putRaw('full/child', 'x');
    memory.putRaw('implicit/child', 'x');

    expect(await errnoOfRejection(mount.rmdir('full'))).toBe(Errno.ENOTEMPTY);
    expect(await errnoOfRejection(mount.rmdir('implicit'))).toBe(Errno.ENOTEMPTY);
    expect(memory.getRaw('full/')).toBeDefined();
  });

  it('keeps an emptied implicit directory for rmdir', async () => {
    const { memory, mount, clock } = createTestMount({ config: { metadataTtlMs: 5000 } });
    memory.putRaw('implicit/a', 'x');
    memory.putRaw('implicit/b', 'x');
    const directory = await mount.lookup('implicit');

    // Like rm -r: unlink through the directory's inode, later than the TTL of its entry, then rmdir.
    clock.advance(4000);
    await mount.fs.unlink(directory, 'a', context);
    await mount.fs.unlink(directory, 'b', context);
    clock.advance(4000);

    expect((await mount.stat('implicit')).mode & 0o170000).toBe(0o040000);
    await mount.fs.rmdir(ROOT_INODE, 'implicit', context);
    expect(await errnoOfRejection(mount.stat('implicit'))).toBe(Errno.ENOENT);
  });

  it('rmdir without a metadata cache', async () => {
    const { memory, mount } = createTestMount({ config: { metadataTtlMs: 0 } });
    memory.putRaw('implicit/a', 'x');
    const directory = await mount.lookup('implicit');
    await mount.fs.unlink(directory, 'a', context);

    // The bucket no longer shows the directory, but the kernel still has its inode.
    await mount.fs.rmdir(ROOT_INODE, 'implicit', context);
    expect(await errnoOfRejection(mount.fs.rmdir(ROOT_INODE, 'implicit', context))).toBe(Errno.ENOENT);
  });

  it('rmdir without a cache respects writers', async () => {
    const { memory, mount } = createTestMount({ config: { metadataTtlMs: 0 } });
    memory.putRaw('implicit/a', 'x');
    const directory = await mount.lookup('implicit');
    await mount.open('implicit/new', O_CREAT | O_WRONLY);
    await mount.fs.unlink(directory, 'a', context);

    expect(await errnoOfRejection(mount.fs.rmdir(ROOT_INODE, 'implicit', context))).toBe(Errno.ENOTEMPTY);
  });

  it('rmdir of a file is ENOTDIR and unlink of a directory is EISDIR', async () => {
    const { memory, mount } = createTestMount();
    memory.putRaw('file', 'x');
    memory.putRaw('dir/', '');
    expect(await errnoOfRejection(mount.rmdir('file'))).toBe(Errno.ENOTDIR);
    expect(await errnoOfRejection(mount.unlink('dir'))).toBe(Errno.EISDIR);
    expect(await errnoOfRejection(mount.unlink('missing'))).toBe(Errno.ENOENT);
  });

  it('rmdir of a directory holding a file open for writing is ENOTEMPTY', async () => {
    const { mount } = createTestMount();
    await mount.mkdir('d');
    const file = await mount.open('d/pending', O_WRONLY | O_CREAT);
    expect(await errnoOfRejection(mount.rmdir('d'))).toBe(Errno.ENOTEMPTY);
    await mount.close(file);
  });

  it('removes a nested tree depth first', async () => {
    const { memory, mount } = createTestMount();
    memory.putRaw('tree/', '');
    memory.putRaw('tree/a.txt', 'a');
    memory.putRaw('tree/sub/', '');
    memory.putRaw('tree/sub/b.txt', 'b');
    memory.putRaw('tree/sub/deeper/c.txt', 'c');
    memory.putRaw('keep.txt', 'k');

    await mount.removeTree('tree');
    expect(memory.keys()).toEqual(['keep.txt']);
    expect(await mount.names('')).toEqual(['keep.txt']);
  });
});

describe('rename', () => {
  it('replaces an existing file', async () => {
    const { memory, mount } = createTestMount();
    memory.putRaw('source.txt', 'new content');
    memory.putRaw('target.txt', 'old content');
    const targetIno = await mount.lookup('target.txt');

    await mount.rename('source.txt', 'target.txt');

    expect(memory.keys()).toEqual(['target.txt']);
    expect(memory.getRaw('target.txt')?.toString()).toBe('new content');
    expect(await mount.names('')).toEqual(['target.txt']);
    expect((await mount.readFile('target.txt')).toString()).toBe('new content');
    expect(await mount.lookup('target.txt')).not.toBe(targetIno);
    expect(await errnoOfRejection(mount.stat('source.txt'))).toBe(Errno.ENOENT);
  });

  it('moves a directory with nested files', async () => {
    const { memory, mount } = createTestMount();
    memory.putRaw('from/', '');
    memory.putRaw('from/a.txt', 'a');
    memory.putRaw('from/sub/b.txt', 'b');
    memory.putRaw('from/sub/deeper/c.txt', 'c');
    memory.putRaw('fromage', 'not inside');
    const nestedIno = await mount.lookup('from/sub/b.txt');

    await mount.rename('from', 'to');

    expect(memory.keys()).toEqual(['fromage', 'to/', 'to/a.txt', 'to/sub/b.txt', 'to/sub/deeper/c.txt']);
    expect(await mount.names('')).toEqual(['fromage', 'to']);
    expect((await mount.readFile('to/sub/deeper/c.txt')).toString()).toBe('c');
    expect(await mount.lookup('to/sub/b.txt')).toBe(nestedIno);
    expect(await errnoOfRejection(mount.stat('from'))).toBe(Errno.ENOENT);
  });

  it('RENAME_NOREPLACE onto an existing name is EEXIST', async () => {
    const { memory, mount } = createTestMount();
    memory.putRaw('a', 'a');
    memory.putRaw('b', 'b');
    expect(await errnoOfRejection(mount.rename('a', 'b', RENAME_NOREPLACE))).toBe(Errno.EEXIST);
    await mount.rename('a', 'c', RENAME_NOREPLACE);
    expect(memory.keys()).toEqual(['b', 'c']);
  });

  it('RENAME_EXCHANGE is EINVAL', async () => {
    const { memory, mount } = createTestMount();
    memory.putRaw('a', 'a');
    memory.putRaw('b', 'b');
    expect(await errnoOfRejection(mount.rename('a', 'b', RENAME_EXCHANGE))).toBe(Errno.EINVAL);
  });

  it('rejects file onto directory, directory onto file, and into itself', async () => {
    const { memory, mount } = createTestMount();
    memory.putRaw('file', 'x');
    memory.putRaw('dir/x', 'x');
    memory.putRaw('full/y', 'y');
    expect(await errnoOfRejection(mount.rename('file', 'dir'))).toBe(Errno.EISDIR);
    expect(await errnoOfRejection(mount.rename('dir', 'file'))).toBe(Errno.ENOTDIR);
    expect(await errnoOfRejection(mount.rename('dir', 'dir/inner'))).toBe(Errno.EINVAL);
    expect(await errnoOfRejection(mount.rename('dir', 'full'))).toBe(Errno.ENOTEMPTY);
  });

  it('copies with the source version as a precondition', async () => {
    const { memory, mount, store } = createTestMount();
    memory.putRaw('a', 'a');
    await mount.rename('a', 'b');
    const copy = store.calls.find((call) => call.operation === 'copy');
    expect(copy?.key).toBe('a');
    expect(copy?.detail).toBe('b');
  });

  it('renames a file that is still open for writing', async () => {
    const { memory, mount, fs } = createTestMount();
    const file = await mount.open('draft', O_WRONLY | O_CREAT);
    await fs.write(file.ino, file.fh, 0, Buffer.from('first'), context);
    await mount.rename('draft', 'final');
    await fs.write(file.ino, file.fh, 5, Buffer.from(' second'), context);
    await mount.close(file);

    expect(memory.keys()).toEqual(['final']);
    expect(memory.getRaw('final')?.toString()).toBe('first second');
  });
});

describe('inodes', () => {
  it('counts readdirplus entries as lookups and drops them at forget', async () => {
    const { memory, mount, fs } = createTestMount();
    memory.putRaw('d/a', 'a');
    memory.putRaw('d/b', 'b');
    const directoryIno = await mount.lookup('d');
    const baseline = fs.statistics().inodes;

    const entries = await mount.readdir('d', { plus: true });
    const a = entries.find((entry) => entry.name === 'a')!;
    const b = entries.find((entry) => entry.name === 'b')!;
    expect(fs.statistics().inodes).toBe(baseline + 2);

    // One reference from readdirplus and one from this lookup.
    expect(await mount.lookup('d/a')).toBe(a.ino);
    fs.forget(a.ino, 1);
    expect((await fs.getattr(a.ino, undefined, context)).attr.size).toBe(1);
    fs.forget(a.ino, 1);
    expect(await errnoOfRejection(fs.getattr(a.ino, undefined, context))).toBe(Errno.ESTALE);

    fs.forget(b.ino, 1);
    expect(fs.statistics().inodes).toBe(baseline);
    expect((await fs.getattr(directoryIno, undefined, context)).attr.ino).toBe(directoryIno);
  });

  it('drops inodes numbered by plain readdir at releasedir', async () => {
    const { memory, mount, fs } = createTestMount();
    for (let index = 0; index < 50; index += 1) memory.putRaw(`d/f${index}`, 'x');
    await mount.lookup('d');
    const baseline = fs.statistics().inodes;

    const entries = await mount.readdir('d');
    expect(entries).toHaveLength(52);
    expect(fs.statistics().inodes).toBe(baseline);
  });

  it('keeps entry numbers while another listing of the directory is open', async () => {
    const { memory, mount, fs } = createTestMount();
    memory.putRaw('d/a', 'a');
    const directory = await mount.lookup('d');

    const first = await fs.opendir(directory, 0, context);
    const second = await fs.opendir(directory, 0, context);
    await fs.readdir(directory, first.fh, 0, 4096, false, context);
    const entries = await fs.readdir(directory, second.fh, 0, 4096, true, context);
    await fs.releasedir(directory, first.fh);

    fs.readdirAccepted(entries);
    await fs.releasedir(directory, second.fh);
    const a = entries.find((entry) => entry.name === 'a')!;
    expect((await fs.getattr(a.ino, undefined, context)).attr.size).toBe(1);
    expect(await mount.lookup('d/a')).toBe(a.ino);
  });

  it('keeps readdirplus entries the kernel did not accept out of the lookup count', async () => {
    const { memory, mount, fs } = createTestMount();
    memory.putRaw('d/a', 'a');
    await mount.lookup('d');
    const baseline = fs.statistics().inodes;

    await mount.readdir('d', { plus: true, accept: false });
    expect(fs.statistics().inodes).toBe(baseline);
  });

  it('keeps an open file after forget until release', async () => {
    const { memory, mount, fs } = createTestMount();
    memory.putRaw('f', 'content');
    const file = await mount.open('f', O_RDONLY);
    fs.forget(file.ino, 1);
    expect((await fs.read(file.ino, file.fh, 0, 100, context)).toString()).toBe('content');
    await fs.release(file.ino, file.fh, 0);
    expect(await errnoOfRejection(fs.getattr(file.ino, undefined, context))).toBe(Errno.ESTALE);
  });
});

describe('attributes', () => {
  it('reports modes, owner and mtime from the config and the object', async () => {
    const { memory, mount } = createTestMount({ config: { uid: 123, gid: 456, fileMode: 0o600, dirMode: 0o700 } });
    const lastModified = new Date(Date.UTC(2025, 5, 1));
    memory.putRaw('d/f', 'abc', { lastModified });

    const file = await mount.stat('d/f');
    expect(file.mode).toBe(S_IFREG | 0o600);
    expect(file.uid).toBe(123);
    expect(file.gid).toBe(456);
    expect(file.size).toBe(3);
    expect(file.mtimeMs).toBe(lastModified.getTime());
    expect((await mount.stat('d')).mode).toBe(S_IFDIR | 0o700);
  });

  it('reports object times in whole seconds', async () => {
    const { memory, mount } = createTestMount();
    memory.putRaw('d/f', 'abc', { lastModified: new Date(Date.UTC(2025, 5, 1, 0, 0, 7, 750)) });

    expect((await mount.stat('d/f')).mtimeMs).toBe(Date.UTC(2025, 5, 1, 0, 0, 7));
  });

  it('accepts chmod, chown and utimens and keeps them in memory', async () => {
    const { memory, mount, fs } = createTestMount();
    memory.putRaw('f', 'abc');
    const ino = await mount.lookup('f');

    const reply = await fs.setattr(ino, { mode: 0o100755, uid: 7, gid: 8, mtimeMs: 1_000_000, atimeMs: 2_000_000 }, context);
    expect(reply.attr.mode).toBe(S_IFREG | 0o755);
    expect(reply.attr.uid).toBe(7);
    expect(reply.attr.mtimeMs).toBe(1_000_000);
    expect(reply.attr.atimeMs).toBe(2_000_000);
    expect((await mount.stat('f')).mode).toBe(S_IFREG | 0o755);
    expect(memory.getRaw('f')?.toString()).toBe('abc');
  });

  it('getattr shows a foreign change after the TTL', async () => {
    const { memory, mount, fs, clock } = createTestMount({ config: { metadataTtlMs: 1000 } });
    memory.putRaw('f', 'abc');
    const ino = await mount.lookup('f');
    memory.putRaw('f', 'abcdef');

    expect((await fs.getattr(ino, undefined, context)).attr.size).toBe(3);
    clock.advance(1001);
    expect((await fs.getattr(ino, undefined, context)).attr.size).toBe(6);

    await memory.delete('f');
    clock.advance(1001);
    expect(await errnoOfRejection(fs.getattr(ino, undefined, context))).toBe(Errno.ENOENT);
  });

  it('replies with the configured timeouts', async () => {
    const { memory, fs } = createTestMount({ config: { attrTimeoutSeconds: 7, entryTimeoutSeconds: 9 } });
    memory.putRaw('f', 'x');
    const entry = await fs.lookup(ROOT_INODE, 'f', context);
    expect(entry.attrTimeout).toBe(7);
    expect(entry.entryTimeout).toBe(9);
  });

  it('reports large statfs totals', async () => {
    const { fs } = createTestMount();
    const reply = await fs.statfs(ROOT_INODE, context);
    expect(reply.blocks * reply.blockSize).toBeGreaterThanOrEqual(2 ** 50);
    expect(reply.blocksAvailable).toBe(reply.blocks);
    expect(reply.nameMax).toBe(255);
    expect(reply.filesFree).toBeGreaterThan(1e9);
  });
});

describe('creation', () => {
  it('create with O_EXCL on an existing file is EEXIST', async () => {
    const { memory, fs } = createTestMount();
    memory.putRaw('exists', 'x');
    await fs.lookup(ROOT_INODE, 'exists', context);
    expect(await errnoOfRejection(fs.create(ROOT_INODE, 'exists', 0o644, O_WRONLY | O_CREAT | O_EXCL, context))).toBe(Errno.EEXIST);
  });

  it('mknod creates an empty regular file and rejects other types', async () => {
    const { memory, fs } = createTestMount();
    const entry = await fs.mknod(ROOT_INODE, 'empty', S_IFREG | 0o644, 0, context);
    expect(entry.attr.size).toBe(0);
    expect(memory.getRaw('empty')?.length).toBe(0);
    expect(await errnoOfRejection(fs.mknod(ROOT_INODE, 'fifo', S_IFIFO | 0o644, 0, context))).toBe(Errno.EPERM);
  });

  it('a created file is listed before its upload', async () => {
    const { memory, mount } = createTestMount();
    const file = await mount.open('pending.txt', O_WRONLY | O_CREAT);
    expect(await mount.names('')).toEqual(['pending.txt']);
    expect(memory.keys()).toEqual([]);
    await mount.close(file);
    expect(memory.keys()).toEqual(['pending.txt']);
    expect(memory.getRaw('pending.txt')?.length).toBe(0);
  });

  it('unlink of a file open for writing keeps it out of the bucket', async () => {
    const { memory, mount, fs } = createTestMount();
    const file = await mount.open('temp', O_WRONLY | O_CREAT);
    await fs.write(file.ino, file.fh, 0, Buffer.from('scratch'), context);
    await mount.unlink('temp');
    await mount.close(file);
    expect(memory.keys()).toEqual([]);
    expect(await mount.names('')).toEqual([]);
  });
});

describe('read-only mount', () => {
  it('rejects every change with EROFS', async () => {
    const { memory, mount, fs } = createTestMount({ config: { readOnly: true } });
    memory.putRaw('f', 'x');
    memory.putRaw('d/g', 'y');
    const ino = await mount.lookup('f');

    expect(await errnoOfRejection(fs.open(ino, O_WRONLY, context))).toBe(Errno.EROFS);
    expect(await errnoOfRejection(fs.create(ROOT_INODE, 'new', 0o644, O_WRONLY | O_CREAT, context))).toBe(Errno.EROFS);
    expect(await errnoOfRejection(fs.mknod(ROOT_INODE, 'node', S_IFREG, 0, context))).toBe(Errno.EROFS);
    expect(await errnoOfRejection(mount.mkdir('newdir'))).toBe(Errno.EROFS);
    expect(await errnoOfRejection(mount.unlink('f'))).toBe(Errno.EROFS);
    expect(await errnoOfRejection(mount.rmdir('d'))).toBe(Errno.EROFS);
    expect(await errnoOfRejection(mount.rename('f', 'g'))).toBe(Errno.EROFS);
    expect(await errnoOfRejection(fs.setattr(ino, { size: 0 }, context))).toBe(Errno.EROFS);
    expect(await errnoOfRejection(fs.setattr(ino, { mode: 0o600 }, context))).toBe(Errno.EROFS);

    expect((await mount.readFile('f')).toString()).toBe('x');
    expect(memory.keys()).toEqual(['d/g', 'f']);
  });
});

describe('page cache on open', () => {
  /** Opens `path` read-only and returns the handle with the keepCache flag the kernel would get. */
  async function openForReading(mount: ReturnType<typeof createTestMount>['mount'], fs: ReturnType<typeof createTestMount>['fs'], path: string) {
    const ino = await mount.lookup(path);
    const reply = await fs.open(ino, O_RDONLY, context);
    return { ino, fh: reply.fh, keepCache: reply.keepCache === true };
  }

  it('keeps pages when the same version is reopened', async () => {
    const { memory, mount, fs } = createTestMount();
    memory.putRaw('f', 'first');

    const first = await openForReading(mount, fs, 'f');
    expect(first.keepCache).toBe(false);
    await mount.close(first);

    const second = await openForReading(mount, fs, 'f');
    expect(second.keepCache).toBe(true);
    await mount.close(second);
  });

  it('drops pages when the object changed', async () => {
    const { memory, mount, fs, clock } = createTestMount({ config: { metadataTtlMs: 1000 } });
    memory.putRaw('f', 'first');
    await mount.close(await openForReading(mount, fs, 'f'));

    memory.putRaw('f', 'second version');
    clock.advance(1001);
    const changed = await openForReading(mount, fs, 'f');
    expect(changed.keepCache).toBe(false);
    await mount.close(changed);

    const again = await openForReading(mount, fs, 'f');
    expect(again.keepCache).toBe(true);
    await mount.close(again);
  });

  it('drops pages while a handle reads an older version', async () => {
    const { memory, mount, fs, clock } = createTestMount({ config: { metadataTtlMs: 1000 } });
    memory.putRaw('f', 'first');
    const old = await openForReading(mount, fs, 'f');

    memory.putRaw('f', 'second version');
    clock.advance(1001);
    const newer = await openForReading(mount, fs, 'f');
    expect(newer.keepCache).toBe(false);
    await mount.close(newer);

    // The old handle may still add pages of the first version, so the next open drops them too.
    const whileOldOpen = await openForReading(mount, fs, 'f');
    expect(whileOldOpen.keepCache).toBe(false);
    await mount.close(whileOldOpen);
    await mount.close(old);

    const afterOldClosed = await openForReading(mount, fs, 'f');
    expect(afterOldClosed.keepCache).toBe(false);
    await mount.close(afterOldClosed);
    const settled = await openForReading(mount, fs, 'f');
    expect(settled.keepCache).toBe(true);
    await mount.close(settled);
  });

  it('asks for no flush on read-only opens only', async () => {
    const { memory, mount, fs } = createTestMount();
    memory.putRaw('f', 'first');

    const reading = await openForReading(mount, fs, 'f');
    expect((await fs.open(reading.ino, O_RDONLY, context)).noFlush).toBe(true);
    const writing = await fs.open(reading.ino, O_WRONLY, context);
    expect(writing.noFlush).toBeUndefined();
    await mount.close({ ino: reading.ino, fh: writing.fh });
  });

  it('drops pages after a write through the mount', async () => {
    const { memory, mount, fs } = createTestMount();
    memory.putRaw('f', 'first');
    await mount.close(await openForReading(mount, fs, 'f'));

    await mount.writeFile('f', Buffer.from('written here'));
    const afterWrite = await openForReading(mount, fs, 'f');
    expect(afterWrite.keepCache).toBe(false);
    await mount.close(afterWrite);
  });
});
