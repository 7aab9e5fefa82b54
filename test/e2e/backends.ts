/**
 * Test backends for the end-to-end suite and the demonstration: each one
 * starts a real object server and a real credential flow on loopback, and
 * offers the out-of-band view of the bucket (through the SDK with the
 * server's own administrator credentials) that tests use to check what the
 * mount really stored.
 */

import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import {
  DeleteObjectCommand,
  GetObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';

import type { GcpFakes } from '../env/gcp-fakes.js';
import type { GcsAuthProxy } from '../env/gcs-auth-proxy.js';
import { startMinio, type MinioServer } from '../env/minio.js';
import { startOidcIssuer, type OidcIssuer } from '../env/oidc-issuer.js';

export type BackendName = 's3' | 'gcs';

/** The GCP STS and IAM fakes and the storage proxy behind the GCS backend, for tests that change bindings, issuers or grants. */
export interface GcpTestControls {
  fakes: GcpFakes;
  proxy: GcsAuthProxy;
  /** The service account the daemon impersonates. */
  serviceAccount: string;
}

export interface TestBackend {
  readonly name: BackendName;
  readonly issuer: OidcIssuer;
  /** Set only by the GCS backend. */
  readonly gcp?: GcpTestControls;
  /** Path of the kubelet-style token file the daemon reads. */
  readonly tokenFile: string;
  /** Creates a bucket that the web identity may read and write. */
  createBucket(name: string): Promise<void>;
  bucketUrl(bucket: string, prefix?: string): string;
  /** Options that point the daemon or `check` at this backend's servers and credentials. */
  connectionArgs(): string[];

  putObject(bucket: string, key: string, body: Buffer | string): Promise<void>;
  /** Uploads a local file, in parts when it is large. */
  putFile(bucket: string, key: string, path: string): Promise<void>;
  /** The object's bytes, or undefined when it does not exist. */
  getObject(bucket: string, key: string): Promise<Buffer | undefined>;
  /** Bytes `start` (inclusive) to `end` (exclusive) of an object, in one ranged GET. */
  getRange(bucket: string, key: string, start: number, end: number): Promise<Buffer>;
  /** SHA-256 of the object, streamed so that large objects are not held in memory. */
  hashObject(bucket: string, key: string): Promise<string | undefined>;
  deleteObject(bucket: string, key: string): Promise<void>;
  listKeys(bucket: string, prefix?: string): Promise<string[]>;
  /** Keys of multipart uploads that were started and neither completed nor aborted. */
  listIncompleteUploads(bucket: string): Promise<string[]>;

  /** Writes a fresh token to the token file, optionally with other claims. */
  writeToken(options?: { audience?: string; expiresInSeconds?: number; issuedAt?: Date }): Promise<void>;
  /** Removes the web identity's access to every bucket, and gives it back. */
  revokeAccess(): Promise<void>;
  restoreAccess(): Promise<void>;
  stop(): Promise<void>;
}

async function collectBody(body: unknown): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of body as AsyncIterable<Uint8Array>) chunks.push(Buffer.from(chunk));
  return Buffer.concat(chunks);
}

/** MinIO with the test issuer as its OpenID provider, reached through AssumeRoleWithWebIdentity. */
export async function startS3Backend(): Promise<TestBackend> {
  const issuer = await startOidcIssuer();
  let minio: MinioServer;
  try {
    minio = await startMinio({ issuer });
  } catch (error) {
    await issuer.stop();
    throw error;
  }

  const tokenDirectory = await mkdtemp(join(tmpdir(), 'bucketmount-token-'));
  const client: S3Client = minio.rootClient();

  const writeToken = async (options: { audience?: string; expiresInSeconds?: number; issuedAt?: Date } = {}): Promise<void> => {
    const token = await issuer.mintToken({
      audience: options.audience ?? minio.audience,
      expiresInSeconds: options.expiresInSeconds ?? 3600,
      issuedAt: options.issuedAt,
    });
    await issuer.writeTokenFile(tokenDirectory, token);
  };
  await writeToken();

  return {
    name: 's3',
    issuer,
    tokenFile: join(tokenDirectory, 'token'),
    createBucket: (name) => minio.createBucket(name),
    bucketUrl: (bucket, prefix) => `s3://${bucket}${prefix ? `/${prefix}` : ''}`,
    connectionArgs: () => [
      '--endpoint',
      minio.endpoint,
      '--sts-endpoint',
      minio.endpoint,
      '--region',
      minio.region,
      '--token-file',
      join(tokenDirectory, 'token'),
      '--role-arn',
      minio.roleArn,
    ],

    async putObject(bucket, key, body) {
      await client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body }));
    },
    async putFile(bucket, key, path) {
      const upload = new Upload({ client, params: { Bucket: bucket, Key: key, Body: createReadStream(path) }, queueSize: 4, partSize: 16 * 1024 * 1024 });
      await upload.done();
    },
    async getObject(bucket, key) {
      try {
        const result = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
        return await collectBody(result.Body);
      } catch (error) {
        if ((error as { name?: string }).name === 'NoSuchKey') return undefined;
        throw error;
      }
    },
    async getRange(bucket, key, start, end) {
      const result = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key, Range: `bytes=${start}-${end - 1}` }));
      return collectBody(result.Body);
    },
    async hashObject(bucket, key) {
      try {
        const result = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
        const hash = createHash('sha256');
        for await (const chunk of result.Body as AsyncIterable<Uint8Array>) hash.update(chunk);
        return hash.digest('hex');
      } catch (error) {
        if ((error as { name?: string }).name === 'NoSuchKey') return undefined;
        throw error;
      }
    },
    async deleteObject(bucket, key) {
      await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: key }));
    },
    async listKeys(bucket, prefix = '') {
      const keys: string[] = [];
      let token: string | undefined;
      do {
        const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }));
        for (const object of page.Contents ?? []) if (object.Key !== undefined) keys.push(object.Key);
        token = page.NextContinuationToken;
      } while (token !== undefined);
      return keys;
    },
    async listIncompleteUploads(bucket) {
      const result = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket }));
      return (result.Uploads ?? []).map((upload) => upload.Key ?? '');
    },

    writeToken,
    revokeAccess: () => minio.revokeRoleAccess(),
    restoreAccess: () => minio.restoreRoleAccess(),
    async stop() {
      client.destroy();
      await minio.stop();
      await issuer.stop();
      await rm(tokenDirectory, { recursive: true, force: true });
    },
  };
}

export async function startBackend(name: BackendName): Promise<TestBackend> {
  if (name === 's3') return startS3Backend();
  const { startGcsBackend } = await import('./gcs-backend.js');
  return startGcsBackend();
}
