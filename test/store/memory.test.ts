import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

import { InvalidRequestError, NoSuchBucketError } from '../../src/store/errors.js';
import { MemoryStore, compareKeys } from '../../src/store/memory.js';
import { describeStoreConformance, expectStoreError, listAllPages } from './conformance.js';

describeStoreConformance('memory', async () => ({
  store: new MemoryStore({ bucket: 'conformance' }),
  storeForMissingBucket: () => new MemoryStore({ bucket: 'missing-bucket', bucketExists: false }),
  cleanup: async () => {},
}));

describeStoreConformance('memory with small parts', async () => ({
  store: new MemoryStore({ bucket: 'conformance-small', limits: { minPartSize: 16 } }),
  cleanup: async () => {},
}), { largeListing: false });

describe('MemoryStore counters', () => {
  it('counts requests per operation', async () => {
    const store = new MemoryStore();
    store.putRaw('a', 'alpha');
    store.putRaw('b', 'beta');

    expect(store.requestCount('put')).toBe(0);

    await store.list({ prefix: '', delimiter: '/' });
    await store.get('a');
    await store.head('b');
    await store.get('missing').catch(() => undefined);

    expect(store.requestCount('list')).toBe(1);
    expect(store.requestCount('get')).toBe(2);
    expect(store.requestCount('head')).toBe(1);
    expect(store.requestCount('put')).toBe(0);
  });

  it('counts bytes fetched and uploaded', async () => {
    const store = new MemoryStore();
    await store.put('object', Buffer.alloc(1000));

    await store.get('object', { range: { start: 100, end: 300 } });
    await store.get('object', { range: { start: 900, end: 2000 } });

    const counters = store.counters();
    expect(counters.bytesFetched).toBe(300);
    expect(counters.bytesUploaded).toBe(1000);
  });

  it('resetCounters starts from zero', async () => {
    const store = new MemoryStore();
    await store.put('object', Buffer.from('x'));
    store.resetCounters();

    expect(store.requestCount('put')).toBe(0);
    expect(store.counters().bytesUploaded).toBe(0);
  });
});

describe('MemoryStore helpers', () => {
  it('putRaw and snapshot', async () => {
    const store = new MemoryStore();
    store.putRaw('z', 'last');
    store.putRaw('a//weird/../key', Buffer.from('raw'));

    const snapshot = store.snapshot();
    expect([...snapshot.keys()]).toEqual(['a//weird/../key', 'z']);
    expect(snapshot.get('z')!.toString()).toBe('last');
    expect(store.keys()).toEqual(['a//weird/../key', 'z']);
    expect(store.getRaw('missing')).toBeUndefined();
  });

  it('putRaw with an explicit version', async () => {
    const store = new MemoryStore();
    store.putRaw('pinned', 'x', { version: 'v1', lastModified: new Date(0) });

    const info = await store.head('pinned');
    expect(info.version).toBe('v1');
    expect(info.lastModified.getTime()).toBe(0);
  });

  it('injected clock sets times', async () => {
    let now = new Date('2024-01-02T03:04:05Z');
    const store = new MemoryStore({ now: () => now });

    await store.put('first', Buffer.from('x'));
    now = new Date('2025-06-07T08:09:10Z');
    const uploadId = await store.createMultipartUpload('second');

    expect((await store.head('first')).lastModified.toISOString()).toBe('2024-01-02T03:04:05.000Z');
    const [upload] = await store.listMultipartUploads('');
    expect(upload!.uploadId).toBe(uploadId);
    expect(upload!.initiated.toISOString()).toBe('2025-06-07T08:09:10.000Z');
  });

  it('returned buffers are copies', async () => {
    const store = new MemoryStore();
    const body = Buffer.from('original');
    await store.put('object', body);
    body.fill(0);

    const read = await store.get('object');
    read.body.fill(0);

    expect((await store.get('object')).body.toString()).toBe('original');
  });

  it('identical content still gets a new version', async () => {
    const store = new MemoryStore();
    const first = await store.put('same', Buffer.from('same bytes'));
    const second = await store.put('same', Buffer.from('same bytes'));

    expect(second.version).not.toBe(first.version);
  });

  it('missing bucket rejects every operation', async () => {
    const store = new MemoryStore({ bucket: 'gone', bucketExists: false });

    const error = await expectStoreError(store.head('x'), NoSuchBucketError);
    expect(error.bucket).toBe('gone');
    await expectStoreError(store.delete('x'), NoSuchBucketError);
    await expectStoreError(store.createMultipartUpload('x'), NoSuchBucketError);
  });
});

describe('MemoryStore limits', () => {
  const limits = { minPartSize: 4, maxPartSize: 8, maxParts: 3, maxSingleRequestSize: 10 };

  it('part number outside 1..maxParts', async () => {
    const store = new MemoryStore({ limits });
    const uploadId = await store.createMultipartUpload('key');

    await expectStoreError(store.uploadPart('key', uploadId, 0, Buffer.from('abcd')), InvalidRequestError);
    await expectStoreError(store.uploadPart('key', uploadId, 4, Buffer.from('abcd')), InvalidRequestError);
    await expectStoreError(store.uploadPart('key', uploadId, 1.5, Buffer.from('abcd')), InvalidRequestError);
    await store.uploadPart('key', uploadId, 3, Buffer.from('abcd'));
  });

  it('part larger than maxPartSize', async () => {
    const store = new MemoryStore({ limits });
    const uploadId = await store.createMultipartUpload('key');

    const error = await expectStoreError(store.uploadPart('key', uploadId, 1, Buffer.alloc(9)), InvalidRequestError);
    expect(error.serviceCode).toBe('EntityTooLarge');
  });

  it('put larger than maxSingleRequestSize', async () => {
    const store = new MemoryStore({ limits });

    await store.put('fits', Buffer.alloc(10));
    await expectStoreError(store.put('too-large', Buffer.alloc(11)), InvalidRequestError);
  });

  it('complete rejects bad part lists', async () => {
    const store = new MemoryStore({ limits });
    const uploadId = await store.createMultipartUpload('key');
    const first = await store.uploadPart('key', uploadId, 1, Buffer.from('1111'));
    const second = await store.uploadPart('key', uploadId, 2, Buffer.from('22'));

    const order = await expectStoreError(store.completeMultipartUpload('key', uploadId, [second, first]), InvalidRequestError);
    expect(order.serviceCode).toBe('InvalidPartOrder');

    const duplicate = await expectStoreError(store.completeMultipartUpload('key', uploadId, [first, first]), InvalidRequestError);
    expect(duplicate.serviceCode).toBe('InvalidPartOrder');

    const wrongTag = await expectStoreError(store.completeMultipartUpload('key', uploadId, [{ partNumber: 1, etag: 'nope' }]), InvalidRequestError);
    expect(wrongTag.serviceCode).toBe('InvalidPart');

    const empty = await expectStoreError(store.completeMultipartUpload('key', uploadId, []), InvalidRequestError);
    expect(empty.serviceCode).toBe('MalformedXML');

    // The upload survives rejected completions and still completes with a valid list.
    const info = await store.completeMultipartUpload('key', uploadId, [first, { ...second, etag: `"${second.etag}"` }]);
    expect(info.size).toBe(6);
    expect(info.version).toMatch(/-2$/);
  });

  it('re-uploaded part replaces the earlier one', async () => {
    const store = new MemoryStore({ limits });
    const uploadId = await store.createMultipartUpload('key');
    await store.uploadPart('key', uploadId, 1, Buffer.from('old!'));
    const replaced = await store.uploadPart('key', uploadId, 1, Buffer.from('new!'));

    await store.completeMultipartUpload('key', uploadId, [replaced]);

    expect(store.getRaw('key')!.toString()).toBe('new!');
  });

  it('upload id bound to its key', async () => {
    const store = new MemoryStore({ limits });
    const uploadId = await store.createMultipartUpload('key');

    await expect(store.uploadPart('other-key', uploadId, 1, Buffer.from('abcd'))).rejects.toMatchObject({ code: 'NotFound', serviceCode: 'NoSuchUpload' });
  });

  it('maxKeys is capped at 1,000', async () => {
    const store = new MemoryStore();
    for (let index = 0; index < 1005; index++) store.putRaw(`k${String(index).padStart(4, '0')}`, '');

    const page = await store.list({ prefix: '', maxKeys: 5000 });

    expect(page.objects).toHaveLength(1000);
    expect(page.nextToken).toBeDefined();
  });

  it('invalid continuation token', async () => {
    const store = new MemoryStore();

    await expectStoreError(store.list({ prefix: '', continuationToken: 'not-a-token' }), InvalidRequestError);
    await expectStoreError(store.list({ prefix: '', maxKeys: -1 }), InvalidRequestError);
  });

  it('copy onto itself is rejected', async () => {
    const store = new MemoryStore();
    store.putRaw('self', 'x');

    await expectStoreError(store.copy('self', 'self'), InvalidRequestError);
  });

  it('keys over 1,024 bytes are rejected', async () => {
    const store = new MemoryStore();

    await expectStoreError(store.put('é'.repeat(513), Buffer.from('x')), InvalidRequestError);
    await store.put('é'.repeat(512), Buffer.from('x'));
  });
});

describe('MemoryStore listing model', () => {
  /** The listing computed directly from the definition, without pagination. */
  function expectedListing(keys: string[], prefix: string, delimiter: string | undefined, startAfter: string | undefined) {
    const objects: string[] = [];
    const prefixes = new Set<string>();
    for (const key of [...new Set(keys)].sort(compareKeys)) {
      if (!key.startsWith(prefix)) continue;
      if (startAfter !== undefined && compareKeys(key, startAfter) <= 0) continue;
      const index = delimiter === undefined ? -1 : key.indexOf(delimiter, prefix.length);
      if (index === -1) objects.push(key);
      else prefixes.add(key.slice(0, index + delimiter!.length));
    }
    return { objects, prefixes: [...prefixes] };
  }

  it('paged listing equals the unpaged definition', async () => {
    const keyArbitrary = fc.array(fc.constantFrom('a', 'b', '/', 'é', '😀', '-', 'z'), { minLength: 1, maxLength: 6 }).map((parts) => parts.join(''));

    await fc.assert(
      fc.asyncProperty(
        fc.array(keyArbitrary, { maxLength: 40 }),
        fc.constantFrom('', 'a', 'a/', 'b/', '/'),
        fc.option(fc.constantFrom('/', 'é'), { nil: undefined }),
        fc.option(keyArbitrary, { nil: undefined }),
        fc.integer({ min: 1, max: 7 }),
        async (keys, prefix, delimiter, startAfter, maxKeys) => {
          const store = new MemoryStore();
          for (const key of keys) store.putRaw(key, key);

          const pages = await listAllPages(store, { prefix, delimiter, startAfter, maxKeys });
          const expected = expectedListing(keys, prefix, delimiter, startAfter);

          for (const page of pages) expect(page.objects.length + page.prefixes.length).toBeLessThanOrEqual(maxKeys);
          expect(pages.flatMap((page) => page.objects.map((object) => object.key))).toEqual(expected.objects);
          expect(pages.flatMap((page) => page.prefixes)).toEqual(expected.prefixes);
        },
      ),
      { numRuns: 300 },
    );
  });
});
