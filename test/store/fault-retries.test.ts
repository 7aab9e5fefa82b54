/**
 * S3Store and GcsStore with their default retry settings, through the fault
 * proxy in front of the real servers: about one request in five is answered
 * 503 or 429, reset, or has its body cut short. Every write must succeed,
 * every read through `getWithRetry` must return the stored bytes, a single
 * GET must either return the exact bytes or reject with a retryable error
 * (never a short body as data), throttling must never look like a missing
 * object, and no incomplete multipart upload may remain.
 */

import { createHash, randomBytes } from 'node:crypto';

import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { getWithRetry, isRetryableGetFailure } from '../../src/read/get-retry.js';
import { NotFoundError, PreconditionFailedError } from '../../src/store/errors.js';
import { GcsStore } from '../../src/store/gcs.js';
import { S3Store } from '../../src/store/s3.js';
import type { CompletedPart, ObjectStore } from '../../src/store/types.js';
import { startFaultProxy, type FaultProxy, type FaultSettings } from '../env/fault-proxy.js';
import { startGcpEnvironment, type GcpEnvironment } from '../env/gcp-environment.js';
import { startMinio, type MinioServer } from '../env/minio.js';
import { startOidcIssuer, type OidcIssuer } from '../env/oidc-issuer.js';

const MiB = 1024 * 1024;
// BUCKETMOUNT_TEST_LOG_LEVEL=info shows every retry.
const logger = pino({ level: process.env.BUCKETMOUNT_TEST_LOG_LEVEL ?? 'silent' });

const FAULTS: Partial<FaultSettings> = { throttleRate: 0.08, tooManyRequestsRate: 0.02, resetRate: 0.05, truncateRate: 0.05 };
const OBJECT_COUNT = 24;

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

interface Harness {
  store: ObjectStore;
  proxy: FaultProxy;
}

/** Runs the same workload on one store and checks every outcome. */
async function runWorkload({ store, proxy }: Harness): Promise<void> {
  const bodies = new Map<string, Buffer>();
  for (let index = 0; index < OBJECT_COUNT; index += 1) bodies.set(`small/object-${String(index).padStart(3, '0')}`, randomBytes(96 * 1024 + index));

  // Writes, each checked by a HEAD that must never report a missing object.
  for (const [key, body] of bodies) {
    const info = await store.put(key, body);
    expect(info.size).toBe(body.length);
    expect((await store.head(key)).size).toBe(body.length);
  }

  // A conditional create whose response may be lost and repeated still succeeds once.
  const conditional = randomBytes(32 * 1024);
  await store.put('conditional/object', conditional, { ifNoneMatch: true });
  await expect(store.put('conditional/object', randomBytes(32 * 1024), { ifNoneMatch: true })).rejects.toBeInstanceOf(PreconditionFailedError);

  // Listing in small pages returns every key once.
  const listed: string[] = [];
  let continuationToken: string | undefined;
  do {
    const page = await store.list({ prefix: 'small/', maxKeys: 5, continuationToken });
    listed.push(...page.objects.map((object) => object.key));
    continuationToken = page.nextToken;
  } while (continuationToken !== undefined);
  expect(listed).toEqual([...bodies.keys()]);

  // Single GETs return exact bytes or a retryable error; retried GETs always return the bytes.
  let singleGetFailures = 0;
  for (const [key, body] of bodies) {
    try {
      const single = await store.get(key, { range: { start: 1000, end: body.length } });
      expect(sha256(single.body)).toBe(sha256(body.subarray(1000)));
    } catch (error) {
      expect(isRetryableGetFailure(error), `single GET failed with ${String(error)}`).toBe(true);
      singleGetFailures += 1;
    }
    const retried = await getWithRetry(store, key, { ifVersion: (await store.head(key)).version }, { logger });
    expect(sha256(retried.body)).toBe(sha256(body));
  }

  // Multipart uploads: three parts each, the last one short.
  for (let upload = 0; upload < 3; upload += 1) {
    const key = `large/object-${upload}`;
    const parts = [randomBytes(5 * MiB), randomBytes(5 * MiB), randomBytes(MiB / 2)];
    const uploadId = await store.createMultipartUpload(key);
    const completed: CompletedPart[] = [];
    for (const [index, part] of parts.entries()) completed.push(await store.uploadPart(key, uploadId, index + 1, part));
    const info = await store.completeMultipartUpload(key, uploadId, completed);

    const whole = Buffer.concat(parts);
    expect(info.size).toBe(whole.length);
    const read = await getWithRetry(store, key, {}, { logger });
    expect(sha256(read.body)).toBe(sha256(whole));
  }

  // Copy and delete, then a HEAD of the deleted key is the only NotFound.
  const [firstKey, firstBody] = [...bodies.entries()][0]!;
  await store.copy(firstKey, 'copied/object', { sourceSize: firstBody.length });
  expect(sha256((await getWithRetry(store, 'copied/object', {}, { logger })).body)).toBe(sha256(firstBody));
  await store.delete('copied/object');
  await expect(store.head('copied/object')).rejects.toBeInstanceOf(NotFoundError);

  expect(await store.listMultipartUploads('')).toEqual([]);

  const counters = proxy.counters();
  expect(counters.throttled + counters.tooManyRequests).toBeGreaterThan(0);
  expect(counters.resetsInBody + counters.resetsBeforeHeaders).toBeGreaterThan(0);
  expect(counters.truncated).toBeGreaterThan(0);
  // Logged so that a run shows how much of the workload met a fault.
  console.info(`${store.kind}: ${JSON.stringify(counters)}; single GETs that failed: ${singleGetFailures}`);
}

describe('S3Store under injected faults', () => {
  let issuer: OidcIssuer;
  let minio: MinioServer;
  let proxy: FaultProxy;
  let store: S3Store;

  beforeAll(async () => {
    issuer = await startOidcIssuer();
    minio = await startMinio({ issuer });
    proxy = await startFaultProxy({ upstream: minio.endpoint, flavor: 's3', seed: 11 });
    const bucket = `test-faults-${randomBytes(4).toString('hex')}`;
    await minio.createBucket(bucket);
    store = new S3Store({
      bucket,
      region: minio.region,
      endpoint: proxy.endpoint,
      forcePathStyle: true,
      credentials: async () => ({ accessKeyId: minio.rootUser, secretAccessKey: minio.rootPassword }),
      logger,
    });
  });

  afterAll(async () => {
    store?.destroy();
    await proxy?.stop();
    await minio?.stop();
    await issuer?.stop();
  });

  it('workload succeeds with default retries', async () => {
    proxy.setFaults(FAULTS);
    await runWorkload({ store, proxy });
  }, 240_000);
});

describe('GcsStore under injected faults', () => {
  let environment: GcpEnvironment;
  let proxy: FaultProxy;
  let store: GcsStore;

  beforeAll(async () => {
    environment = await startGcpEnvironment();
    const credentials = environment.staticTokenSource();
    await credentials.start();
    // The storage client's transport notices a cut JSON response only by its
    // request timeout (see GcsStore.requestTimeoutMs), so cuts apply to
    // downloads here and to uploads in the test below, with a short timeout.
    proxy = await startFaultProxy({
      upstream: environment.proxy.endpoint,
      flavor: 'gcs',
      seed: 12,
      appliesTo: (method, path, kind) => kind !== 'truncate' || (method === 'GET' && path.includes('alt=media')),
    });
    const bucket = `gcs-faults-${randomBytes(4).toString('hex')}`;
    await environment.createBucket(bucket);
    store = new GcsStore({ bucket, credentials, apiEndpoint: proxy.endpoint, logger });
  });

  afterAll(async () => {
    store?.destroy();
    await proxy?.stop();
    await environment?.stop();
  });

  it('workload succeeds with default retries', async () => {
    proxy.setFaults(FAULTS);
    await runWorkload({ store, proxy });
  }, 240_000);

  it('cut upload response is retried', async () => {
    const uploadProxy = await startFaultProxy({ upstream: environment.proxy.endpoint, flavor: 'gcs', faults: { truncateRate: 1 }, appliesTo: (method) => method === 'POST' });
    const credentials = environment.staticTokenSource();
    await credentials.start();
    const bucket = `gcs-cut-${randomBytes(4).toString('hex')}`;
    await environment.createBucket(bucket);
    const shortTimeoutStore = new GcsStore({ bucket, credentials, apiEndpoint: uploadProxy.endpoint, logger, requestTimeoutMs: 2_000 });

    try {
      const body = randomBytes(64 * 1024);
      // The first attempt is cut; the retry is let through.
      const put = shortTimeoutStore.put('cut/object', body, { ifNoneMatch: true });
      await expect.poll(() => uploadProxy.counters().truncated, { timeout: 30_000 }).toBe(1);
      uploadProxy.clearFaults();
      expect((await put).size).toBe(body.length);
      expect(sha256((await getWithRetry(shortTimeoutStore, 'cut/object', {}, { logger })).body)).toBe(sha256(body));
    } finally {
      shortTimeoutStore.destroy();
      await uploadProxy.stop();
    }
  }, 120_000);
});
