/**
 * Starts the cached MinIO binary on loopback as the S3 server of the tests,
 * with the test OIDC issuer configured as its OpenID provider.
 *
 * MinIO's STS (served on the S3 endpoint) then accepts
 * `AssumeRoleWithWebIdentity` for tokens whose `aud` equals the configured
 * client id, and the temporary credentials it returns carry the role policy
 * created here: read and write on buckets named `test-*` and `bucketmount-*`.
 *
 * Facts about this MinIO version (module version in test/env/install.sh) that
 * the tests rely on, read from its source and checked against the server:
 * - The role ARN is `arn:minio:iam:REGION::role/ID`, where ID is the unpadded
 *   base64url SHA-1 of the client id, so it is computed here and then checked
 *   against the "IAM Roles:" line that MinIO prints at startup.
 * - Without `DurationSeconds`, the temporary credentials expire when the web
 *   identity token expires. With it, MinIO accepts 900 s up to 365 days.
 * - MinIO does not check the token's `iss` claim, and it keeps every key it
 *   has fetched from the JWKS, so a key removed from the JWKS still verifies.
 * - The role policy is read when each request is authorized, so replacing the
 *   policy document takes effect for credentials already issued.
 */

import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { SignatureV4 } from '@smithy/signature-v4';

import type { OidcIssuer } from './oidc-issuer.js';
import { serverBinary } from './paths.js';
import { freePort } from './ports.js';

export const DEFAULT_AUDIENCE = 'bucketmount-test';
export const ROLE_POLICY_NAME = 'bucketmount-test-role';

const REGION = 'us-east-1';
const STARTUP_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 10_000;
const OUTPUT_TAIL_CHARACTERS = 8_000;

/** Bucket name patterns the role policy grants read and write on. */
export const TEST_BUCKET_PATTERNS = ['test-*', 'bucketmount-*'];

export interface StartMinioOptions {
  issuer: OidcIssuer;
  /** The OpenID client id, which tokens must carry in `aud`; defaults to `bucketmount-test`. */
  audience?: string;
}

export interface MinioServer {
  /** `http://127.0.0.1:PORT`; S3 and STS share it. */
  endpoint: string;
  region: string;
  rootUser: string;
  rootPassword: string;
  roleArn: string;
  audience: string;
  dataDirectory: string;
  rootClient(): S3Client;
  createBucket(name: string): Promise<void>;
  /** Replaces the role policy with one that denies every S3 action, for "access revoked" tests. */
  revokeRoleAccess(): Promise<void>;
  /** Puts the read and write role policy back. */
  restoreRoleAccess(): Promise<void>;
  /** Server output so far (the last few kilobytes), for failure messages. */
  output(): string;
  stop(): Promise<void>;
}

const ALLOW_TEST_BUCKETS_POLICY = {
  Version: '2012-10-17',
  Statement: [
    {
      Effect: 'Allow',
      Action: ['s3:*'],
      Resource: TEST_BUCKET_PATTERNS.flatMap((pattern) => [`arn:aws:s3:::${pattern}`, `arn:aws:s3:::${pattern}/*`]),
    },
  ],
};

const DENY_ALL_POLICY = {
  Version: '2012-10-17',
  Statement: [{ Effect: 'Deny', Action: ['s3:*'], Resource: ['arn:aws:s3:::*'] }],
};

/** Computes the role ARN that MinIO derives from an OpenID client id. */
export function minioRoleArn(clientId: string, region: string = REGION): string {
  const resourceId = createHash('sha1').update(clientId).digest('base64url');
  return `arn:minio:iam:${region}::role/${resourceId}`;
}

export async function startMinio(options: StartMinioOptions): Promise<MinioServer> {
  const audience = options.audience ?? DEFAULT_AUDIENCE;

  // MinIO's environment reader treats any value that starts with "env" as the
  // URL of a remote environment service (github.com/minio/pkg/v3 env.LookupEnv),
  // so such a client id never reaches the OpenID configuration.
  if (audience.startsWith('env')) {
    throw new Error(`MinIO cannot take the audience ${JSON.stringify(audience)} as its OpenID client id because it starts with "env"; choose another audience`);
  }
  const binary = serverBinary('minio');
  const workDirectory = await mkdtemp(join(tmpdir(), 'bucketmount-minio-'));
  const dataDirectory = join(workDirectory, 'data');
  const rootUser = 'bucketmount-root';
  const rootPassword = randomBytes(18).toString('hex');
  const port = await freePort();
  const consolePort = await freePort();
  const endpoint = `http://127.0.0.1:${port}`;

  // An explicit environment, so nothing from the caller's shell (AWS_*,
  // proxies, CA bundles, MINIO_*) reaches the server. Update checks and call
  // home are off, so the server sends traffic only to the loopback issuer.
  const environment: NodeJS.ProcessEnv = {
    PATH: '/usr/local/bin:/usr/bin:/bin',
    HOME: workDirectory,
    MINIO_ROOT_USER: rootUser,
    MINIO_ROOT_PASSWORD: rootPassword,
    MINIO_REGION: REGION,
    MINIO_BROWSER: 'off',
    MINIO_UPDATE: 'off',
    MINIO_CALLHOME_ENABLE: 'off',
    MINIO_IDENTITY_OPENID_CONFIG_URL: options.issuer.discoveryUrl,
    MINIO_IDENTITY_OPENID_CLIENT_ID: audience,
    MINIO_IDENTITY_OPENID_ROLE_POLICY: ROLE_POLICY_NAME,
    MINIO_IDENTITY_OPENID_DISPLAY_NAME: 'bucketmount test issuer',
  };

  const child = spawn(
    binary,
    [
      'server',
      dataDirectory,
      '--address',
      `127.0.0.1:${port}`,
      '--console-address',
      `127.0.0.1:${consolePort}`,
      '--certs-dir',
      join(workDirectory, 'certs'),
    ],
    { env: environment, stdio: ['ignore', 'pipe', 'pipe'] },
  );

  let output = '';
  const appendOutput = (chunk: Buffer): void => {
    output = (output + chunk.toString('utf8')).slice(-OUTPUT_TAIL_CHARACTERS);
  };
  child.stdout?.on('data', appendOutput);
  child.stderr?.on('data', appendOutput);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));

  const signer = new SignatureV4({
    credentials: { accessKeyId: rootUser, secretAccessKey: rootPassword },
    region: REGION,
    service: 's3',
    sha256: NodeSha256,
    applyChecksum: true,
  });

  const putRolePolicy = (document: object): Promise<void> =>
    adminRequest(signer, endpoint, 'PUT', '/minio/admin/v3/add-canned-policy', { name: ROLE_POLICY_NAME }, JSON.stringify(document));

  let stopped = false;
  const stop = async (): Promise<void> => {
    if (!stopped) {
      stopped = true;
      await stopChild(child, exited);
      await rm(workDirectory, { recursive: true, force: true });
    }
  };

  try {
    await waitUntilReady(endpoint, child, exited, () => output);

    // MinIO reports ready before IAM has loaded, and admin calls
    // fail until it has, so the first policy upload is retried.
    await retryUntil(STARTUP_TIMEOUT_MS, () => putRolePolicy(ALLOW_TEST_BUCKETS_POLICY));
  } catch (error) {
    await stop();
    throw new Error(`MinIO did not start at ${endpoint}: ${(error as Error).message}\nserver output:\n${output}`, {
      cause: error,
    });
  }

  // The computed ARN is checked against the one MinIO prints, so that a change
  // in how MinIO derives it fails here and not as a confusing STS rejection.
  // MinIO can print it after the policy upload succeeded, so the output is
  // read until the line appears or the start-up timeout passes.
  const roleArn = minioRoleArn(audience, REGION);
  try {
    await retryUntil(STARTUP_TIMEOUT_MS, async () => {
      if (!output.includes(roleArn)) throw new Error('the role ARN is not printed yet');
    });
  } catch {
    await stop();
    throw new Error(`MinIO did not print the expected role ARN ${roleArn} within ${STARTUP_TIMEOUT_MS} ms after it was ready; server output:\n${output}`);
  }

  const rootClient = (): S3Client =>
    new S3Client({
      endpoint,
      region: REGION,
      forcePathStyle: true,
      credentials: { accessKeyId: rootUser, secretAccessKey: rootPassword },
      maxAttempts: 1,
    });

  const createBucket = async (name: string): Promise<void> => {
    const client = rootClient();
    try {
      await client.send(new CreateBucketCommand({ Bucket: name }));
    } finally {
      client.destroy();
    }
  };

  return {
    endpoint,
    region: REGION,
    rootUser,
    rootPassword,
    roleArn,
    audience,
    dataDirectory,
    rootClient,
    createBucket,
    revokeRoleAccess: () => putRolePolicy(DENY_ALL_POLICY),
    restoreRoleAccess: () => putRolePolicy(ALLOW_TEST_BUCKETS_POLICY),
    output: () => output,
    stop,
  };
}

/** The SHA-256 hash interface that `SignatureV4` expects, over node:crypto. */
class NodeSha256 {
  private readonly hash;

  constructor(secret?: string | ArrayBuffer | ArrayBufferView) {
    this.hash = secret === undefined ? createHash('sha256') : createHmac('sha256', toBuffer(secret));
  }

  update(data: string | ArrayBuffer | ArrayBufferView): void {
    this.hash.update(toBuffer(data));
  }

  async digest(): Promise<Uint8Array> {
    return new Uint8Array(this.hash.digest());
  }

  reset(): void {
    throw new Error('NodeSha256.reset is not supported; create a new instance');
  }
}

function toBuffer(data: string | ArrayBuffer | ArrayBufferView): Buffer {
  if (typeof data === 'string') {
    return Buffer.from(data, 'utf8');
  }
  if (ArrayBuffer.isView(data)) {
    return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  }
  return Buffer.from(data);
}


/** Sends one SigV4-signed request to MinIO's admin API and throws on a non-2xx status. */
async function adminRequest(
  signer: SignatureV4,
  endpoint: string,
  method: string,
  path: string,
  query: Record<string, string>,
  body: string,
): Promise<void> {
  const url = new URL(endpoint);
  const signed = await signer.sign({
    method,
    protocol: url.protocol,
    hostname: url.hostname,
    port: Number(url.port),
    path,
    query,
    headers: {
      host: url.host,
      'content-type': 'application/json',
      'content-length': String(Buffer.byteLength(body)),
    },
    body,
  });

  const requestUrl = new URL(path, endpoint);
  for (const [name, value] of Object.entries(query)) {
    requestUrl.searchParams.set(name, value);
  }
  const response = await fetch(requestUrl, {
    method,
    headers: signed.headers,
    body,
    signal: AbortSignal.timeout(10_000),
  });
  if (!response.ok) {
    throw new Error(`MinIO admin ${method} ${path} failed with HTTP ${response.status}: ${await response.text()}`);
  }
}

async function waitUntilReady(
  endpoint: string,
  child: ChildProcess,
  exited: Promise<number | null>,
  output: () => string,
): Promise<void> {
  let exitCode: number | null | undefined;
  void exited.then((code) => {
    exitCode = code;
  });

  const deadline = Date.now() + STARTUP_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (exitCode !== undefined || child.exitCode !== null) {
      throw new Error(`minio exited with code ${String(exitCode ?? child.exitCode)} before it was ready`);
    }
    try {
      const response = await fetch(`${endpoint}/minio/health/ready`, { signal: AbortSignal.timeout(2_000) });
      if (response.ok) {
        return;
      }
    } catch {
      // Connection refused until the server listens; the loop retries.
    }
    await sleep(100);
  }
  throw new Error(`minio was not ready after ${STARTUP_TIMEOUT_MS} ms; last output:\n${output()}`);
}

async function retryUntil(timeoutMs: number, attempt: () => Promise<void>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await attempt();
      return;
    } catch (error) {
      if (Date.now() >= deadline) {
        throw error;
      }
      await sleep(200);
    }
  }
}

async function stopChild(child: ChildProcess, exited: Promise<number | null>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) {
    return;
  }
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
  try {
    await exited;
  } finally {
    clearTimeout(timer);
  }
}
