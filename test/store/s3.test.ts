/**
 * S3Store against a real MinIO on loopback: the conformance suite with root
 * credentials, then S3-specific behaviour (error mapping, credential retry,
 * large copies, listing encodings, faults injected by a proxy).
 */

import { randomBytes } from 'node:crypto';
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

import { AssumeRoleWithWebIdentityCommand, STSClient } from '@aws-sdk/client-sts';
import type { AwsCredentialIdentity } from '@smithy/types';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import {
  AbortedError,
  AccessDeniedError,
  InvalidCredentialsError,
  NotFoundError,
  PreconditionFailedError,
  ThrottledError,
  TransientError,
} from '../../src/store/errors.js';
import { S3Store, type S3StoreOptions } from '../../src/store/s3.js';
import { startMinio, type MinioServer } from '../env/minio.js';
import { startOidcIssuer, type OidcIssuer } from '../env/oidc-issuer.js';
import { describeStoreConformance, expectStoreError, listAllPages } from './conformance.js';

const MiB = 1024 * 1024;
// BUCKETMOUNT_TEST_LOG_LEVEL=info shows the store's retry and recovery logs.
const logger = pino({ level: process.env.BUCKETMOUNT_TEST_LOG_LEVEL ?? 'silent' });

let issuer: OidcIssuer;
let minio: MinioServer;
const storesToDestroy: S3Store[] = [];

beforeAll(async () => {
  issuer = await startOidcIssuer();
  minio = await startMinio({ issuer });
});

afterAll(async () => {
  for (const store of storesToDestroy) store.destroy();
  await minio?.stop();
  await issuer?.stop();
});

function uniqueBucketName(label: string): string {
  return `test-${label}-${randomBytes(4).toString('hex')}`;
}

function rootCredentials(): AwsCredentialIdentity {
  return { accessKeyId: minio.rootUser, secretAccessKey: minio.rootPassword };
}

function createStore(bucket: string, overrides: Partial<S3StoreOptions> = {}): S3Store {
  const store = new S3Store({
    bucket,
    region: minio.region,
    endpoint: minio.endpoint,
    forcePathStyle: true,
    credentials: async () => rootCredentials(),
    maxSockets: 16,
    requestTimeoutMs: 30_000,
    maxAttempts: 2,
    logger,
    ...overrides,
  });
  storesToDestroy.push(store);
  return store;
}

async function createBucketAndStore(label: string, overrides: Partial<S3StoreOptions> = {}): Promise<S3Store> {
  const bucket = uniqueBucketName(label);
  await minio.createBucket(bucket);
  return createStore(bucket, overrides);
}

describeStoreConformance('s3 on MinIO', async () => {
  const store = await createBucketAndStore('conformance');
  return {
    store,
    storeForMissingBucket: () => createStore(uniqueBucketName('missing')),
    cleanup: async () => store.destroy(),
  };
});

describe('S3Store error mapping', () => {
  it('ranged get with stale If-Match is PreconditionFailed', async () => {
    const store = await createBucketAndStore('stale');
    const first = await store.put('pinned', Buffer.alloc(4096, 1));
    await store.put('pinned', Buffer.alloc(4096, 2));

    const error = await expectStoreError(store.get('pinned', { ifVersion: first.version, range: { start: 1024, end: 2048 } }), PreconditionFailedError);

    expect(error.httpStatus).toBe(412);
    expect(error.serviceCode).toBe('PreconditionFailed');
    expect(error.requestId).toBeTruthy();
    expect(error.bucket).toBe(store.bucket);
    expect(error.key).toBe('pinned');
    expect(error.cause).toBeDefined();
  });

  it('wrong secret is InvalidCredentials', async () => {
    const bucket = uniqueBucketName('badsecret');
    await minio.createBucket(bucket);
    const store = createStore(bucket, { credentials: async () => ({ accessKeyId: minio.rootUser, secretAccessKey: 'not-the-secret' }) });

    const error = await expectStoreError(store.list({ prefix: '' }), InvalidCredentialsError);

    expect(error.serviceCode).toBe('SignatureDoesNotMatch');
    expect(error.httpStatus).toBe(403);
    expect(error.requestId).toBeTruthy();
  });

  it('unknown access key is InvalidCredentials', async () => {
    const bucket = uniqueBucketName('badkey');
    await minio.createBucket(bucket);
    const store = createStore(bucket, { credentials: async () => ({ accessKeyId: 'unknown-access-key', secretAccessKey: 'whatever-secret' }) });

    const error = await expectStoreError(store.get('any'), InvalidCredentialsError);
    expect(error.serviceCode).toBe('InvalidAccessKeyId');
  });

  it('policy denial is AccessDenied', async () => {
    // The role policy grants only test-* and bucketmount-* buckets.
    const bucket = `private-${randomBytes(4).toString('hex')}`;
    await minio.createBucket(bucket);
    const credentials = await assumeRole();
    const store = createStore(bucket, { credentials: async () => credentials });

    const listError = await expectStoreError(store.list({ prefix: '' }), AccessDeniedError);
    expect(listError.serviceCode).toBe('AccessDenied');
    expect(listError.httpStatus).toBe(403);
    await expectStoreError(store.put('denied', Buffer.from('x')), AccessDeniedError);

    // The same credentials work on a bucket the policy grants.
    const allowed = await createBucketAndStore('allowed', { credentials: async () => credentials });
    await allowed.put('allowed', Buffer.from('x'));
    expect((await allowed.get('allowed')).body.toString()).toBe('x');
  });

  it('bad credentials on deleteMany', async () => {
    const bucket = uniqueBucketName('deletemany');
    await minio.createBucket(bucket);
    const store = createStore(bucket, { credentials: async () => ({ accessKeyId: minio.rootUser, secretAccessKey: 'wrong' }) });

    await expectStoreError(store.deleteMany(['a', 'b']), InvalidCredentialsError);
  });

  it('refused connection is Transient', async () => {
    const port = await closedPort();
    const store = createStore('test-unreachable', { endpoint: `http://127.0.0.1:${port}`, maxAttempts: 1 });

    const error = await expectStoreError(store.head('x'), TransientError);
    expect(error.retryable).toBe(true);
  });
});

describe('S3Store credentials', () => {
  it('onInvalidCredentials refresh then one retry', async () => {
    const bucket = uniqueBucketName('refresh');
    await minio.createBucket(bucket);
    let current: AwsCredentialIdentity = { accessKeyId: minio.rootUser, secretAccessKey: 'stale-secret' };
    let refreshes = 0;
    const store = createStore(bucket, {
      credentials: async () => current,
      onInvalidCredentials: async () => {
        refreshes += 1;
        current = rootCredentials();
      },
    });

    await store.put('after-refresh', Buffer.from('ok'));

    expect(refreshes).toBe(1);
    expect((await store.get('after-refresh')).body.toString()).toBe('ok');
    expect(refreshes).toBe(1);
  });

  it('refresh that does not help fails after one retry', async () => {
    const bucket = uniqueBucketName('norefresh');
    await minio.createBucket(bucket);
    let refreshes = 0;
    let providerCalls = 0;
    const store = createStore(bucket, {
      credentials: async () => {
        providerCalls += 1;
        return { accessKeyId: minio.rootUser, secretAccessKey: 'still-wrong' };
      },
      onInvalidCredentials: async () => {
        refreshes += 1;
      },
    });

    await expectStoreError(store.head('x'), AccessDeniedError);
    // HEAD errors carry no code, so a HEAD 403 cannot be told apart from a denial and triggers no refresh.
    expect(refreshes).toBe(0);

    await expectStoreError(store.list({ prefix: '' }), InvalidCredentialsError);
    expect(refreshes).toBe(1);
    // The provider is asked before every signing, not cached by the SDK.
    expect(providerCalls).toBeGreaterThanOrEqual(3);
  });

  it('failing provider is InvalidCredentials without refresh', async () => {
    let refreshes = 0;
    const store = createStore(uniqueBucketName('noprovider'), {
      credentials: async () => {
        throw new Error('token file /var/run/token is missing');
      },
      onInvalidCredentials: async () => {
        refreshes += 1;
      },
    });

    const error = await expectStoreError(store.list({ prefix: '' }), InvalidCredentialsError);
    expect(error.message).toContain('token file /var/run/token is missing');
    expect(error.httpStatus).toBeUndefined();
    expect(refreshes).toBe(0);
  });

  it('ignores AWS environment variables', async () => {
    const store = await createBucketAndStore('environment');
    const saved = { ...process.env };
    // Each of these would redirect or break the client if it were read.
    process.env.AWS_ENDPOINT_URL = 'http://127.0.0.1:9';
    process.env.AWS_ENDPOINT_URL_S3 = 'http://127.0.0.1:9';
    process.env.AWS_REGION = 'eu-west-3';
    process.env.AWS_ACCESS_KEY_ID = 'environment-key';
    process.env.AWS_SECRET_ACCESS_KEY = 'environment-secret';
    process.env.AWS_USE_DUALSTACK_ENDPOINT = 'true';
    try {
      const fresh = createStore(store.bucket);
      await fresh.put('environment', Buffer.from('explicit configuration'));
      expect((await fresh.get('environment')).body.toString()).toBe('explicit configuration');
    } finally {
      for (const name of Object.keys(process.env)) if (!(name in saved)) delete process.env[name];
      Object.assign(process.env, saved);
    }
  });
});

describe('S3Store copies and listings', () => {
  it('large copy uses part copies', async () => {
    const store = await createBucketAndStore('bigcopy', { limits: { maxSingleRequestSize: 6 * MiB }, copyPartSize: 5 * MiB, copyConcurrency: 2 });
    const body = randomBytes(11 * MiB + 123);
    const uploadId = await store.createMultipartUpload('big/source', { contentType: 'application/x-test' });
    const first = await store.uploadPart('big/source', uploadId, 1, body.subarray(0, 6 * MiB));
    const second = await store.uploadPart('big/source', uploadId, 2, body.subarray(6 * MiB));
    const source = await store.completeMultipartUpload('big/source', uploadId, [first, second]);
    expect(source.size).toBe(body.length);

    const copied = await store.copy('big/source', 'big/copy');

    expect(copied.size).toBe(body.length);
    // 11 MiB in 5 MiB parts is three parts, and the multipart ETag ends with the part count.
    expect(copied.version).toMatch(/-3$/);
    expect((await store.get('big/copy')).body.equals(body)).toBe(true);
    expect(await store.listMultipartUploads('')).toEqual([]);
  });

  it('large copy with stale source version', async () => {
    const store = await createBucketAndStore('bigstale', { limits: { maxSingleRequestSize: 6 * MiB }, copyPartSize: 5 * MiB });
    // Written through a store with the default limits, because this store's put stops at 6 MiB.
    const writer = createStore(store.bucket);
    const original = await writer.put('big/source', randomBytes(6 * MiB + 1));
    await writer.put('big/source', randomBytes(6 * MiB + 1));

    await expectStoreError(store.copy('big/source', 'big/copy', { ifSourceVersion: original.version, sourceSize: 6 * MiB + 1 }), PreconditionFailedError);

    await expectStoreError(store.head('big/copy'), NotFoundError);
    expect(await store.listMultipartUploads('')).toEqual([]);
  });

  it('keys with reserved characters round trip', async () => {
    const store = await createBucketAndStore('encoding');
    const keys = ['enc/a b', 'enc/a+b', 'enc/a%20b', 'enc/a&b<c>', 'enc/tab\there', 'enc/ctrl\u0001x', 'enc/é ü/中'];
    for (const key of keys) await store.put(key, Buffer.from(key));

    const pages = await listAllPages(store, { prefix: 'enc/', maxKeys: 2 });
    const listed = pages.flatMap((page) => page.objects.map((object) => object.key));
    expect([...listed].sort()).toEqual([...keys].sort());

    const grouped = await listAllPages(store, { prefix: 'enc/', delimiter: '/' });
    expect(grouped.flatMap((page) => page.prefixes)).toEqual(['enc/é ü/']);

    for (const key of keys) {
      expect((await store.get(key)).body.toString()).toBe(key);
      await store.copy(key, `${key}.copy`);
    }

    const uploadId = await store.createMultipartUpload('enc/upload a+b');
    const uploads = await store.listMultipartUploads('enc/');
    expect(uploads.map((upload) => upload.key)).toEqual(['enc/upload a+b']);
    await store.abortMultipartUpload('enc/upload a+b', uploadId);
  });

  it('completed upload reports size without parts known', async () => {
    const store = await createBucketAndStore('othersizes');
    const other = createStore(store.bucket);
    const uploadId = await store.createMultipartUpload('shared');
    const part = await store.uploadPart('shared', uploadId, 1, Buffer.from('uploaded elsewhere'));

    const info = await other.completeMultipartUpload('shared', uploadId, [part]);

    expect(info.size).toBe(18);
    expect(info.version).toBe((await other.head('shared')).version);
  });
});

describe('S3Store with injected faults', () => {
  let proxy: FaultProxy;

  beforeAll(async () => {
    proxy = await startFaultProxy(new URL(minio.endpoint));
  });

  afterAll(async () => {
    await proxy?.stop();
  });

  async function storeThroughProxy(label: string, overrides: Partial<S3StoreOptions> = {}): Promise<S3Store> {
    const bucket = uniqueBucketName(label);
    await minio.createBucket(bucket);
    return createStore(bucket, { endpoint: proxy.endpoint, ...overrides });
  }

  it('truncated body is Transient', async () => {
    const store = await storeThroughProxy('truncated');
    await store.put('object', randomBytes(256 * 1024));

    proxy.next = [{ kind: 'truncate-body' }];
    const error = await expectStoreError(store.get('object'), TransientError);
    expect(error.operation).toBe('get');

    proxy.next = [{ kind: 'truncate-body' }];
    await expectStoreError(store.get('object', { range: { start: 1000, end: 200_000 } }), TransientError);

    expect((await store.get('object')).body.length).toBe(256 * 1024);
  });

  it('SDK retries a listing whose body was cut', async () => {
    const store = await storeThroughProxy('cut-listing', { maxAttempts: 2 });
    await store.put('listed', Buffer.from('x'));
    const before = proxy.requests;

    // The SDK reads a listing's XML after the handler has returned, so the cut raises undici's own error there.
    proxy.next = [{ kind: 'truncate-body' }];
    const page = await store.list({ prefix: '' });

    expect(page.objects.map((object) => object.key)).toEqual(['listed']);
    expect(proxy.requests - before).toBe(2);
  });

  it('SDK retries a 503 and succeeds', async () => {
    const store = await storeThroughProxy('retry', { maxAttempts: 3 });
    await store.put('object', Buffer.from('retried'));
    const before = proxy.requests;

    proxy.next = [{ kind: 'status', status: 503, code: 'SlowDown' }];
    expect((await store.get('object')).body.toString()).toBe('retried');

    expect(proxy.requests - before).toBe(2);
  });

  it('503 without retries is Throttled', async () => {
    const store = await storeThroughProxy('throttled', { maxAttempts: 1 });

    proxy.next = [{ kind: 'status', status: 503, code: 'SlowDown' }];
    const error = await expectStoreError(store.list({ prefix: '' }), ThrottledError);
    expect(error.serviceCode).toBe('SlowDown');
    expect(error.requestId).toBe('fault-proxy-request');
  });

  it('500 without retries is Transient', async () => {
    const store = await storeThroughProxy('internal', { maxAttempts: 1 });

    proxy.next = [{ kind: 'status', status: 500, code: 'InternalError' }];
    await expectStoreError(store.put('x', Buffer.from('x')), TransientError);
  });

  it('connection reset is Transient', async () => {
    const store = await storeThroughProxy('reset', { maxAttempts: 1 });

    proxy.next = [{ kind: 'reset' }];
    await expectStoreError(store.list({ prefix: '' }), TransientError);
  });

  it('abort while waiting is Aborted', async () => {
    const store = await storeThroughProxy('abort');
    await store.put('object', Buffer.from('x'));
    const controller = new AbortController();

    proxy.next = [{ kind: 'hold', onHeld: () => controller.abort() }];
    await expectStoreError(store.get('object', { signal: controller.signal }), AbortedError);
  });

  it('retried conditional put is recognised', async () => {
    const store = await storeThroughProxy('conditional', { maxAttempts: 2 });

    // The first attempt reaches MinIO and creates the object, but its answer is replaced by a 500.
    proxy.next = [{ kind: 'forward-then-status', status: 500, code: 'InternalError' }];
    const info = await store.put('created-once', Buffer.from('exclusive'), { ifNoneMatch: true });

    expect(info.size).toBe(9);
    expect((await store.get('created-once')).body.toString()).toBe('exclusive');
  });

  it('retried multipart completion is recognised', async () => {
    const store = await storeThroughProxy('complete', { maxAttempts: 2 });
    const uploadId = await store.createMultipartUpload('completed-once');
    const part = await store.uploadPart('completed-once', uploadId, 1, Buffer.from('one part'));

    proxy.next = [{ kind: 'forward-then-status', status: 500, code: 'InternalError' }];
    const info = await store.completeMultipartUpload('completed-once', uploadId, [part]);

    expect(info.size).toBe(8);
    expect((await store.get('completed-once')).body.toString()).toBe('one part');
  });
});

async function assumeRole(): Promise<AwsCredentialIdentity> {
  const token = await issuer.mintToken({ audience: minio.audience });
  const sts = new STSClient({ endpoint: minio.endpoint, region: minio.region, credentials: { accessKeyId: 'unused', secretAccessKey: 'unused' }, maxAttempts: 1 });
  try {
    const response = await sts.send(new AssumeRoleWithWebIdentityCommand({ RoleArn: minio.roleArn, RoleSessionName: 'store-test', WebIdentityToken: token }));
    const credentials = response.Credentials;
    if (credentials?.AccessKeyId === undefined || credentials.SecretAccessKey === undefined) {
      throw new Error('MinIO STS returned no credentials');
    }
    return { accessKeyId: credentials.AccessKeyId, secretAccessKey: credentials.SecretAccessKey, sessionToken: credentials.SessionToken, expiration: credentials.Expiration };
  } finally {
    sts.destroy();
  }
}

async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

type Fault =
  | { kind: 'truncate-body' }
  | { kind: 'status'; status: number; code: string }
  | { kind: 'forward-then-status'; status: number; code: string }
  | { kind: 'reset' }
  | { kind: 'hold'; onHeld: () => void };

interface FaultProxy {
  endpoint: string;
  /** Faults applied to the next requests, one each, in order. */
  next: Fault[];
  /** Requests received so far. */
  requests: number;
  stop(): Promise<void>;
}

/**
 * Starts an HTTP proxy in front of MinIO that forwards requests unchanged
 * (the Host header included, so signatures stay valid) and applies queued faults.
 */
async function startFaultProxy(target: URL): Promise<FaultProxy> {
  const heldResponses = new Set<ServerResponse>();
  const proxy: FaultProxy = {
    endpoint: '',
    next: [],
    requests: 0,
    stop: async () => {
      for (const response of heldResponses) response.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };

  const forward = (incoming: IncomingMessage, body: Buffer, onResponse: (response: IncomingMessage) => void): void => {
    const outgoing = httpRequest(
      { host: target.hostname, port: Number(target.port), method: incoming.method, path: incoming.url, headers: incoming.headers },
      onResponse,
    );
    outgoing.end(body);
  };

  const server: Server = createServer((incoming, response) => {
    proxy.requests += 1;
    const fault = proxy.next.shift();
    const chunks: Buffer[] = [];
    incoming.on('data', (chunk: Buffer) => chunks.push(chunk));
    incoming.on('end', () => {
      const body = Buffer.concat(chunks);
      const errorDocument = (status: number, code: string): void => {
        const xml = `<?xml version="1.0" encoding="UTF-8"?><Error><Code>${code}</Code><Message>injected by the test proxy</Message><RequestId>fault-proxy-request</RequestId></Error>`;
        response.writeHead(status, { 'content-type': 'application/xml', 'x-amz-request-id': 'fault-proxy-request', 'content-length': Buffer.byteLength(xml) });
        response.end(xml);
      };

      switch (fault?.kind) {
        case 'status':
          errorDocument(fault.status, fault.code);
          return;
        case 'reset':
          incoming.socket.destroy();
          return;
        case 'hold':
          heldResponses.add(response);
          fault.onHeld();
          return;
        case 'forward-then-status':
          forward(incoming, body, (upstream) => {
            upstream.resume();
            upstream.on('end', () => errorDocument(fault.status, fault.code));
          });
          return;
        case 'truncate-body':
          forward(incoming, body, (upstream) => {
            response.writeHead(upstream.statusCode ?? 502, upstream.headers);
            let sent = 0;
            // Whole bytes: with half of an odd length, the last write never reached the limit and the connection stalled.
            const limit = Math.floor(Number(upstream.headers['content-length'] ?? 0) / 2);
            upstream.on('data', (chunk: Buffer) => {
              if (sent >= limit) return;
              const part = chunk.subarray(0, Math.max(0, limit - sent));
              sent += part.length;
              response.write(part, () => {
                if (sent >= limit) response.socket?.destroy();
              });
            });
          });
          return;
        default:
          forward(incoming, body, (upstream) => {
            response.writeHead(upstream.statusCode ?? 502, upstream.headers);
            upstream.pipe(response);
          });
      }
    });
  });

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  proxy.endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return proxy;
}
