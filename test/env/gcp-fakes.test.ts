/**
 * Tests of the GCP test doubles: the STS and IAM Credentials fakes check
 * tokens the way GCP does and respond in its formats, and the proxy in front
 * of fake-gcs-server authorizes per bucket and streams large bodies.
 */

import { createHash, randomBytes } from 'node:crypto';

import { decodeJwt } from 'jose';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';

import { startFakeGcs, type FakeGcsServer } from './fake-gcs.js';
import { startGcpFakes, type GcpFakes } from './gcp-fakes.js';
import { bucketAccessOf, startGcsAuthProxy, type GcsAuthProxy } from './gcs-auth-proxy.js';
import { DEFAULT_SUBJECT, startOidcIssuer, type OidcIssuer } from './oidc-issuer.js';

const SERVICE_ACCOUNT = 'reader@customer-project.iam.gserviceaccount.com';
const SCOPE = 'https://www.googleapis.com/auth/cloud-platform';

let issuer: OidcIssuer;
let fakes: GcpFakes;
let clock = new Date();

beforeAll(async () => {
  issuer = await startOidcIssuer();
  fakes = await startGcpFakes({ issuer, serviceAccounts: [SERVICE_ACCOUNT], now: () => clock });
});

afterAll(async () => {
  await fakes?.stop();
  await issuer?.stop();
});

beforeEach(() => {
  clock = new Date();
  fakes.setStsAvailability('up');
  fakes.setIamAvailability('up');
  fakes.setTrustedIssuer(issuer.issuerUrl);
  fakes.setAllowedAudiences([]);
  fakes.removeBinding({ serviceAccount: SERVICE_ACCOUNT, member: fakes.principalSetForPool() });
  fakes.removeBinding({ serviceAccount: SERVICE_ACCOUNT, member: fakes.principalForSubject(DEFAULT_SUBJECT) });
});

async function exchange(subjectToken: string, audience = fakes.audience): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await fetch(fakes.stsTokenUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      audience,
      scope: SCOPE,
      requested_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      subject_token: subjectToken,
      subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
    }),
  });
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

async function generate(federatedToken: string | undefined, lifetime = '3600s'): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await fetch(fakes.impersonationUrl(SERVICE_ACCOUNT), {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(federatedToken === undefined ? {} : { authorization: `Bearer ${federatedToken}` }) },
    body: JSON.stringify({ scope: [SCOPE], lifetime }),
  });
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

async function federatedToken(): Promise<string> {
  const result = await exchange(await issuer.mintToken({ audience: fakes.audience }));
  expect(result.status).toBe(200);
  return result.body.access_token as string;
}

describe('STS fake', () => {
  it('exchanges a valid token', async () => {
    const subjectToken = await issuer.mintToken({ audience: fakes.audience });
    const result = await exchange(subjectToken);

    expect(result.status).toBe(200);
    expect(result.body.token_type).toBe('Bearer');
    expect(result.body.issued_token_type).toBe('urn:ietf:params:oauth:token-type:access_token');
    expect(result.body.expires_in).toBeGreaterThan(3000);
    const record = fakes.exchanges().at(-1)!;
    expect(record.outcome).toBe('ok');
    expect(record.subject).toBe(DEFAULT_SUBJECT);
    expect(record.tokenId).toBe(decodeJwt(subjectToken).jti);
  });

  it('accepts the https form of the provider audience', async () => {
    const result = await exchange(await issuer.mintToken({ audience: `https://iam.googleapis.com/${fakes.providerName}` }));
    expect(result.status).toBe(200);
  });

  it('rejects a wrong audience', async () => {
    const result = await exchange(await issuer.mintToken({ audience: 'sts.amazonaws.com' }));

    expect(result.status).toBe(400);
    expect(result.body).toEqual({
      error: 'invalid_grant',
      error_description: 'The audience in ID Token [sts.amazonaws.com] does not match the expected audience.',
    });
  });

  it('honours allowed audiences', async () => {
    fakes.setAllowedAudiences(['kubernetes-sandbox']);

    expect((await exchange(await issuer.mintToken({ audience: 'kubernetes-sandbox' }))).status).toBe(200);
    expect((await exchange(await issuer.mintToken({ audience: fakes.audience }))).status).toBe(400);
  });

  it('rejects an untrusted issuer', async () => {
    fakes.setTrustedIssuer('https://container.googleapis.com/v1/projects/other/locations/x/clusters/y');
    const result = await exchange(await issuer.mintToken({ audience: fakes.audience }));

    expect(result.status).toBe(400);
    expect(result.body.error).toBe('invalid_grant');
    expect(result.body.error_description).toBe(
      `The issuer in ID Token ${issuer.issuerUrl} does not match the expected ones: https://container.googleapis.com/v1/projects/other/locations/x/clusters/y`,
    );
  });

  it('rejects a signature from an unpublished key', async () => {
    const result = await exchange(await issuer.mintToken({ audience: fakes.audience, unpublishedKey: true }));

    expect(result.status).toBe(400);
    expect(result.body.error).toBe('invalid_grant');
  });

  it('rejects an expired token', async () => {
    const token = await issuer.mintToken({ audience: fakes.audience, issuedAt: new Date(Date.now() - 7200_000), expiresInSeconds: 600 });
    const result = await exchange(token);

    expect(result.status).toBe(400);
    expect(result.body.error).toBe('invalid_grant');
    expect(fakes.exchanges().at(-1)!.outcome).toBe('invalid_grant');
  });

  it('rejects a malformed or unknown provider audience', async () => {
    const token = await issuer.mintToken({ audience: fakes.audience });

    const malformed = await exchange(token, 'projects/1/providers/x');
    expect(malformed.status).toBe(400);
    expect(malformed.body.error).toBe('invalid_request');

    const unknown = await exchange(token, fakes.audience.replace(/providers\/.*$/, 'providers/other-provider'));
    expect(unknown.status).toBe(400);
    expect(unknown.body.error).toBe('invalid_target');
  });

  it('goes down and comes back', async () => {
    const token = await issuer.mintToken({ audience: fakes.audience });

    fakes.setStsAvailability('unavailable');
    expect((await exchange(token)).status).toBe(503);

    fakes.setStsAvailability('reset');
    await expect(exchange(token)).rejects.toThrow();

    fakes.setStsAvailability('up');
    expect((await exchange(token)).status).toBe(200);
  });
});

describe('IAM Credentials fake', () => {
  it('requires a federated bearer token', async () => {
    const missing = await generate(undefined);
    expect(missing.status).toBe(401);
    expect((missing.body.error as Record<string, unknown>).status).toBe('UNAUTHENTICATED');

    const forged = await generate('fed.forged');
    expect(forged.status).toBe(401);
  });

  it('denies without a workloadIdentityUser binding', async () => {
    const result = await generate(await federatedToken());

    expect(result.status).toBe(403);
    expect(result.body).toEqual({
      error: {
        code: 403,
        message: "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).",
        status: 'PERMISSION_DENIED',
        details: [
          {
            '@type': 'type.googleapis.com/google.rpc.ErrorInfo',
            reason: 'IAM_PERMISSION_DENIED',
            domain: 'iam.googleapis.com',
            metadata: { permission: 'iam.serviceAccounts.getAccessToken' },
          },
        ],
      },
    });
  });

  it('grants to a bound principal or principalSet', async () => {
    const federated = await federatedToken();

    fakes.addBinding({ serviceAccount: SERVICE_ACCOUNT, member: fakes.principalForSubject(DEFAULT_SUBJECT) });
    expect((await generate(federated)).status).toBe(200);

    fakes.removeBinding({ serviceAccount: SERVICE_ACCOUNT, member: fakes.principalForSubject(DEFAULT_SUBJECT) });
    expect((await generate(federated)).status).toBe(403);

    fakes.addBinding({ serviceAccount: SERVICE_ACCOUNT, member: fakes.principalSetForPool() });
    expect((await generate(federated)).status).toBe(200);
  });

  it('honours lifetime and records the token', async () => {
    fakes.addBinding({ serviceAccount: SERVICE_ACCOUNT, member: fakes.principalSetForPool() });
    const result = await generate(await federatedToken(), '60s');

    expect(result.status).toBe(200);
    const expireTime = new Date(result.body.expireTime as string);
    expect(Math.abs(expireTime.getTime() - (clock.getTime() + 60_000))).toBeLessThan(1000);
    expect(result.body.expireTime).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/);

    const minted = fakes.lookupAccessToken(result.body.accessToken as string);
    expect(minted?.serviceAccount).toBe(SERVICE_ACCOUNT);
    expect(minted?.scopes).toEqual([SCOPE]);

    clock = new Date(clock.getTime() + 61_000);
    expect(fakes.lookupAccessToken(result.body.accessToken as string)).toBeUndefined();
  });

  it('rejects a lifetime over the maximum', async () => {
    fakes.addBinding({ serviceAccount: SERVICE_ACCOUNT, member: fakes.principalSetForPool() });
    const result = await generate(await federatedToken(), '7200s');

    expect(result.status).toBe(400);
    expect((result.body.error as Record<string, unknown>).status).toBe('INVALID_ARGUMENT');
  });

  it('goes down and comes back', async () => {
    fakes.addBinding({ serviceAccount: SERVICE_ACCOUNT, member: fakes.principalSetForPool() });
    const federated = await federatedToken();

    fakes.setIamAvailability('unavailable');
    expect((await generate(federated)).status).toBe(503);
    fakes.setIamAvailability('up');
    expect((await generate(federated)).status).toBe(200);
  });
});

describe('GCS auth proxy', () => {
  let gcs: FakeGcsServer;
  let proxy: GcsAuthProxy;
  let accessToken: string;
  const bucket = 'proxy-test-bucket';

  beforeAll(async () => {
    gcs = await startFakeGcs();
    proxy = await startGcsAuthProxy({ upstream: gcs.endpoint, fakes });
    await gcs.createBucket(bucket);
  });

  afterAll(async () => {
    await proxy?.stop();
    await gcs?.stop();
  });

  beforeEach(async () => {
    fakes.addBinding({ serviceAccount: SERVICE_ACCOUNT, member: fakes.principalSetForPool() });
    const minted = await generate(await federatedToken());
    accessToken = minted.body.accessToken as string;
    fakes.revokeBucket({ serviceAccount: SERVICE_ACCOUNT, bucket, role: 'roles/storage.objectViewer' });
    fakes.grantBucket({ serviceAccount: SERVICE_ACCOUNT, bucket, role: 'roles/storage.objectAdmin' });
  });

  const upload = (name: string, body: Buffer, token: string | undefined): Promise<Response> =>
    fetch(`${proxy.endpoint}/upload/storage/v1/b/${bucket}/o?uploadType=media&name=${encodeURIComponent(name)}`, {
      method: 'POST',
      headers: { 'content-type': 'application/octet-stream', ...(token === undefined ? {} : { authorization: `Bearer ${token}` }) },
      body,
    });

  it('rejects requests without a valid token', async () => {
    const missing = await fetch(`${proxy.endpoint}/storage/v1/b/${bucket}/o`);
    expect(missing.status).toBe(401);
    const body = (await missing.json()) as { error: { code: number; errors: Array<{ reason: string }> } };
    expect(body.error.code).toBe(401);
    expect(body.error.errors[0]!.reason).toBe('authError');

    const forged = await fetch(`${proxy.endpoint}/storage/v1/b/${bucket}/o`, { headers: { authorization: 'Bearer ya29.forged' } });
    expect(forged.status).toBe(401);
    await forged.arrayBuffer();
  });

  it('rejects an expired token', async () => {
    clock = new Date(clock.getTime() + 3601_000);
    const response = await fetch(`${proxy.endpoint}/storage/v1/b/${bucket}/o`, { headers: { authorization: `Bearer ${accessToken}` } });
    expect(response.status).toBe(401);
    await response.arrayBuffer();
  });

  it('authorizes reads and writes per bucket', async () => {
    const written = await upload('per-bucket', Buffer.from('x'), accessToken);
    expect(written.status).toBe(200);
    await written.arrayBuffer();

    fakes.revokeBucket({ serviceAccount: SERVICE_ACCOUNT, bucket, role: 'roles/storage.objectAdmin' });
    fakes.grantBucket({ serviceAccount: SERVICE_ACCOUNT, bucket, role: 'roles/storage.objectViewer' });

    const read = await fetch(`${proxy.endpoint}/storage/v1/b/${bucket}/o/per-bucket?alt=media`, { headers: { authorization: `Bearer ${accessToken}` } });
    expect(read.status).toBe(200);
    expect(await read.text()).toBe('x');

    const denied = await upload('per-bucket', Buffer.from('y'), accessToken);
    expect(denied.status).toBe(403);
    const body = (await denied.json()) as { error: { errors: Array<{ reason: string }> } };
    expect(body.error.errors[0]!.reason).toBe('forbidden');

    await gcs.createBucket('another-bucket');
    const otherBucket = await fetch(`${proxy.endpoint}/storage/v1/b/another-bucket/o`, { headers: { authorization: `Bearer ${accessToken}` } });
    expect(otherBucket.status).toBe(403);
    await otherBucket.arrayBuffer();

    // As on GCS, a bucket that does not exist is 404 whatever the caller may access.
    const missingBucket = await fetch(`${proxy.endpoint}/storage/v1/b/no-such-bucket/o`, { headers: { authorization: `Bearer ${accessToken}` } });
    expect(missingBucket.status).toBe(404);
    await missingBucket.arrayBuffer();
  });

  it('streams a large body both ways', async () => {
    const body = randomBytes(48 * 1024 * 1024);
    const written = await upload('large', body, accessToken);
    expect(written.status).toBe(200);
    await written.arrayBuffer();

    const read = await fetch(`${proxy.endpoint}/download/storage/v1/b/${bucket}/o/large?alt=media`, { headers: { authorization: `Bearer ${accessToken}` } });
    expect(read.status).toBe(200);
    const received = Buffer.from(await read.arrayBuffer());
    expect(received.length).toBe(body.length);
    expect(createHash('sha256').update(received).digest('hex')).toBe(createHash('sha256').update(body).digest('hex'));
  });

  it('bucketAccessOf reads buckets from paths', () => {
    expect(bucketAccessOf('GET', '/storage/v1/b/data/o')).toEqual([{ bucket: 'data', write: false }]);
    expect(bucketAccessOf('POST', '/upload/storage/v1/b/data/o')).toEqual([{ bucket: 'data', write: true }]);
    expect(bucketAccessOf('GET', '/download/storage/v1/b/data/o/a%2Fb')).toEqual([{ bucket: 'data', write: false }]);
    expect(bucketAccessOf('POST', '/storage/v1/b/src/o/a%2Fb/rewriteTo/b/dst/o/c')).toEqual([
      { bucket: 'src', write: false },
      { bucket: 'dst', write: true },
    ]);
    expect(bucketAccessOf('GET', '/storage/v1/b')).toBeUndefined();
    expect(bucketAccessOf('POST', '/batch/storage/v1')).toBeUndefined();
  });
});
