/**
 * The object servers of one benchmark run, each behind a counting proxy:
 * MinIO with the test OIDC issuer (S3), and fake-gcs-server with the GCP
 * STS and IAM fakes and the authorizing proxy (GCS). gcsfuse reads
 * anonymously, so it goes through a proxy of the same kind that checks no
 * credentials: every GCS client passes one HTTP proxy and one counting proxy.
 *
 * bucketmount authenticates through its real web-identity path (a
 * kubelet-style token file). The SDK ceiling uses credentials from one
 * AssumeRoleWithWebIdentity call. Peer mounts use MinIO's root access key,
 * because s3fs, rclone and goofys cannot exchange a token file themselves.
 */

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { AssumeRoleWithWebIdentityCommand, STSClient } from '@aws-sdk/client-sts';
import { S3Client } from '@aws-sdk/client-s3';

import { startGcpEnvironment, type GcpEnvironment } from '../test/env/gcp-environment.js';
import { startGcsAuthProxy } from '../test/env/gcs-auth-proxy.js';
import { startMinio, type MinioServer } from '../test/env/minio.js';
import { startOidcIssuer, type OidcIssuer } from '../test/env/oidc-issuer.js';
import { startCountingProxy, type CountingProxy } from './counting-proxy.js';

export const S3_BUCKET = 'bucketmount-bench';
export const GCS_BUCKET = 'bucketmount-bench';

export interface S3Environment {
  minio: MinioServer;
  issuer: OidcIssuer;
  proxy: CountingProxy;
  tokenFile: string;
  /** Client with the root key, straight to MinIO: seeding and checks, not counted. */
  adminClient: S3Client;
  /** Mints a token and exchanges it with AssumeRoleWithWebIdentity; returns a client through the proxy. */
  webIdentityClient(): Promise<{ client: S3Client; exchangeMs: number }>;
  stop(): Promise<void>;
}

export async function startS3Environment(): Promise<S3Environment> {
  const issuer = await startOidcIssuer();
  const minio = await startMinio({ issuer }).catch(async (error: unknown) => {
    await issuer.stop();
    throw error;
  });
  const proxy = await startCountingProxy(minio.endpoint);
  await minio.createBucket(S3_BUCKET);

  const tokenDirectory = await mkdtemp(join(tmpdir(), 'bucketmount-bench-token-'));
  const token = await issuer.mintToken({ audience: minio.audience, expiresInSeconds: 6 * 3600 });
  const tokenFile = await issuer.writeTokenFile(tokenDirectory, token);
  const adminClient = minio.rootClient();

  const webIdentityClient = async (): Promise<{ client: S3Client; exchangeMs: number }> => {
    const sts = new STSClient({ endpoint: minio.endpoint, region: minio.region, maxAttempts: 1 });
    const started = performance.now();
    const response = await sts.send(
      new AssumeRoleWithWebIdentityCommand({ RoleArn: minio.roleArn, RoleSessionName: 'bench', WebIdentityToken: token }),
    );
    const exchangeMs = performance.now() - started;
    sts.destroy();
    const credentials = response.Credentials;
    if (credentials?.AccessKeyId === undefined || credentials.SecretAccessKey === undefined) {
      throw new Error('AssumeRoleWithWebIdentity returned no credentials');
    }
    const client = new S3Client({
      endpoint: proxy.endpoint,
      region: minio.region,
      forcePathStyle: true,
      credentials: { accessKeyId: credentials.AccessKeyId, secretAccessKey: credentials.SecretAccessKey, sessionToken: credentials.SessionToken },
      requestHandler: { httpAgent: { keepAlive: true, maxSockets: 64 } },
    });
    return { client, exchangeMs };
  };

  return {
    minio,
    issuer,
    proxy,
    tokenFile,
    adminClient,
    webIdentityClient,
    stop: async () => {
      adminClient.destroy();
      await proxy.stop();
      await minio.stop();
      await issuer.stop();
      await rm(tokenDirectory, { recursive: true, force: true });
    },
  };
}

export interface GcsEnvironment {
  gcp: GcpEnvironment;
  /** In front of the authorizing proxy: bucketmount and the SDK ceiling use it. */
  authorizedProxy: CountingProxy;
  /**
   * In front of a proxy of the same kind that checks no credentials: gcsfuse
   * reads anonymously through it, so that its requests pass the same two hops.
   */
  anonymousProxy: CountingProxy;
  tokenFile: string;
  stop(): Promise<void>;
}

export async function startGcsEnvironment(): Promise<GcsEnvironment> {
  const gcp = await startGcpEnvironment();
  await gcp.createBucket(GCS_BUCKET);
  const authorizedProxy = await startCountingProxy(gcp.proxy.endpoint);
  const passThrough = await startGcsAuthProxy({ upstream: gcp.gcs.endpoint, fakes: gcp.fakes, anonymous: true });
  const anonymousProxy = await startCountingProxy(passThrough.endpoint);

  const tokenDirectory = await mkdtemp(join(tmpdir(), 'bucketmount-bench-gcp-token-'));
  const token = await gcp.issuer.mintToken({ audience: gcp.fakes.audience, expiresInSeconds: 6 * 3600 });
  const tokenFile = await gcp.issuer.writeTokenFile(tokenDirectory, token);

  return {
    gcp,
    authorizedProxy,
    anonymousProxy,
    tokenFile,
    stop: async () => {
      await authorizedProxy.stop();
      await anonymousProxy.stop();
      await passThrough.stop();
      await gcp.stop();
      await rm(tokenDirectory, { recursive: true, force: true });
    },
  };
}
