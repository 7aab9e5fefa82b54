/**
 * The GCS test backend: fake-gcs-server behind the authorizing proxy, the
 * GCP STS and IAM Credentials fakes, and the test OIDC issuer. The daemon
 * reaches the emulator only through the proxy, with access tokens the IAM
 * fake minted after verifying the token file's JWT; the tests' own view of the
 * bucket talks to the emulator directly.
 */

import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { Storage } from '@google-cloud/storage';

import { startGcpEnvironment } from '../env/gcp-environment.js';
import { DEFAULT_UPLOAD_PREFIX } from '../../src/store/gcs.js';
import type { TestBackend } from './backends.js';

function isNotFound(error: unknown): boolean {
  return (error as { code?: number }).code === 404;
}

export async function startGcsBackend(): Promise<TestBackend> {
  const environment = await startGcpEnvironment();
  const { issuer, fakes, gcs, proxy, serviceAccount } = environment;

  // The emulator accepts unauthenticated requests; only the daemon's path goes through the proxy.
  const storage = new Storage({ apiEndpoint: gcs.endpoint, projectId: 'bucketmount-test', useAuthWithCustomEndpoint: false });
  const buckets = new Set<string>();

  const tokenDirectory = await mkdtemp(join(tmpdir(), 'bucketmount-token-'));
  const writeToken = async (options: { audience?: string; expiresInSeconds?: number; issuedAt?: Date } = {}): Promise<void> => {
    const token = await issuer.mintToken({
      audience: options.audience ?? fakes.audience,
      expiresInSeconds: options.expiresInSeconds ?? 3600,
      issuedAt: options.issuedAt,
    });
    await issuer.writeTokenFile(tokenDirectory, token);
  };
  await writeToken();

  const file = (bucket: string, key: string) => storage.bucket(bucket).file(key);

  return {
    name: 'gcs',
    issuer,
    gcp: { fakes, proxy, serviceAccount },
    tokenFile: join(tokenDirectory, 'token'),
    async createBucket(name) {
      await environment.createBucket(name);
      buckets.add(name);
    },
    bucketUrl: (bucket, prefix) => `gs://${bucket}${prefix ? `/${prefix}` : ''}`,
    connectionArgs: () => [
      '--endpoint',
      proxy.endpoint,
      '--gcp-wif-provider',
      fakes.providerName,
      '--gcp-service-account',
      serviceAccount,
      '--token-file',
      join(tokenDirectory, 'token'),
      '--gcp-sts-endpoint',
      fakes.stsTokenUrl,
      '--gcp-iam-endpoint',
      fakes.iamEndpoint,
    ],

    async putObject(bucket, key, body) {
      await file(bucket, key).save(typeof body === 'string' ? Buffer.from(body) : body, { resumable: false });
    },
    async putFile(bucket, key, path) {
      await storage.bucket(bucket).upload(path, { destination: key, resumable: false });
    },
    async getObject(bucket, key) {
      try {
        const [contents] = await file(bucket, key).download();
        return contents;
      } catch (error) {
        if (isNotFound(error)) return undefined;
        throw error;
      }
    },
    async getRange(bucket, key, start, end) {
      const [contents] = await file(bucket, key).download({ start, end: end - 1 });
      return contents;
    },
    async hashObject(bucket, key) {
      const hash = createHash('sha256');
      try {
        for await (const chunk of file(bucket, key).createReadStream({ validation: false })) hash.update(chunk as Buffer);
      } catch (error) {
        if (isNotFound(error)) return undefined;
        throw error;
      }
      return hash.digest('hex');
    },
    async deleteObject(bucket, key) {
      await file(bucket, key).delete({ ignoreNotFound: true });
    },
    async listKeys(bucket, prefix = '') {
      const [files] = await storage.bucket(bucket).getFiles({ prefix, autoPaginate: true });
      return files.map((entry) => entry.name).filter((name) => !name.startsWith(DEFAULT_UPLOAD_PREFIX));
    },
    async listIncompleteUploads(bucket) {
      // Multipart uploads on GCS are parts composed at completion; leftovers stay under the upload prefix.
      const [files] = await storage.bucket(bucket).getFiles({ prefix: DEFAULT_UPLOAD_PREFIX, autoPaginate: true });
      return files.map((entry) => entry.name);
    },

    writeToken,
    async revokeAccess() {
      for (const bucket of buckets) fakes.revokeBucket({ serviceAccount, bucket, role: 'roles/storage.objectAdmin' });
    },
    async restoreAccess() {
      for (const bucket of buckets) fakes.grantBucket({ serviceAccount, bucket, role: 'roles/storage.objectAdmin' });
    },
    async stop() {
      await environment.stop();
      await rm(tokenDirectory, { recursive: true, force: true });
    },
  };
}
