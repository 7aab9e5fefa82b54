import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';

import { GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import {
  ExpiredTokenException,
  IDPCommunicationErrorException,
  InvalidIdentityTokenException,
  STSServiceException,
} from '@aws-sdk/client-sts';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { startMinio, type MinioServer } from '../../test/env/minio.js';
import { startOidcIssuer, writeTokenFile, type OidcIssuer } from '../../test/env/oidc-issuer.js';
import { REDACTED_PATHS } from '../observability/logger.js';
import {
  awsCredentialProvider,
  createAwsWebIdentityCredentialSource,
  defaultSessionName,
  explainStsFailure,
  readAwsWebIdentityEnvironment,
  type AwsWebIdentityConfig,
} from './aws-web-identity.js';
import { CredentialError, StsExchangeError, TokenFileError } from './errors.js';
import type { CredentialRefresher } from './refresher.js';
import { decodeTokenClaims } from './token-file.js';
import type { AwsCredentials } from './types.js';

const BUCKET = 'test-web-identity';

/** Collects log output so tests can check that no token reaches the log. */
const logText: string[] = [];
const logger = pino(
  { level: 'debug', redact: { paths: REDACTED_PATHS, censor: '[redacted]' } },
  new Writable({
    write(chunk: Buffer, _encoding, callback) {
      logText.push(chunk.toString('utf8'));
      callback();
    },
  }),
);

describe('AWS web identity credentials against MinIO', () => {
  let issuer: OidcIssuer;
  let minio: MinioServer;
  let scratch: string;
  const sources: Array<CredentialRefresher<AwsCredentials>> = [];
  let directoryCount = 0;

  beforeAll(async () => {
    issuer = await startOidcIssuer();
    minio = await startMinio({ issuer });
    await minio.createBucket(BUCKET);
    scratch = await mkdtemp(join(tmpdir(), 'bucketmount-aws-credentials-'));
  });

  afterAll(async () => {
    for (const source of sources) {
      source.stop();
    }
    await minio?.stop();
    await issuer?.stop();
    await rm(scratch, { recursive: true, force: true });
  });

  /** Writes `token` kubelet-style into a fresh directory and returns the token path. */
  const tokenFileWith = async (token: string): Promise<string> => {
    directoryCount += 1;
    return writeTokenFile(join(scratch, `token-${directoryCount}`), token);
  };

  const configFor = (tokenFile: string, overrides: Partial<AwsWebIdentityConfig> = {}): AwsWebIdentityConfig => ({
    roleArn: minio.roleArn,
    tokenFile,
    region: minio.region,
    stsEndpoint: minio.endpoint,
    sessionName: 'aws-web-identity-test',
    expectedAudience: minio.audience,
    ...overrides,
  });

  const sourceFor = (config: AwsWebIdentityConfig): CredentialRefresher<AwsCredentials> => {
    const source = createAwsWebIdentityCredentialSource(config, { logger, minInvalidateIntervalMs: 0 });
    sources.push(source);
    return source;
  };

  /** Starts a source that must fail and returns its error after checking that it hides the token. */
  const startFailure = async (config: AwsWebIdentityConfig, token?: string): Promise<CredentialError> => {
    const source = sourceFor(config);
    const error = await source.start().then(
      () => undefined,
      (failure: unknown) => failure,
    );
    source.stop();
    expect(error).toBeInstanceOf(CredentialError);
    if (token !== undefined) {
      expect((error as CredentialError).message).not.toContain(token);
      expect((error as CredentialError).explanation).not.toContain(token);
      expect(logText.join('')).not.toContain(token);
    }
    return error as CredentialError;
  };

  it('good token gives working credentials', async () => {
    const token = await issuer.mintToken({ audience: minio.audience, expiresInSeconds: 600 });
    const source = sourceFor(configFor(await tokenFileWith(token)));
    await source.start();

    let providerCalls = 0;
    const counted = awsCredentialProvider({
      ...source,
      start: () => source.start(),
      current: (signal) => {
        providerCalls += 1;
        return source.current(signal);
      },
      invalidate: (reason) => source.invalidate(reason),
      state: () => source.state(),
      stop: () => source.stop(),
    });
    const client = new S3Client({
      endpoint: minio.endpoint,
      region: minio.region,
      forcePathStyle: true,
      maxAttempts: 1,
      credentials: counted,
    });
    try {
      const callsPerRequest: number[] = [];
      await client.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'hello.txt', Body: 'hello' }));
      callsPerRequest.push(providerCalls);
      const response = await client.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'hello.txt' }));
      callsPerRequest.push(providerCalls);
      const body = await response.Body?.transformToString();
      await client.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'hello.txt' }));
      callsPerRequest.push(providerCalls);

      expect(body).toBe('hello');
      // The SDK must ask the provider at every request instead of caching the
      // credentials itself; otherwise invalidate() would not reach it.
      expect(callsPerRequest[0]).toBeGreaterThan(0);
      expect(callsPerRequest[1]).toBeGreaterThan(callsPerRequest[0] ?? 0);
      expect(callsPerRequest[2]).toBeGreaterThan(callsPerRequest[1] ?? 0);
    } finally {
      client.destroy();
    }

    expect((await source.current()).expiration.getTime()).toBe((decodeTokenClaims(token)?.expiresAt ?? new Date(0)).getTime());
    expect(logText.join('')).not.toContain(token);
    source.stop();
  });

  it('STS outage keeps valid credentials serving', async () => {
    const outageIssuer = await startOidcIssuer();
    const outageMinio = await startMinio({ issuer: outageIssuer });
    const token = await outageIssuer.mintToken({ audience: outageMinio.audience });
    const source = sourceFor({
      ...configFor(await tokenFileWith(token)),
      roleArn: outageMinio.roleArn,
      stsEndpoint: outageMinio.endpoint,
    });
    try {
      await source.start();
      const before = await source.current();
      await outageMinio.stop();

      const failure = await source.invalidate('simulated rejection').catch((error: unknown) => error);
      const during = await source.current();

      expect(failure).toBeInstanceOf(StsExchangeError);
      expect(failure).toMatchObject({ code: 'EndpointUnreachable', step: 'sts', retryable: true });
      expect((failure as CredentialError).message).toContain(`cannot reach the STS endpoint ${outageMinio.endpoint}`);
      expect(during).toBe(before);
      expect(source.state()).toMatchObject({ consecutiveFailures: 1, lastFailedStep: 'sts' });
    } finally {
      source.stop();
      await outageMinio.stop();
      await outageIssuer.stop();
    }
  });

  it('token file rotation is picked up', async () => {
    const goodToken = await issuer.mintToken({ audience: minio.audience });
    const tokenFile = await tokenFileWith(goodToken);
    const directory = join(tokenFile, '..');
    const source = sourceFor(configFor(tokenFile));
    await source.start();
    const first = await source.current();

    await writeTokenFile(directory, await issuer.mintToken({ audience: 'rotated-to-wrong-audience' }));
    const rejected = await source.invalidate('rotation test').catch((error: unknown) => error);
    await writeTokenFile(directory, await issuer.mintToken({ audience: minio.audience }));
    const renewed = await source.invalidate('rotation test');

    expect(rejected).toMatchObject({ code: 'AudienceMismatch' });
    expect(renewed.accessKeyId).not.toBe(first.accessKeyId);
    source.stop();
  });

  it('wrong audience explains the fix', async () => {
    const token = await issuer.mintToken({ audience: 'sts.amazonaws.com' });
    const error = await startFailure(configFor(await tokenFileWith(token)), token);

    expect(error).toBeInstanceOf(StsExchangeError);
    expect(error).toMatchObject({ code: 'AudienceMismatch', step: 'sts', serviceCode: 'InvalidParameterValue', httpStatus: 400 });
    expect(error.explanation).toContain(`set the audience of the projected token to ${minio.audience}`);
    expect(error.explanation).toContain('audience "sts.amazonaws.com"');
  });

  it('expired token names its expiry', async () => {
    const token = await issuer.mintToken({
      audience: minio.audience,
      issuedAt: new Date(Date.now() - 7_200_000),
      expiresInSeconds: 600,
    });
    const expiresAt = decodeTokenClaims(token)?.expiresAt?.toISOString() ?? 'missing';
    const error = await startFailure(configFor(await tokenFileWith(token)), token);

    expect(error).toMatchObject({ code: 'TokenExpired', step: 'sts' });
    expect(error.explanation).toContain(`expired at ${expiresAt}`);
  });

  it('unpublished signing key is explained', async () => {
    const token = await issuer.mintToken({ audience: minio.audience, unpublishedKey: true });
    const error = await startFailure(configFor(await tokenFileWith(token)), token);

    expect(error).toMatchObject({ code: 'UnknownSigningKey', step: 'sts' });
  });

  it('wrong role ARN is explained', async () => {
    const token = await issuer.mintToken({ audience: minio.audience });
    const roleArn = 'arn:minio:iam:us-east-1::role/does-not-exist';
    const error = await startFailure(configFor(await tokenFileWith(token), { roleArn }), token);

    expect(error).toMatchObject({ code: 'RoleNotFound', step: 'sts' });
    expect(error.explanation).toContain(roleArn);
  });

  it('missing token file names path', async () => {
    const path = join(scratch, 'no-such-directory', 'token');
    const error = await startFailure(configFor(path));

    expect(error).toBeInstanceOf(TokenFileError);
    expect(error).toMatchObject({ code: 'TokenFileMissing', step: 'token-file', path });
    expect(error.message).toContain(path);
  });

  it('revoked access fails S3 but not STS', async () => {
    const token = await issuer.mintToken({ audience: minio.audience });
    const source = sourceFor(configFor(await tokenFileWith(token)));
    await source.start();
    const client = new S3Client({
      endpoint: minio.endpoint,
      region: minio.region,
      forcePathStyle: true,
      maxAttempts: 1,
      credentials: awsCredentialProvider(source),
    });
    try {
      await minio.revokeRoleAccess();
      await expect(client.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'revoked', Body: 'x' }))).rejects.toMatchObject({
        name: 'AccessDenied',
      });
      await expect(source.invalidate('AccessDenied from S3')).resolves.toMatchObject({ accessKeyId: expect.any(String) });
    } finally {
      await minio.restoreRoleAccess();
      client.destroy();
      source.stop();
    }
  });
});

describe('explainStsFailure', () => {
  const token = 'header.eyJhdWQiOiJzdHMuYW1hem9uYXdzLmNvbSIsImV4cCI6NDEwMjQ0NDgwMCwiaXNzIjoiaHR0cHM6Ly9vaWRjLmV4YW1wbGUifQ.signature';
  const context = {
    config: {
      roleArn: 'arn:aws:iam::111122223333:role/reader',
      tokenFile: '/var/run/secrets/token',
      region: 'us-east-1',
      expectedAudience: 'sts.amazonaws.com',
    },
    endpoint: 'https://sts.us-east-1.amazonaws.com',
    token: { token, path: '/var/run/secrets/token', claims: decodeTokenClaims(token) ?? { audience: [] } },
    now: new Date('2026-01-01T00:00:00Z'),
  };
  const metadata = { httpStatusCode: 400 };

  it('maps ExpiredTokenException', () => {
    const error = explainStsFailure(new ExpiredTokenException({ message: 'Token expired', $metadata: metadata }), context);

    expect(error).toMatchObject({ code: 'TokenExpired', serviceCode: 'ExpiredTokenException' });
  });

  it('maps InvalidIdentityToken with wrong audience', () => {
    const mismatched = { ...context, config: { ...context.config, expectedAudience: 'other-audience' } };
    const error = explainStsFailure(
      new InvalidIdentityTokenException({ message: 'Incorrect token audience', $metadata: metadata }),
      mismatched,
    );

    expect(error.code).toBe('AudienceMismatch');
    expect(error.explanation).toContain('set the audience of the projected token to other-audience');
  });

  it('maps InvalidIdentityToken with right audience', () => {
    const error = explainStsFailure(
      new InvalidIdentityTokenException({ message: 'No OpenIDConnect provider found', $metadata: metadata }),
      context,
    );

    expect(error.code).toBe('TokenRejected');
    expect(error.message).toContain('No OpenIDConnect provider found');
  });

  it('maps AccessDenied to role trust', () => {
    const error = explainStsFailure(
      new STSServiceException({
        name: 'AccessDenied',
        $fault: 'client',
        message: 'Not authorized to perform sts:AssumeRoleWithWebIdentity',
        $metadata: { httpStatusCode: 403 },
      }),
      context,
    );

    expect(error.code).toBe('AccessDenied');
    expect(error.explanation).toContain('arn:aws:iam::111122223333:role/reader');
  });

  it('maps IDPCommunicationError as retryable', () => {
    const error = explainStsFailure(
      new IDPCommunicationErrorException({ message: 'could not fetch keys', $metadata: metadata }),
      context,
    );

    expect(error).toMatchObject({ code: 'ServiceUnavailable', retryable: true });
  });

  it('maps unknown host', () => {
    const lookupFailure = Object.assign(new Error('getaddrinfo ENOTFOUND sts.example.invalid'), { code: 'ENOTFOUND' });
    const error = explainStsFailure(lookupFailure, context);

    expect(error).toMatchObject({ code: 'EndpointUnknownHost', retryable: true });
    expect(error.message).toContain('cannot reach the STS endpoint https://sts.us-east-1.amazonaws.com');
  });

  it('redacts token echoed by server', () => {
    const error = explainStsFailure(
      new STSServiceException({ name: 'Weird', $fault: 'client', message: `bad token ${token}`, $metadata: metadata }),
      context,
    );

    expect(error.message).not.toContain(token);
  });
});

describe('AWS web identity configuration', () => {
  it('reads standard environment variables', () => {
    const environment = readAwsWebIdentityEnvironment({
      AWS_ROLE_ARN: 'arn:aws:iam::111122223333:role/reader',
      AWS_WEB_IDENTITY_TOKEN_FILE: '/var/run/secrets/eks.amazonaws.com/serviceaccount/token',
      AWS_ROLE_SESSION_NAME: ' ',
      AWS_DEFAULT_REGION: 'eu-west-1',
    });

    expect(environment).toEqual({
      roleArn: 'arn:aws:iam::111122223333:role/reader',
      tokenFile: '/var/run/secrets/eks.amazonaws.com/serviceaccount/token',
      sessionName: undefined,
      region: 'eu-west-1',
    });
  });

  it('default session name fits STS rules', () => {
    const name = defaultSessionName(`pod:${'x'.repeat(80)}`);

    expect(name).toMatch(/^bucketmount-pod-x+$/);
    expect(name.length).toBe(64);
  });
});

describe('token file errors', () => {
  let scratch: string;

  beforeAll(async () => {
    scratch = await mkdtemp(join(tmpdir(), 'bucketmount-token-file-'));
  });

  afterAll(async () => {
    await rm(scratch, { recursive: true, force: true });
  });

  const failureFor = async (content: string): Promise<CredentialError> => {
    const path = join(scratch, `token-${Math.random().toString(16).slice(2)}`);
    await writeFile(path, content);
    const source = createAwsWebIdentityCredentialSource(
      { roleArn: 'arn:minio:iam:us-east-1::role/unused', tokenFile: path, region: 'us-east-1', stsEndpoint: 'http://127.0.0.1:9' },
      { logger },
    );
    const error = await source.start().catch((failure: unknown) => failure);
    source.stop();
    expect((error as CredentialError).message).toContain(path);
    return error as CredentialError;
  };

  it('empty file', async () => {
    expect(await failureFor('  \n')).toMatchObject({ code: 'TokenFileEmpty', step: 'token-file' });
  });

  it('not a JWT', async () => {
    const error = await failureFor('this is not a token');

    expect(error).toMatchObject({ code: 'TokenFileMalformed', step: 'token-file' });
    expect(error.message).not.toContain('this is not a token');
  });

  it('directory instead of file', async () => {
    const source = createAwsWebIdentityCredentialSource(
      { roleArn: 'arn:minio:iam:us-east-1::role/unused', tokenFile: scratch, region: 'us-east-1', stsEndpoint: 'http://127.0.0.1:9' },
      { logger },
    );
    const error = await source.start().catch((failure: unknown) => failure);
    source.stop();

    expect(error).toMatchObject({ code: 'TokenFileUnreadable', step: 'token-file' });
  });
});
