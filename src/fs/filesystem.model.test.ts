/**
 * Model-based property test of the namespace and the contents of whole files.
 *
 * Random sequences of file operations (create, write at an offset, truncate,
 * rename, unlink, mkdir, rmdir, read, readdir) run against BucketFilesystem on
 * the in-memory store, mixed with changes that another client makes to the
 * bucket behind the filesystem's back (an object written or deleted with the
 * metadata TTL then advanced through the injectable clock). The reference
 * model is the bucket itself as a map from key to bytes, with directories
 * derived the way docs/semantics.md defines them: a marker `dir/` or any key
 * under `dir/`, and a directory shadows an object of the same name. After
 * every step the bucket must hold exactly the model's keys and bytes, and
 * every error must carry the errno the model predicts.
 *
 * The byte-level behaviour of one open handle (streaming parts, spill
 * files, reads of unflushed data) is covered by
 * src/write/writer.property.test.ts; here every write is a whole
 * open-write-close cycle.
 */

import { constants as fsConstants } from 'node:fs';

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

import { Errno } from './errno.js';
import { context, createTestMount, O_WRONLY, patternBytes, type TestMount } from './test-support.js';

const METADATA_TTL_MS = 5_000;
const NAMES = ['a', 'b', 'c'] as const;

type Step =
  | { kind: 'create'; path: string; length: number; seed: number }
  | { kind: 'writeAt'; path: string; offset: number; length: number; seed: number }
  | { kind: 'truncate'; path: string; size: number }
  | { kind: 'rename'; from: string; to: string }
  | { kind: 'unlink'; path: string }
  | { kind: 'mkdir'; path: string }
  | { kind: 'rmdir'; path: string }
  | { kind: 'read'; path: string }
  | { kind: 'readdir'; path: string }
  | { kind: 'foreignPut'; path: string; length: number; seed: number }
  | { kind: 'foreignDelete'; path: string };

const path: fc.Arbitrary<string> = fc.array(fc.constantFrom(...NAMES), { minLength: 1, maxLength: 3 }).map((segments) => segments.join('/'));
const directoryPath: fc.Arbitrary<string> = fc.oneof({ weight: 1, arbitrary: fc.constant('') }, { weight: 3, arbitrary: path });
const length = fc.integer({ min: 0, max: 48 });

const step: fc.Arbitrary<Step> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('create' as const), path, length, seed: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('writeAt' as const), path, offset: fc.integer({ min: 0, max: 64 }), length: fc.integer({ min: 1, max: 24 }), seed: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('truncate' as const), path, size: fc.integer({ min: 0, max: 64 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('rename' as const), from: path, to: path }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('unlink' as const), path }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('mkdir' as const), path }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('rmdir' as const), path }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('read' as const), path }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('readdir' as const), path: directoryPath }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('foreignPut' as const), path, length, seed: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('foreignDelete' as const), path }) },
);

/** The model of the bucket: its keys and bytes, with the directory rules of docs/semantics.md. */
class BucketModel {
  readonly objects = new Map<string, Buffer>();

  isDirectory(path: string): boolean {
    if (path === '') return true;
    const prefix = `${path}/`;
    for (const key of this.objects.keys()) if (key.startsWith(prefix)) return true;
    return false;
  }

  isFile(path: string): boolean {
    return this.objects.has(path) && !this.isDirectory(path);
  }

  exists(path: string): boolean {
    return this.isFile(path) || this.isDirectory(path);
  }

  /** Returns the errno of resolving the parent of `path`, or undefined when the parent is a directory. */
  parentError(path: string): number | undefined {
    const segments = path.split('/');
    for (let depth = 1; depth < segments.length; depth += 1) {
      const ancestor = segments.slice(0, depth).join('/');
      if (this.isDirectory(ancestor)) continue;
      return this.isFile(ancestor) ? Errno.ENOTDIR : Errno.ENOENT;
    }
    return undefined;
  }

  /** Names directly under a directory; a name that is both a file and a directory counts once. */
  children(path: string): string[] {
    const prefix = path === '' ? '' : `${path}/`;
    const names = new Set<string>();
    for (const key of this.objects.keys()) {
      if (!key.startsWith(prefix) || key === prefix) continue;
      names.add(key.slice(prefix.length).split('/')[0]!);
    }
    return [...names].sort();
  }

  hasChildren(path: string): boolean {
    return this.children(path).length > 0;
  }
}

function applyWrite(current: Buffer, offset: number, data: Buffer): Buffer {
  const grown = offset + data.length > current.length ? Buffer.concat([current, Buffer.alloc(offset + data.length - current.length)]) : Buffer.from(current);
  data.copy(grown, offset);
  return grown;
}

function parentOf(path: string): string {
  const slash = path.lastIndexOf('/');
  return slash < 0 ? '' : path.slice(0, slash);
}

/**
 * Renames the way rename(2) resolves its paths: the kernel resolves the
 * source's parent directory, then the target's, and fails with ENOTDIR
 * before calling the filesystem when either is not a directory.
 */
async function renameLikeTheKernel(test: TestMount, from: string, to: string): Promise<void> {
  for (const path of [from, to]) {
    const parent = parentOf(path);
    if (parent === '') continue;
    const attributes = await test.mount.stat(parent);
    if ((attributes.mode & fsConstants.S_IFMT) !== fsConstants.S_IFDIR) throw Object.assign(new Error(`${parent} is not a directory`), { errno: Errno.ENOTDIR });
  }
  await test.mount.rename(from, to);
}

/** Runs `operation` and returns its errno, or 0 when it succeeded. */
async function errnoOf(operation: () => Promise<unknown>): Promise<number> {
  try {
    await operation();
    return 0;
  } catch (error) {
    const errno = (error as { errno?: unknown }).errno;
    if (typeof errno !== 'number') throw error;
    return errno;
  }
}

/** Applies one step to the mount and to the model, checking the outcome the model predicts. */
async function applyStep(test: TestMount, model: BucketModel, action: Step): Promise<void> {
  const { mount, fs, memory, clock } = test;
  const label = JSON.stringify(action);

  switch (action.kind) {
    case 'create': {
      const data = patternBytes(action.length, action.seed);
      const expected = model.parentError(action.path) ?? (model.isDirectory(action.path) ? Errno.EISDIR : 0);
      const actual = await errnoOf(() => mount.writeFile(action.path, data));
      expect(actual, label).toBe(expected);
      if (expected === 0) model.objects.set(action.path, data);
      return;
    }

    case 'writeAt': {
      const data = patternBytes(action.length, action.seed);
      const expected = model.parentError(action.path) ?? (model.isDirectory(action.path) ? Errno.EISDIR : model.isFile(action.path) ? 0 : Errno.ENOENT);
      const actual = await errnoOf(async () => {
        const file = await mount.open(action.path, O_WRONLY);
        try {
          await fs.write(file.ino, file.fh, action.offset, data, context);
        } finally {
          await mount.close(file);
        }
      });
      expect(actual, label).toBe(expected);
      if (expected === 0) model.objects.set(action.path, applyWrite(model.objects.get(action.path)!, action.offset, data));
      return;
    }

    case 'truncate': {
      const expected = model.parentError(action.path) ?? (model.isDirectory(action.path) ? Errno.EISDIR : model.isFile(action.path) ? 0 : Errno.ENOENT);
      const actual = await errnoOf(async () => {
        const file = await mount.open(action.path, O_WRONLY);
        try {
          await fs.setattr(file.ino, { size: action.size, fh: file.fh }, context);
        } finally {
          await mount.close(file);
        }
      });
      expect(actual, label).toBe(expected);
      if (expected === 0) {
        const current = model.objects.get(action.path)!;
        model.objects.set(action.path, action.size <= current.length ? Buffer.from(current.subarray(0, action.size)) : Buffer.concat([current, Buffer.alloc(action.size - current.length)]));
      }
      return;
    }

    case 'rename': {
      const { from, to } = action;
      const sourceIsDirectory = model.isDirectory(from);
      // A directory moved onto an existing name replaces it only when it is an
      // empty directory; the key layout after that case is not specified, so
      // the model only moves directories to free names.
      if (sourceIsDirectory && model.exists(to) && from !== to) return;

      let expected = model.parentError(from) ?? model.parentError(to) ?? (model.exists(from) ? 0 : Errno.ENOENT);
      if (expected === 0 && from !== to) {
        if (sourceIsDirectory && (to + '/').startsWith(from + '/')) expected = Errno.EINVAL;
        else if (!sourceIsDirectory && model.isDirectory(to)) expected = Errno.EISDIR;
      }
      const actual = await errnoOf(() => renameLikeTheKernel(test, from, to));
      expect(actual, label).toBe(expected);
      if (expected !== 0 || from === to) return;

      if (!sourceIsDirectory) {
        model.objects.set(to, model.objects.get(from)!);
        model.objects.delete(from);
        return;
      }
      const fromPrefix = `${from}/`;
      for (const [key, body] of [...model.objects]) {
        if (!key.startsWith(fromPrefix)) continue;
        model.objects.delete(key);
        model.objects.set(`${to}/${key.slice(fromPrefix.length)}`, body);
      }
      return;
    }

    case 'unlink': {
      const expected = model.parentError(action.path) ?? (model.isDirectory(action.path) ? Errno.EISDIR : model.isFile(action.path) ? 0 : Errno.ENOENT);
      expect(await errnoOf(() => mount.unlink(action.path)), label).toBe(expected);
      if (expected === 0) model.objects.delete(action.path);
      return;
    }

    case 'mkdir': {
      const expected = model.parentError(action.path) ?? (model.exists(action.path) ? Errno.EEXIST : 0);
      expect(await errnoOf(() => mount.mkdir(action.path)), label).toBe(expected);
      if (expected === 0) model.objects.set(`${action.path}/`, Buffer.alloc(0));
      return;
    }

    case 'rmdir': {
      let expected = model.parentError(action.path) ?? (model.isDirectory(action.path) ? 0 : model.isFile(action.path) ? Errno.ENOTDIR : Errno.ENOENT);
      if (expected === 0 && model.hasChildren(action.path)) expected = Errno.ENOTEMPTY;
      expect(await errnoOf(() => mount.rmdir(action.path)), label).toBe(expected);
      if (expected === 0) model.objects.delete(`${action.path}/`);
      return;
    }

    case 'read': {
      const expected = model.parentError(action.path) ?? (model.isDirectory(action.path) ? Errno.EISDIR : model.isFile(action.path) ? 0 : Errno.ENOENT);
      let bytes: Buffer | undefined;
      const actual = await errnoOf(async () => {
        bytes = await mount.readFile(action.path);
      });
      expect(actual, label).toBe(expected);
      if (expected === 0) expect(bytes!.equals(model.objects.get(action.path)!), label).toBe(true);
      const attributes = expected === 0 ? await mount.stat(action.path) : undefined;
      if (attributes !== undefined) {
        expect(attributes.size, label).toBe(model.objects.get(action.path)!.length);
        expect(attributes.mode & fsConstants.S_IFMT, label).toBe(fsConstants.S_IFREG);
      }
      return;
    }

    case 'readdir': {
      const expected = action.path === '' ? 0 : (model.parentError(action.path) ?? (model.isDirectory(action.path) ? 0 : model.isFile(action.path) ? Errno.ENOTDIR : Errno.ENOENT));
      let names: string[] = [];
      const actual = await errnoOf(async () => {
        names = await mount.names(action.path);
      });
      expect(actual, label).toBe(expected);
      if (expected === 0) expect([...names].sort(), label).toEqual(model.children(action.path));
      return;
    }

    case 'foreignPut': {
      // Another client writes an object where the mount would show it as a file.
      if (model.parentError(action.path) !== undefined || model.isDirectory(action.path)) return;
      const data = patternBytes(action.length, action.seed);
      memory.putRaw(action.path, data);
      model.objects.set(action.path, data);
      clock.advance(METADATA_TTL_MS + 1);
      return;
    }

    case 'foreignDelete': {
      if (!model.objects.has(action.path)) return;
      await memory.delete(action.path);
      model.objects.delete(action.path);
      clock.advance(METADATA_TTL_MS + 1);
      return;
    }
  }
}

/** Returns each key's bytes as hex, keys sorted, so that a mismatch prints readably. */
function hexContents(objects: Map<string, Buffer>): Record<string, string> {
  const keys = [...objects.keys()].sort();
  return Object.fromEntries(keys.map((key) => [key, objects.get(key)!.toString('hex')]));
}

async function runSteps(steps: Step[]): Promise<void> {
  const test = createTestMount({ config: { metadataTtlMs: METADATA_TTL_MS } });
  const model = new BucketModel();
  try {
    for (const action of steps) {
      await applyStep(test, model, action);
      expect(hexContents(test.memory.snapshot()), JSON.stringify(action)).toEqual(hexContents(model.objects));
    }
    expect(test.memory.pendingUploadCount()).toBe(0);
  } finally {
    await test.fs.shutdown({ drain: false });
  }
}

describe('filesystem against a bucket model', () => {
  it('matches the model for random operations and foreign changes', async () => {
    await fc.assert(fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 30 }), runSteps), { numRuns: Number(process.env.BUCKETMOUNT_MODEL_RUNS ?? '300') });
  });

  it('truncate to the same size keeps the content', async () => {
    const test = createTestMount();
    await test.mount.writeFile('kept.txt', Buffer.from('A'));

    const file = await test.mount.open('kept.txt', O_WRONLY);
    await test.fs.setattr(file.ino, { size: 1, fh: file.fh }, context);
    await test.mount.close(file);

    expect(test.memory.getRaw('kept.txt')?.toString()).toBe('A');
    await test.fs.shutdown({ drain: false });
  });

  it('shows a foreign object only after the metadata TTL', async () => {
    const test = createTestMount({ config: { metadataTtlMs: METADATA_TTL_MS } });
    expect(await test.mount.names('')).toEqual([]);

    test.memory.putRaw('late.txt', 'late');
    expect(await test.mount.names('')).toEqual([]);

    test.clock.advance(METADATA_TTL_MS + 1);
    expect(await test.mount.names('')).toEqual(['late.txt']);
    expect((await test.mount.readFile('late.txt')).toString()).toBe('late');
    await test.fs.shutdown({ drain: false });
  });
});
