/**
 * The store conformance suite: one set of behaviour tests that every
 * `ObjectStore` implementation runs, so that the in-memory model, S3 and GCS
 * are held to the same contract.
 *
 * Each test gets a fresh, empty bucket from the factory and releases it with
 * `cleanup()`. Part sizes follow `store.limits.minPartSize`, so the same
 * multipart tests run against the 5 MiB minimum of a real server and against
 * a small minimum configured on the in-memory store.
 */

import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import {
  AbortedError,
  InvalidRequestError,
  NoSuchBucketError,
  NotFoundError,
  PreconditionFailedError,
  StoreError,
} from '../../src/store/errors.js';
import { bodyLength, bodyPieces, type ListPage, type ListRequest, type ObjectStore } from '../../src/store/types.js';

export interface StoreFixture {
  /** A store on a fresh, empty bucket. */
  store: ObjectStore;
  /** A store of the same kind on a bucket that does not exist. */
  storeForMissingBucket?: () => ObjectStore;
  cleanup(): Promise<void>;
}

export interface ConformanceOptions {
  /** Runs the listing of 1,001 keys that spans two full-size pages. Defaults to true. */
  largeListing?: boolean;
}

type StoreErrorClass = abstract new (...args: never[]) => StoreError;

/** Awaits a promise that must reject with `errorClass`, and returns the error for further checks. */
export async function expectStoreError<T extends StoreErrorClass>(promise: Promise<unknown>, errorClass: T): Promise<InstanceType<T>> {
  let outcome: unknown;
  try {
    await promise;
  } catch (error) {
    outcome = error;
  }
  expect(outcome, `expected a ${errorClass.name}`).toBeInstanceOf(errorClass);
  return outcome as InstanceType<T>;
}

/** Follows continuation tokens until the last page and returns every page. */
export async function listAllPages(store: ObjectStore, request: ListRequest): Promise<ListPage[]> {
  const pages: ListPage[] = [];
  let continuationToken: string | undefined;
  do {
    const page = await store.list({ ...request, continuationToken });
    pages.push(page);
    continuationToken = page.nextToken;
    if (pages.length > 100_000) throw new Error(`listing of ${request.prefix} did not end after 100,000 pages`);
  } while (continuationToken !== undefined);
  return pages;
}

/** Runs `task` over `items` with at most `concurrency` tasks in flight. */
export async function forEachConcurrently<T>(items: readonly T[], concurrency: number, task: (item: T) => Promise<unknown>): Promise<void> {
  let next = 0;
  const workers = Array.from({ length: Math.min(concurrency, items.length) }, async () => {
    while (next < items.length) {
      const item = items[next++]!;
      await task(item);
    }
  });
  await Promise.all(workers);
}

function pattern(length: number, seed: number): Buffer {
  const bytes = Buffer.alloc(length);
  for (let index = 0; index < length; index++) bytes[index] = (index * 31 + seed * 17) & 0xff;
  return bytes;
}

function keysOf(pages: ListPage[]): string[] {
  return pages.flatMap((page) => page.objects.map((object) => object.key));
}

function prefixesOf(pages: ListPage[]): string[] {
  return pages.flatMap((page) => page.prefixes);
}

export function describeStoreConformance(name: string, factory: () => Promise<StoreFixture>, options: ConformanceOptions = {}): void {
  describe(`${name} store conformance`, () => {
    let fixture: StoreFixture | undefined;
    let store: ObjectStore;

    beforeEach(async () => {
      fixture = await factory();
      store = fixture.store;
    });

    afterEach(async () => {
      await fixture?.cleanup();
      fixture = undefined;
    });

    describe('objects', () => {
      it('put then head and get', async () => {
        const body = Buffer.from('hello, bucket\n');
        const written = await store.put('greeting.txt', body, { contentType: 'text/plain' });

        expect(written.key).toBe('greeting.txt');
        expect(written.size).toBe(body.length);
        expect(written.version).not.toBe('');
        expect(written.version).not.toMatch(/^"/);

        const headInfo = await store.head('greeting.txt');
        expect(headInfo.key).toBe('greeting.txt');
        expect(headInfo.size).toBe(body.length);
        expect(headInfo.version).toBe(written.version);
        expect(headInfo.lastModified).toBeInstanceOf(Date);
        expect(Number.isNaN(headInfo.lastModified.getTime())).toBe(false);

        const result = await store.get('greeting.txt');
        expect(result.body.equals(body)).toBe(true);
        expect(result.info.size).toBe(body.length);
        expect(result.info.version).toBe(written.version);
      });

      it('empty object round trip', async () => {
        await store.put('empty', Buffer.alloc(0));

        expect((await store.head('empty')).size).toBe(0);
        expect((await store.get('empty')).body.length).toBe(0);
      });

      it('overwrite gives a new version', async () => {
        const first = await store.put('object', Buffer.from('first'));
        const second = await store.put('object', Buffer.from('second'));

        expect(second.version).not.toBe(first.version);
        expect((await store.head('object')).version).toBe(second.version);
        expect((await store.get('object')).body.toString()).toBe('second');
      });

      it('missing key is NotFound', async () => {
        const headError = await expectStoreError(store.head('missing/key'), NotFoundError);
        expect(headError.code).toBe('NotFound');
        expect(headError.operation).toBe('head');
        expect(headError.bucket).toBe(store.bucket);
        expect(headError.key).toBe('missing/key');

        const getError = await expectStoreError(store.get('missing/key'), NotFoundError);
        expect(getError.operation).toBe('get');
        expect(getError.key).toBe('missing/key');

        await expectStoreError(store.get('missing/key', { range: { start: 0, end: 10 } }), NotFoundError);
      });

      it('put ifNoneMatch creates only once', async () => {
        const created = await store.put('exclusive', Buffer.from('one'), { ifNoneMatch: true });
        expect(created.size).toBe(3);

        const error = await expectStoreError(store.put('exclusive', Buffer.from('two'), { ifNoneMatch: true }), PreconditionFailedError);
        expect(error.key).toBe('exclusive');
        expect((await store.get('exclusive')).body.toString()).toBe('one');
      });

      it('aborted signal rejects with Aborted', async () => {
        const controller = new AbortController();
        controller.abort();

        await expectStoreError(store.put('aborted', Buffer.from('x'), { signal: controller.signal }), AbortedError);
        await expectStoreError(store.head('aborted'), NotFoundError);
        await expectStoreError(store.list({ prefix: '', signal: controller.signal }), AbortedError);
      });
    });

    describe('ranged and pinned reads', () => {
      const body = pattern(1000, 1);

      beforeEach(async () => {
        await store.put('ranged', body);
      });

      it('range returns exactly the requested bytes', async () => {
        const result = await store.get('ranged', { range: { start: 100, end: 350 } });

        expect(result.body.length).toBe(250);
        expect(result.body.equals(body.subarray(100, 350))).toBe(true);
        expect(result.info.size).toBe(1000);
      });

      it('range read as pieces', async () => {
        const large = pattern(3 * 1024 * 1024, 2);
        await store.put('ranged-large', large);

        const result = await store.get('ranged-large', { range: { start: 1000, end: large.length - 5 }, pieces: true });

        expect(bodyLength(result)).toBe(large.length - 1005);
        expect(Buffer.concat(bodyPieces(result)).equals(large.subarray(1000, large.length - 5))).toBe(true);
        // The network stores keep a 3 MiB body in the many chunks it arrived in; the memory store returns one buffer.
        if (store.kind !== 'memory') expect(result.pieces?.length).toBeGreaterThan(1);
      });

      it('range end is clamped to the object size', async () => {
        const result = await store.get('ranged', { range: { start: 990, end: 5000 } });

        expect(result.body.equals(body.subarray(990))).toBe(true);
        expect(result.info.size).toBe(1000);
      });

      it('single-byte ranges at both ends', async () => {
        expect((await store.get('ranged', { range: { start: 0, end: 1 } })).body.equals(body.subarray(0, 1))).toBe(true);
        expect((await store.get('ranged', { range: { start: 999, end: 1000 } })).body.equals(body.subarray(999))).toBe(true);
      });

      it('empty range returns no bytes', async () => {
        const result = await store.get('ranged', { range: { start: 10, end: 10 } });

        expect(result.body.length).toBe(0);
        expect(result.info.size).toBe(1000);
      });

      it('range past the end is InvalidRequest', async () => {
        await expectStoreError(store.get('ranged', { range: { start: 1000, end: 1010 } }), InvalidRequestError);
      });

      it('malformed range is InvalidRequest', async () => {
        await expectStoreError(store.get('ranged', { range: { start: 20, end: 10 } }), InvalidRequestError);
        await expectStoreError(store.get('ranged', { range: { start: -1, end: 10 } }), InvalidRequestError);
      });

      it('ifVersion matching the current version reads', async () => {
        const { version } = await store.head('ranged');

        const whole = await store.get('ranged', { ifVersion: version });
        expect(whole.body.equals(body)).toBe(true);

        const part = await store.get('ranged', { ifVersion: version, range: { start: 5, end: 15 } });
        expect(part.body.equals(body.subarray(5, 15))).toBe(true);
        expect(part.info.version).toBe(version);
      });

      it('ifVersion fails after overwrite', async () => {
        const { version: stale } = await store.head('ranged');
        await store.put('ranged', pattern(1000, 2));

        const rangedError = await expectStoreError(store.get('ranged', { ifVersion: stale, range: { start: 0, end: 100 } }), PreconditionFailedError);
        expect(rangedError.code).toBe('PreconditionFailed');
        expect(rangedError.key).toBe('ranged');
        expect(rangedError.operation).toBe('get');

        await expectStoreError(store.get('ranged', { ifVersion: stale }), PreconditionFailedError);
        await expectStoreError(store.get('ranged', { ifVersion: stale, range: { start: 0, end: 0 } }), PreconditionFailedError);
      });

      it('ifVersion on a deleted object is NotFound', async () => {
        const { version } = await store.head('ranged');
        await store.delete('ranged');

        await expectStoreError(store.get('ranged', { ifVersion: version, range: { start: 0, end: 10 } }), NotFoundError);
      });
    });

    describe('listing', () => {
      it('flat listing is sorted and filtered by prefix', async () => {
        const keys = ['b/2', 'a', 'b/1', 'b/sub/x', 'c', 'ba'];
        await forEachConcurrently(keys, 4, (key) => store.put(key, Buffer.from(key)));

        const all = await listAllPages(store, { prefix: '' });
        expect(keysOf(all)).toEqual(['a', 'b/1', 'b/2', 'b/sub/x', 'ba', 'c']);
        expect(prefixesOf(all)).toEqual([]);

        const underB = await listAllPages(store, { prefix: 'b/' });
        expect(keysOf(underB)).toEqual(['b/1', 'b/2', 'b/sub/x']);

        const sizes = all.flatMap((page) => page.objects.map((object) => object.size));
        expect(sizes).toEqual([1, 3, 3, 7, 2, 1]);
      });

      it('empty prefix in an empty bucket', async () => {
        const page = await store.list({ prefix: '' });

        expect(page.objects).toEqual([]);
        expect(page.prefixes).toEqual([]);
        expect(page.nextToken).toBeUndefined();
      });

      it('delimiter groups common prefixes', async () => {
        const keys = ['dir/', 'dir/file1', 'dir/file2', 'dir/sub/a', 'dir/sub/b', 'dir/sub/deeper/c', 'dir/zeta/', 'dirt', 'top'];
        await forEachConcurrently(keys, 4, (key) => store.put(key, Buffer.from('x')));

        const root = await listAllPages(store, { prefix: '', delimiter: '/' });
        expect(keysOf(root)).toEqual(['dirt', 'top']);
        expect(prefixesOf(root)).toEqual(['dir/']);

        const inside = await listAllPages(store, { prefix: 'dir/', delimiter: '/' });
        // The directory marker `dir/` itself is an object under its own prefix.
        expect(keysOf(inside)).toEqual(['dir/', 'dir/file1', 'dir/file2']);
        expect(prefixesOf(inside)).toEqual(['dir/sub/', 'dir/zeta/']);

        const partial = await listAllPages(store, { prefix: 'dir/s', delimiter: '/' });
        expect(keysOf(partial)).toEqual([]);
        expect(prefixesOf(partial)).toEqual(['dir/sub/']);
      });

      it('pagination with small maxKeys', async () => {
        const keys = Array.from({ length: 23 }, (_, index) => `page/${String(index).padStart(3, '0')}`);
        await forEachConcurrently(keys, 8, (key) => store.put(key, Buffer.from(key)));

        const pages = await listAllPages(store, { prefix: 'page/', maxKeys: 5 });

        expect(keysOf(pages)).toEqual(keys);
        for (const page of pages) expect(page.objects.length).toBeLessThanOrEqual(5);
        expect(pages.length).toBeGreaterThanOrEqual(5);
        expect(pages.at(-1)!.nextToken).toBeUndefined();
        for (const page of pages.slice(0, -1)) expect(page.nextToken).toBeTypeOf('string');
      });

      it('common prefix counts once toward maxKeys', async () => {
        const keys = ['p/a/1', 'p/a/2', 'p/a/3', 'p/a/4', 'p/b/1', 'p/c', 'p/d/1', 'p/d/2', 'p/e'];
        await forEachConcurrently(keys, 4, (key) => store.put(key, Buffer.from('x')));

        const pages = await listAllPages(store, { prefix: 'p/', delimiter: '/', maxKeys: 1 });

        for (const page of pages) expect(page.objects.length + page.prefixes.length).toBeLessThanOrEqual(1);
        expect(prefixesOf(pages)).toEqual(['p/a/', 'p/b/', 'p/d/']);
        expect(keysOf(pages)).toEqual(['p/c', 'p/e']);

        const twoPerPage = await listAllPages(store, { prefix: 'p/', delimiter: '/', maxKeys: 2 });
        for (const page of twoPerPage) expect(page.objects.length + page.prefixes.length).toBeLessThanOrEqual(2);
        expect(prefixesOf(twoPerPage)).toEqual(['p/a/', 'p/b/', 'p/d/']);
        expect(keysOf(twoPerPage)).toEqual(['p/c', 'p/e']);
      });

      it('startAfter skips earlier keys', async () => {
        const keys = ['s/a', 's/b', 's/c', 's/d/1', 's/e'];
        await forEachConcurrently(keys, 4, (key) => store.put(key, Buffer.from('x')));

        const flat = await listAllPages(store, { prefix: 's/', startAfter: 's/b' });
        expect(keysOf(flat)).toEqual(['s/c', 's/d/1', 's/e']);

        const between = await listAllPages(store, { prefix: 's/', startAfter: 's/bb' });
        expect(keysOf(between)).toEqual(['s/c', 's/d/1', 's/e']);

        const grouped = await listAllPages(store, { prefix: 's/', delimiter: '/', startAfter: 's/c' });
        expect(keysOf(grouped)).toEqual(['s/e']);
        expect(prefixesOf(grouped)).toEqual(['s/d/']);

        const paged = await listAllPages(store, { prefix: 's/', startAfter: 's/a', maxKeys: 1 });
        expect(keysOf(paged)).toEqual(['s/b', 's/c', 's/d/1', 's/e']);
      });

      it('unicode keys list in UTF-8 byte order', async () => {
        // UTF-16 order would put U+1F600 (a surrogate pair, 0xD83D...) before U+FF5E,
        // but in UTF-8 bytes U+FF5E (EF BD 9E) sorts before U+1F600 (F0 9F 98 80).
        const keys = ['u/😀', 'u/\uFF5E', 'u/中文', 'u/é', 'u/z', 'u/Z', 'u/a-b', 'u/a/b', 'u/a0', 'u/ü'];
        await forEachConcurrently(keys, 4, (key) => store.put(key, Buffer.from(key)));

        const expected = ['u/Z', 'u/a-b', 'u/a/b', 'u/a0', 'u/z', 'u/é', 'u/ü', 'u/中文', 'u/\uFF5E', 'u/😀'];
        expect(keysOf(await listAllPages(store, { prefix: 'u/' }))).toEqual(expected);
        expect(keysOf(await listAllPages(store, { prefix: 'u/', maxKeys: 3 }))).toEqual(expected);

        // With a delimiter the common prefix `u/a/` sits between `u/a-b` and `u/a0` in the page order.
        const grouped = await listAllPages(store, { prefix: 'u/', delimiter: '/', maxKeys: 1 });
        const entries = grouped.flatMap((page) => [...page.objects.map((object) => object.key), ...page.prefixes]);
        expect(entries).toEqual(['u/Z', 'u/a-b', 'u/a/', 'u/a0', 'u/z', 'u/é', 'u/ü', 'u/中文', 'u/\uFF5E', 'u/😀']);

        for (const key of keys) expect((await store.get(key)).body.toString()).toBe(key);
      });

      it.skipIf(options.largeListing === false)('listing beyond 1,000 keys', async () => {
        const keys = Array.from({ length: 1001 }, (_, index) => `large/${String(index).padStart(5, '0')}`);
        await forEachConcurrently(keys, 16, (key) => store.put(key, Buffer.alloc(0)));

        const first = await store.list({ prefix: 'large/' });
        expect(first.objects.length).toBe(1000);
        expect(first.nextToken).toBeTypeOf('string');

        const pages = await listAllPages(store, { prefix: 'large/' });
        expect(keysOf(pages)).toEqual(keys);

        // deleteMany must split more than 1,000 keys into several batches on S3.
        await store.deleteMany(keys);
        const after = await store.list({ prefix: 'large/' });
        expect(after.objects).toEqual([]);
      });
    });

    describe('multipart uploads', () => {
      it('parts uploaded out of order', async () => {
        const first = pattern(store.limits.minPartSize, 3);
        const second = pattern(1234, 4);
        const uploadId = await store.createMultipartUpload('multipart/out-of-order');

        const secondPart = await store.uploadPart('multipart/out-of-order', uploadId, 2, second);
        const firstPart = await store.uploadPart('multipart/out-of-order', uploadId, 1, first);
        expect(firstPart.partNumber).toBe(1);
        expect(secondPart.partNumber).toBe(2);
        expect(firstPart.etag).not.toMatch(/^"/);

        const info = await store.completeMultipartUpload('multipart/out-of-order', uploadId, [firstPart, secondPart]);
        expect(info.size).toBe(first.length + second.length);

        const result = await store.get('multipart/out-of-order');
        expect(result.body.equals(Buffer.concat([first, second]))).toBe(true);
        expect((await store.head('multipart/out-of-order')).version).toBe(info.version);
      });

      it('complete with a subset of parts', async () => {
        const parts = [pattern(store.limits.minPartSize, 5), pattern(store.limits.minPartSize, 6), pattern(77, 7)];
        const uploadId = await store.createMultipartUpload('multipart/subset');
        const completed = await Promise.all(parts.map((body, index) => store.uploadPart('multipart/subset', uploadId, index + 1, body)));

        await store.completeMultipartUpload('multipart/subset', uploadId, [completed[0]!, completed[2]!]);

        const result = await store.get('multipart/subset');
        expect(result.body.equals(Buffer.concat([parts[0]!, parts[2]!]))).toBe(true);
      });

      it('single small part completes', async () => {
        const uploadId = await store.createMultipartUpload('multipart/single');
        const part = await store.uploadPart('multipart/single', uploadId, 1, Buffer.from('tiny'));
        await store.completeMultipartUpload('multipart/single', uploadId, [part]);

        expect((await store.get('multipart/single')).body.toString()).toBe('tiny');
      });

      it('small part before the last is InvalidRequest', async () => {
        const uploadId = await store.createMultipartUpload('multipart/too-small');
        const first = await store.uploadPart('multipart/too-small', uploadId, 1, Buffer.from('too small'));
        const second = await store.uploadPart('multipart/too-small', uploadId, 2, Buffer.from('last'));

        await expectStoreError(store.completeMultipartUpload('multipart/too-small', uploadId, [first, second]), InvalidRequestError);

        await store.abortMultipartUpload('multipart/too-small', uploadId);
        await expectStoreError(store.head('multipart/too-small'), NotFoundError);
      });

      it('abort leaves nothing', async () => {
        const uploadId = await store.createMultipartUpload('multipart/aborted');
        await store.uploadPart('multipart/aborted', uploadId, 1, pattern(1000, 8));

        await store.abortMultipartUpload('multipart/aborted', uploadId);

        await expectStoreError(store.head('multipart/aborted'), NotFoundError);
        const uploads = await store.listMultipartUploads('multipart/');
        expect(uploads.map((upload) => upload.uploadId)).not.toContain(uploadId);
        expect(keysOf(await listAllPages(store, { prefix: '' }))).toEqual([]);

        const error = await expectStoreError(store.uploadPart('multipart/aborted', uploadId, 2, Buffer.from('late')), NotFoundError);
        expect(error.key).toBe('multipart/aborted');
      });

      it('unknown upload id is NotFound', async () => {
        // A syntactically valid id that no upload has, so that no backend rejects it as malformed.
        const missingUploadId = await store.createMultipartUpload('multipart/other');
        await store.abortMultipartUpload('multipart/other', missingUploadId);

        await expectStoreError(store.uploadPart('multipart/other', missingUploadId, 1, Buffer.from('x')), NotFoundError);
        await expectStoreError(store.completeMultipartUpload('multipart/other', missingUploadId, [{ partNumber: 1, etag: '00' }]), NotFoundError);
      });

      it('listMultipartUploads sees an upload in progress', async () => {
        const before = new Date(Date.now() - 60_000);
        const uploadId = await store.createMultipartUpload('pending/upload');
        const otherId = await store.createMultipartUpload('elsewhere/upload');
        await store.uploadPart('pending/upload', uploadId, 1, Buffer.from('in progress'));

        const uploads = await store.listMultipartUploads('pending/');
        expect(uploads).toHaveLength(1);
        expect(uploads[0]!.key).toBe('pending/upload');
        expect(uploads[0]!.uploadId).toBe(uploadId);
        expect(uploads[0]!.initiated.getTime()).toBeGreaterThan(before.getTime());

        const all = await store.listMultipartUploads('');
        expect(all.map((upload) => upload.uploadId).sort()).toEqual([uploadId, otherId].sort());

        // An upload in progress is not an object.
        await expectStoreError(store.head('pending/upload'), NotFoundError);

        await store.abortMultipartUpload('pending/upload', uploadId);
        await store.abortMultipartUpload('elsewhere/upload', otherId);
        expect(await store.listMultipartUploads('')).toEqual([]);
      });
    });

    describe('copy and delete', () => {
      it('copy duplicates content with a new version', async () => {
        const source = await store.put('copy/source', Buffer.from('copied bytes'));

        const copied = await store.copy('copy/source', 'copy/destination');

        expect(copied.key).toBe('copy/destination');
        expect(copied.size).toBe(12);
        expect((await store.get('copy/destination')).body.toString()).toBe('copied bytes');
        expect((await store.head('copy/destination')).version).toBe(copied.version);
        expect((await store.head('copy/source')).version).toBe(source.version);
      });

      it('copy ifSourceVersion', async () => {
        const original = await store.put('copy/pinned', Buffer.from('version one'));
        await store.copy('copy/pinned', 'copy/pinned-copy', { ifSourceVersion: original.version, sourceSize: original.size });
        expect((await store.get('copy/pinned-copy')).body.toString()).toBe('version one');

        await store.put('copy/pinned', Buffer.from('version two'));
        const error = await expectStoreError(store.copy('copy/pinned', 'copy/second-copy', { ifSourceVersion: original.version }), PreconditionFailedError);
        expect(error.operation).toBe('copy');

        await expectStoreError(store.head('copy/second-copy'), NotFoundError);
      });

      it('copy of missing source is NotFound', async () => {
        await expectStoreError(store.copy('copy/missing', 'copy/anywhere'), NotFoundError);
        await expectStoreError(store.head('copy/anywhere'), NotFoundError);
      });

      it('copy overwrites the destination', async () => {
        await store.put('copy/a', Buffer.from('from a'));
        await store.put('copy/b', Buffer.from('old b'));

        await store.copy('copy/a', 'copy/b');

        expect((await store.get('copy/b')).body.toString()).toBe('from a');
      });

      it('delete removes and missing key succeeds', async () => {
        await store.put('delete/me', Buffer.from('x'));

        await store.delete('delete/me');
        await expectStoreError(store.head('delete/me'), NotFoundError);

        await store.delete('delete/me');
        await store.delete('delete/never-existed');
      });

      it('deleteMany removes only the given keys', async () => {
        const keys = ['many/1', 'many/2', 'many/3', 'many/keep'];
        await forEachConcurrently(keys, 4, (key) => store.put(key, Buffer.from(key)));

        await store.deleteMany(['many/1', 'many/2', 'many/3', 'many/never-existed']);

        expect(keysOf(await listAllPages(store, { prefix: 'many/' }))).toEqual(['many/keep']);
        await store.deleteMany([]);
      });
    });

    describe('missing bucket', () => {
      it('requests are NoSuchBucket', async (context) => {
        if (fixture?.storeForMissingBucket === undefined) {
          context.skip();
          return;
        }
        const missing = fixture.storeForMissingBucket();

        const listError = await expectStoreError(missing.list({ prefix: '' }), NoSuchBucketError);
        expect(listError.bucket).toBe(missing.bucket);
        await expectStoreError(missing.get('any'), NoSuchBucketError);
        await expectStoreError(missing.put('any', Buffer.from('x')), NoSuchBucketError);
        // HEAD responses carry no body, so S3 cannot say which of bucket or key is missing.
        await expect(missing.head('any')).rejects.toSatisfy((error: unknown) => error instanceof NoSuchBucketError || error instanceof NotFoundError);
      });
    });
  });
}
