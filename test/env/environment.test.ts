import { lstat, mkdtemp, readdir, readFile, readlink, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { AssumeRoleWithWebIdentityCommand, STSClient, type Credentials } from '@aws-sdk/client-sts';
import { createLocalJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify, type JSONWebKeySet } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { startMinio, type MinioServer } from './minio.js';
import { DEFAULT_SUBJECT, startOidcIssuer, writeTokenFile, type OidcIssuer } from './oidc-issuer.js';

const TIMESTAMP_DIRECTORY = /^\.\.\d{4}_\d{2}_\d{2}_\d{2}_\d{2}_\d{2}\.\w+$/;

async function fetchJwks(issuer: OidcIssuer): Promise<JSONWebKeySet> {
  const response = await fetch(issuer.jwksUrl);
  expect(response.status).toBe(200);
  return (await response.json()) as JSONWebKeySet;
}

describe('OIDC issuer', () => {
  let issuer: OidcIssuer;
  let scratch: string;

  beforeAll(async () => {
    issuer = await startOidcIssuer();
    scratch = await mkdtemp(join(tmpdir(), 'bucketmount-issuer-test-'));
  });

  afterAll(async () => {
    await issuer.stop();
    await rm(scratch, { recursive: true, force: true });
  });

  it('serves discovery document', async () => {
    const response = await fetch(issuer.discoveryUrl);
    const document = (await response.json()) as Record<string, unknown>;

    expect(response.status).toBe(200);
    expect(document.issuer).toBe(issuer.issuerUrl);
    expect(document.jwks_uri).toBe(issuer.jwksUrl);
    expect(document.id_token_signing_alg_values_supported).toEqual(['RS256']);
  });

  it('mints tokens that verify against JWKS', async () => {
    const token = await issuer.mintToken({ audience: 'sts.example' });
    const { payload, protectedHeader } = await jwtVerify(token, createLocalJWKSet(await fetchJwks(issuer)), {
      issuer: issuer.issuerUrl,
      audience: 'sts.example',
    });

    expect(protectedHeader.alg).toBe('RS256');
    expect(protectedHeader.kid).toBe(issuer.currentKeyId());
    expect(payload.sub).toBe(DEFAULT_SUBJECT);
    expect(payload['kubernetes.io']).toMatchObject({ namespace: 'sandbox', serviceaccount: { name: 'bucketmount' } });
    expect((payload.exp ?? 0) - (payload.iat ?? 0)).toBe(3600);
  });

  it('mints expired and foreign-issuer tokens', async () => {
    const expired = decodeJwt(
      await issuer.mintToken({ audience: 'a', issuedAt: new Date(Date.now() - 7_200_000), expiresInSeconds: 60 }),
    );
    const foreign = decodeJwt(await issuer.mintToken({ audience: 'a', issuer: 'https://issuer.invalid' }));

    expect((expired.exp ?? Infinity) * 1000).toBeLessThan(Date.now());
    expect(foreign.iss).toBe('https://issuer.invalid');
  });

  it('tokenIssuer option changes iss claim', async () => {
    const other = await startOidcIssuer({ tokenIssuer: 'https://untrusted.invalid' });
    try {
      const payload = decodeJwt(await other.mintToken({ audience: 'a' }));
      const document = (await (await fetch(other.discoveryUrl)).json()) as Record<string, unknown>;

      expect(payload.iss).toBe('https://untrusted.invalid');
      expect(document.issuer).toBe(other.issuerUrl);
    } finally {
      await other.stop();
    }
  });

  it('unpublished key is absent from JWKS', async () => {
    const token = await issuer.mintToken({ audience: 'a', unpublishedKey: true });
    const keyIds = (await fetchJwks(issuer)).keys.map((key) => key.kid);

    expect(keyIds).not.toContain(decodeProtectedHeader(token).kid);
  });

  it('rotation keeps or drops old key', async () => {
    const rotating = await startOidcIssuer();
    try {
      const firstKeyId = rotating.currentKeyId();

      await rotating.rotateSigningKey();
      const secondKeyId = rotating.currentKeyId();
      const afterKeepingOld = (await fetchJwks(rotating)).keys.map((key) => key.kid);

      await rotating.rotateSigningKey({ keepOld: false });
      const thirdKeyId = rotating.currentKeyId();
      const afterDroppingOld = (await fetchJwks(rotating)).keys.map((key) => key.kid);
      const newToken = await rotating.mintToken({ audience: 'a' });

      expect(secondKeyId).not.toBe(firstKeyId);
      expect(afterKeepingOld).toEqual([firstKeyId, secondKeyId]);
      expect(afterDroppingOld).toEqual([thirdKeyId]);
      expect(decodeProtectedHeader(newToken).kid).toBe(thirdKeyId);
    } finally {
      await rotating.stop();
    }
  });

  it('token file has kubelet layout', async () => {
    const directory = join(scratch, 'layout');
    const tokenPath = await writeTokenFile(directory, 'first-token');

    const tokenLink = await readlink(tokenPath);
    const dataLink = await readlink(join(directory, '..data'));
    const entries = await readdir(directory);

    expect(tokenPath).toBe(join(directory, 'token'));
    expect(tokenLink).toBe(join('..data', 'token'));
    expect(dataLink).toMatch(TIMESTAMP_DIRECTORY);
    expect((await lstat(join(directory, dataLink))).isDirectory()).toBe(true);
    expect(await readFile(tokenPath, 'utf8')).toBe('first-token');
    expect(entries.sort()).toEqual(['..data', dataLink, 'token'].sort());
  });

  it('token file rewrite swaps payload', async () => {
    const directory = join(scratch, 'rewrite');
    const tokenPath = await writeTokenFile(directory, 'first-token');
    const firstPayload = await readlink(join(directory, '..data'));

    await writeTokenFile(directory, 'second-token');
    const secondPayload = await readlink(join(directory, '..data'));
    const entries = await readdir(directory);

    expect(secondPayload).not.toBe(firstPayload);
    expect(await readFile(tokenPath, 'utf8')).toBe('second-token');
    expect(entries).not.toContain(firstPayload);
    expect(entries).not.toContain('..data_tmp');
    expect(entries.filter((entry) => TIMESTAMP_DIRECTORY.test(entry))).toEqual([secondPayload]);
  });
});

describe('MinIO launcher', () => {
  let issuer: OidcIssuer;
  let minio: MinioServer;
  let sts: STSClient;

  beforeAll(async () => {
    issuer = await startOidcIssuer();
    minio = await startMinio({ issuer, audience: 'launcher-test' });
    sts = new STSClient({ endpoint: minio.endpoint, region: minio.region, maxAttempts: 1 });
  });

  afterAll(async () => {
    sts?.destroy();
    await minio?.stop();
    await issuer?.stop();
  });

  const assumeRole = async (token: string): Promise<Credentials> => {
    const response = await sts.send(
      new AssumeRoleWithWebIdentityCommand({ RoleArn: minio.roleArn, RoleSessionName: 'environment-test', WebIdentityToken: token }),
    );
    if (response.Credentials === undefined) {
      throw new Error('AssumeRoleWithWebIdentity returned no credentials');
    }
    return response.Credentials;
  };

  const clientFor = (credentials: Credentials): S3Client =>
    new S3Client({
      endpoint: minio.endpoint,
      region: minio.region,
      forcePathStyle: true,
      maxAttempts: 1,
      credentials: {
        accessKeyId: credentials.AccessKeyId ?? '',
        secretAccessKey: credentials.SecretAccessKey ?? '',
        sessionToken: credentials.SessionToken ?? '',
      },
    });

  it('web identity gets read and write', async () => {
    await minio.createBucket('test-environment');
    const credentials = await assumeRole(await issuer.mintToken({ audience: minio.audience }));
    const client = clientFor(credentials);
    try {
      await client.send(new PutObjectCommand({ Bucket: 'test-environment', Key: 'greeting.txt', Body: 'hello' }));
      const response = await client.send(new GetObjectCommand({ Bucket: 'test-environment', Key: 'greeting.txt' }));

      expect(await response.Body?.transformToString()).toBe('hello');
    } finally {
      client.destroy();
    }
  });

  it('credentials expire with token', async () => {
    const token = await issuer.mintToken({ audience: minio.audience, expiresInSeconds: 300 });
    const credentials = await assumeRole(token);

    expect(credentials.Expiration?.getTime()).toBe((decodeJwt(token).exp ?? 0) * 1000);
  });

  it('rejects wrong audience', async () => {
    const token = await issuer.mintToken({ audience: 'some-other-audience' });

    await expect(assumeRole(token)).rejects.toMatchObject({ name: 'InvalidParameterValue', $metadata: { httpStatusCode: 400 } });
  });

  it('rejects expired token', async () => {
    const token = await issuer.mintToken({
      audience: minio.audience,
      issuedAt: new Date(Date.now() - 7_200_000),
      expiresInSeconds: 60,
    });

    await expect(assumeRole(token)).rejects.toMatchObject({ name: 'InvalidParameterValue' });
  });

  it('rejects unpublished signing key', async () => {
    const token = await issuer.mintToken({ audience: minio.audience, unpublishedKey: true });

    await expect(assumeRole(token)).rejects.toMatchObject({ name: 'InvalidParameterValue' });
  });

  it('ignores iss claim', async () => {
    // MinIO does not check `iss`, so untrusted-issuer tests need a verifier that does.
    const token = await issuer.mintToken({ audience: minio.audience, issuer: 'https://untrusted.invalid' });

    await expect(assumeRole(token)).resolves.toMatchObject({ AccessKeyId: expect.any(String) });
  });

  it('rejects duration under 900 seconds', async () => {
    const token = await issuer.mintToken({ audience: minio.audience });
    const request = new AssumeRoleWithWebIdentityCommand({
      RoleArn: minio.roleArn,
      RoleSessionName: 'environment-test',
      WebIdentityToken: token,
      DurationSeconds: 60,
    });

    await expect(sts.send(request)).rejects.toMatchObject({ name: 'InvalidParameterValue' });
  });

  it('revoke and restore role access', async () => {
    await minio.createBucket('test-revocation');
    const client = clientFor(await assumeRole(await issuer.mintToken({ audience: minio.audience })));
    const put = () => client.send(new PutObjectCommand({ Bucket: 'test-revocation', Key: 'k', Body: 'v' }));
    try {
      await minio.revokeRoleAccess();
      await expect(put()).rejects.toMatchObject({ name: 'AccessDenied', $metadata: { httpStatusCode: 403 } });

      await minio.restoreRoleAccess();
      await expect(put()).resolves.toBeDefined();
    } finally {
      await minio.restoreRoleAccess();
      client.destroy();
    }
  });

  it('policy excludes other buckets', async () => {
    await minio.createBucket('private-data');
    const client = clientFor(await assumeRole(await issuer.mintToken({ audience: minio.audience })));
    try {
      await expect(
        client.send(new PutObjectCommand({ Bucket: 'private-data', Key: 'k', Body: 'v' })),
      ).rejects.toMatchObject({ name: 'AccessDenied' });
    } finally {
      client.destroy();
    }
  });
});
