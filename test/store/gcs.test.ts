/**
 * GcsStore against fake-gcs-server behind the authorizing proxy, with access
 * tokens minted by the IAM Credentials fake: the store conformance suite, then
 * GCS-specific behaviour (compose trees, the hidden upload prefix, token
 * renewal after a 401, access denied per bucket).
 *
 * Where fake-gcs-server 1.56.1 differs from GCS, checked with requests to it
 * and in its source:
 * - downloads and metadata reads ignore `ifGenerationMatch` and return the
 *   live generation, while `generation=G` of a replaced object returns 404;
 * - rewrite ignores `ifSourceGenerationMatch` (it honours `sourceGeneration`);
 * - delete ignores `ifGenerationMatch`;
 * - uploads honour `ifGenerationMatch`, including 0 for "does not exist";
 * - objects.list applies `maxResults` to items only and returns every common
 *   prefix at or after the start position on every page, so a page can hold
 *   more than `maxResults` entries and a prefix can repeat across pages;
 * - compose of a missing source returns 500 `internalError`, not 404;
 * - there is no XML API multipart upload: `POST /BUCKET/KEY?uploads` returns
 *   400 "invalid uploadType".
 * The store is written so that none of these changes its results (see the
 * design note of src/store/gcs.ts), so the conformance suite runs unchanged.
 */

import { randomBytes } from 'node:crypto';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { CredentialSource, GcpAccessToken } from '../../src/credentials/types.js';
import { AccessDeniedError, InvalidCredentialsError, PreconditionFailedError } from '../../src/store/errors.js';
import { DEFAULT_UPLOAD_PREFIX, GcsStore } from '../../src/store/gcs.js';
import { startGcpEnvironment, type GcpEnvironment } from '../env/gcp-environment.js';
import { describeStoreConformance, expectStoreError, listAllPages } from './conformance.js';

let environment: GcpEnvironment;
let credentials: CredentialSource<GcpAccessToken>;
let bucketCounter = 0;

beforeAll(async () => {
  environment = await startGcpEnvironment();
  credentials = environment.staticTokenSource();
  await credentials.start();
});

afterAll(async () => {
  await environment?.stop();
});

async function freshStore(options: { minPartSize?: number } = {}): Promise<GcsStore> {
  bucketCounter += 1;
  const bucket = `gcs-conformance-${bucketCounter}-${randomBytes(3).toString('hex')}`;
  await environment.createBucket(bucket);
  return new GcsStore({
    bucket,
    credentials,
    apiEndpoint: environment.proxy.endpoint,
    limits: options.minPartSize === undefined ? {} : { minPartSize: options.minPartSize },
    maxRetries: 1,
  });
}

describeStoreConformance('gcs', async () => ({
  store: await freshStore(),
  storeForMissingBucket: () => {
    const bucket = `gcs-missing-${randomBytes(3).toString('hex')}`;
    // The grant lets the request through the proxy, so that the emulator responds for the missing bucket.
    environment.fakes.grantBucket({ serviceAccount: environment.serviceAccount, bucket, role: 'roles/storage.objectAdmin' });
    return new GcsStore({ bucket, credentials, apiEndpoint: environment.proxy.endpoint, maxRetries: 0 });
  },
  cleanup: async () => {},
}));

describe('GcsStore on the emulator', () => {
  it('compose tree beyond 32 parts', async () => {
    const store = await freshStore({ minPartSize: 8 });
    const parts = Array.from({ length: 70 }, (_, index) => Buffer.from(`part-${String(index).padStart(4, '0')};`));
    const uploadId = await store.createMultipartUpload('tree/object', { contentType: 'text/plain' });

    const completed = await Promise.all(parts.map((body, index) => store.uploadPart('tree/object', uploadId, index + 1, body)));
    const info = await store.completeMultipartUpload('tree/object', uploadId, completed);

    expect(info.size).toBe(Buffer.concat(parts).length);
    expect((await store.get('tree/object')).body.equals(Buffer.concat(parts))).toBe(true);
    expect(await store.listMultipartUploads('')).toEqual([]);
    const everything = await listAllPages(store, { prefix: '' });
    expect(everything.flatMap((page) => page.objects.map((object) => object.key))).toEqual(['tree/object']);
  });

  it('upload prefix is hidden from listings', async () => {
    const store = await freshStore();
    const uploadId = await store.createMultipartUpload('visible/key');
    await store.uploadPart('visible/key', uploadId, 1, Buffer.from('pending'));
    await store.put('visible/other', Buffer.from('x'));

    const root = await listAllPages(store, { prefix: '', delimiter: '/' });
    expect(root.flatMap((page) => page.prefixes)).toEqual(['visible/']);
    const flat = await listAllPages(store, { prefix: '' });
    expect(flat.flatMap((page) => page.objects.map((object) => object.key))).toEqual(['visible/other']);
    const underPrefix = await listAllPages(store, { prefix: DEFAULT_UPLOAD_PREFIX });
    expect(underPrefix.flatMap((page) => page.objects)).toEqual([]);

    await store.abortMultipartUpload('visible/key', uploadId);
  });

  it('orphaned part is listed and aborted', async () => {
    const store = await freshStore();
    const uploadId = await store.createMultipartUpload('orphan/key');
    await store.uploadPart('orphan/key', uploadId, 1, Buffer.from('left behind'));
    // Deleting only the marker leaves the state an interrupted abort leaves.
    await store.delete(`${DEFAULT_UPLOAD_PREFIX}${uploadId}/upload`);

    const uploads = await store.listMultipartUploads('orphan/');
    expect(uploads.map((upload) => upload.uploadId)).toEqual([uploadId]);

    await store.abortMultipartUpload('orphan/key', uploadId);
    expect(await store.listMultipartUploads('')).toEqual([]);
  });

  it('rejected token is renewed once', async () => {
    const store = await freshStore();
    await store.put('renewal/before', Buffer.from('x'));
    const renewalsBefore = credentials.state().totalRenewals;

    environment.fakes.revokeAllAccessTokens();
    await store.put('renewal/after', Buffer.from('y'));

    expect(credentials.state().totalRenewals).toBe(renewalsBefore + 1);
    expect((await store.get('renewal/after')).body.toString()).toBe('y');
  });

  it('token that stays invalid is InvalidCredentials', async () => {
    const bucket = `gcs-invalid-${randomBytes(3).toString('hex')}`;
    await environment.createBucket(bucket);
    let invalidations = 0;
    const rejected: CredentialSource<GcpAccessToken> = {
      start: async () => {},
      current: async () => ({ accessToken: 'ya29.not-minted-by-the-fake', expiration: new Date(Date.now() + 3_600_000) }),
      invalidate: async () => {
        invalidations += 1;
        return { accessToken: 'ya29.also-not-minted', expiration: new Date(Date.now() + 3_600_000) };
      },
      state: () => ({ consecutiveFailures: 0, totalRenewals: 0, totalFailures: 0 }),
      stop: () => undefined,
    };
    const store = new GcsStore({ bucket, credentials: rejected, apiEndpoint: environment.proxy.endpoint, maxRetries: 0 });

    const error = await expectStoreError(store.head('any'), InvalidCredentialsError);
    expect(error.httpStatus).toBe(401);
    expect(invalidations).toBe(1);
  });

  it('bucket without a grant is AccessDenied', async () => {
    const store = await freshStore();
    environment.fakes.revokeBucket({ serviceAccount: environment.serviceAccount, bucket: store.bucket, role: 'roles/storage.objectAdmin' });
    environment.fakes.grantBucket({ serviceAccount: environment.serviceAccount, bucket: store.bucket, role: 'roles/storage.objectViewer' });

    const error = await expectStoreError(store.put('denied', Buffer.from('x')), AccessDeniedError);
    expect(error.httpStatus).toBe(403);
    expect(error.message).toContain(`gs://${store.bucket}`);
    await store.list({ prefix: '' });
  });

  it('pinned read checks the returned generation', async () => {
    // fake-gcs-server 1.56.1 ignores ifGenerationMatch on downloads; the store's own check must catch the change.
    const store = await freshStore();
    const first = await store.put('pinned', Buffer.from('first version'));
    await store.put('pinned', Buffer.from('second version'));

    const error = await expectStoreError(store.get('pinned', { ifVersion: first.version, range: { start: 0, end: 5 } }), PreconditionFailedError);
    expect(error.serviceCode).toBe('conditionNotMet');
  });

  it('large object round trip', async () => {
    const store = await freshStore();
    const body = randomBytes(24 * 1024 * 1024);

    await store.put('large/object', body);
    const whole = await store.get('large/object');
    const tail = await store.get('large/object', { range: { start: body.length - 1000, end: body.length + 1000 } });

    expect(whole.body.equals(body)).toBe(true);
    expect(tail.body.equals(body.subarray(body.length - 1000))).toBe(true);
  });
});
