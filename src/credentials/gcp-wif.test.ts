/**
 * GCP Workload Identity Federation credentials against the test OIDC issuer
 * and the STS and IAM Credentials fakes: configuration building and
 * validation, a successful exchange through google-auth-library, the token
 * file read again at each exchange, and one explanation per configuration
 * mistake, none of which may contain a token.
 */

import diagnosticsChannel from 'node:diagnostics_channel';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';

import { decodeJwt } from 'jose';
import { pino, type Logger } from 'pino';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';

import { REDACTED_PATHS } from '../observability/logger.js';
import { AccessDeniedError } from '../store/errors.js';
import { GcsStore } from '../store/gcs.js';
import { startFakeGcs, type FakeGcsServer } from '../../test/env/fake-gcs.js';
import { startGcpFakes, type GcpFakes } from '../../test/env/gcp-fakes.js';
import { startGcsAuthProxy, type GcsAuthProxy } from '../../test/env/gcs-auth-proxy.js';
import { DEFAULT_SUBJECT, startOidcIssuer, type OidcIssuer } from '../../test/env/oidc-issuer.js';
import { CredentialError, IamCallError, StsExchangeError, TokenFileError } from './errors.js';
import { explainBucketAccessDenied } from './gcp-explain.js';
import {
  buildExternalAccountConfig,
  createGcpWifCredentialSource,
  exchangeGcpAccessToken,
  exchangeUsesBuiltinFetch,
  GcpConfigurationError,
  nextTokenRequestSent,
  resolveExternalAccountConfig,
  validateExternalAccountConfig,
  type ExternalAccountConfig,
} from './gcp-wif.js';
import type { CredentialSource, GcpAccessToken } from './types.js';

const SERVICE_ACCOUNT = 'sandbox-reader@customer-project.iam.gserviceaccount.com';

let issuer: OidcIssuer;
let fakes: GcpFakes;
let directory: string;
let tokenDirectory: string;
let tokenFile: string;
let logLines: string[];
let logger: Logger;
const sources: Array<CredentialSource<GcpAccessToken>> = [];
/** Every token minted in a test, so that messages and logs can be searched for them. */
const mintedTokens: string[] = [];

beforeAll(async () => {
  issuer = await startOidcIssuer();
  fakes = await startGcpFakes({ issuer, serviceAccounts: [SERVICE_ACCOUNT] });
  directory = await mkdtemp(join(tmpdir(), 'bucketmount-gcp-wif-'));
});

afterAll(async () => {
  await fakes?.stop();
  await issuer?.stop();
  await rm(directory, { recursive: true, force: true });
});

beforeEach(async () => {
  fakes.setStsAvailability('up');
  fakes.setIamAvailability('up');
  fakes.setTrustedIssuer(issuer.issuerUrl);
  fakes.addBinding({ serviceAccount: SERVICE_ACCOUNT, member: fakes.principalSetForPool() });

  tokenDirectory = await mkdtemp(join(directory, 'token-'));
  tokenFile = await writeToken({ audience: fakes.audience });

  logLines = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      logLines.push(chunk.toString('utf8'));
      callback();
    },
  });
  logger = pino({ level: 'debug', redact: { paths: REDACTED_PATHS, censor: '[redacted]' } }, sink);
});

afterEach(() => {
  for (const source of sources.splice(0)) source.stop();
});

async function writeToken(options: Parameters<OidcIssuer['mintToken']>[0]): Promise<string> {
  const token = await issuer.mintToken(options);
  mintedTokens.push(token);
  return issuer.writeTokenFile(tokenDirectory, token);
}

function configFor(overrides: Partial<Parameters<typeof buildExternalAccountConfig>[0]> = {}): ExternalAccountConfig {
  return buildExternalAccountConfig({
    provider: fakes.providerName,
    serviceAccount: SERVICE_ACCOUNT,
    tokenFile,
    stsEndpoint: fakes.stsTokenUrl,
    iamEndpoint: fakes.iamEndpoint,
    ...overrides,
  });
}

function source(config: Parameters<typeof createGcpWifCredentialSource>[0] = {}): CredentialSource<GcpAccessToken> {
  const created = createGcpWifCredentialSource(
    {
      provider: fakes.providerName,
      serviceAccount: SERVICE_ACCOUNT,
      tokenFile,
      stsEndpoint: fakes.stsTokenUrl,
      iamEndpoint: fakes.iamEndpoint,
      ...config,
    },
    { logger, initialRetryDelayMs: 10, minInvalidateIntervalMs: 0 },
  );
  sources.push(created);
  return created;
}

/** Awaits a rejection with `errorClass` and checks that no token leaks into its text. */
async function expectCredentialError<T extends abstract new (...args: never[]) => CredentialError>(promise: Promise<unknown>, errorClass: T): Promise<InstanceType<T>> {
  let outcome: unknown;
  try {
    await promise;
  } catch (error) {
    outcome = error;
  }
  expect(outcome, `expected a ${errorClass.name}`).toBeInstanceOf(errorClass);
  expectNoToken(outcome);
  return outcome as InstanceType<T>;
}

function expectNoToken(error: unknown): void {
  const credentialError = error as CredentialError;
  expectNoTokenIn([credentialError.message, credentialError.explanation, String((credentialError.cause as Error | undefined)?.message ?? '')]);
}

/** Checks texts and every log line written so far for subject tokens, federated tokens and access tokens. */
function expectNoTokenIn(texts: string[] = []): void {
  for (const text of [...texts, ...logLines]) {
    for (const token of mintedTokens) expect(text.includes(token), 'a subject token appears in an error or log line').toBe(false);
    expect(text).not.toMatch(/ya29\.fake\.|fed\.[A-Za-z0-9_-]{20}/);
  }
}

describe('external_account configuration', () => {
  it('built from provider and service account', () => {
    const config = configFor({ tokenLifetimeSeconds: 900 });

    expect(config).toEqual({
      type: 'external_account',
      audience: `//iam.googleapis.com/${fakes.providerName}`,
      subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
      token_url: fakes.stsTokenUrl,
      service_account_impersonation_url: `${fakes.iamEndpoint}/v1/projects/-/serviceAccounts/${SERVICE_ACCOUNT}:generateAccessToken`,
      service_account_impersonation: { token_lifetime_seconds: 900 },
      credential_source: { file: tokenFile, format: { type: 'text' } },
    });
  });

  it('defaults to the public endpoints', () => {
    const config = buildExternalAccountConfig({ provider: fakes.providerName, serviceAccount: SERVICE_ACCOUNT, tokenFile: '/var/run/token' });

    expect(config.token_url).toBe('https://sts.googleapis.com/v1/token');
    expect(config.service_account_impersonation_url).toBe(`https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/${SERVICE_ACCOUNT}:generateAccessToken`);
    expect(config.service_account_impersonation?.token_lifetime_seconds).toBe(3600);
  });

  it('provider without /providers/ names the option', () => {
    const build = (): unknown =>
      buildExternalAccountConfig({ provider: 'projects/123/locations/global/workloadIdentityPools/pool', serviceAccount: SERVICE_ACCOUNT, tokenFile });

    expect(build).toThrow(GcpConfigurationError);
    expect(build).toThrow(/--gcp-wif-provider.*no "\/providers\/".*projects\/NUMBER\/locations\/global\/workloadIdentityPools\/POOL\/providers\/PROVIDER/);
  });

  it('provider with a project id is rejected', () => {
    expect(() =>
      buildExternalAccountConfig({ provider: 'projects/my-project/locations/global/workloadIdentityPools/pool/providers/p', serviceAccount: SERVICE_ACCOUNT, tokenFile }),
    ).toThrow(/"my-project" is not a project number/);
  });

  it('invalid service account and lifetime', () => {
    expect(() => configFor({ serviceAccount: 'not-an-email' })).toThrow(/--gcp-service-account/);
    expect(() => configFor({ tokenLifetimeSeconds: 50_000 })).toThrow(/--token-lifetime/);
    expect(() => configFor({ stsEndpoint: 'ftp://sts' })).toThrow(/--gcp-sts-endpoint/);
  });

  it('ready file is validated field by field', () => {
    const valid = configFor();
    expect(validateExternalAccountConfig(JSON.parse(JSON.stringify(valid)), 'creds.json')).toEqual(valid);

    const cases: Array<[Record<string, unknown>, RegExp]> = [
      [{ ...valid, type: 'service_account' }, /"type" is "service_account", expected "external_account"/],
      [{ ...valid, audience: '//iam.googleapis.com/locations/global/workforcePools/p/providers/q' }, /"audience".*workforce pools are not supported/],
      [{ ...valid, subject_token_type: 'urn:ietf:params:aws:token-type:aws4_request' }, /"subject_token_type"/],
      [{ ...valid, credential_source: { url: 'http://metadata/token' } }, /uses url; only a file credential source is supported/],
      [{ ...valid, service_account_impersonation_url: 'https://iam.example/other' }, /"service_account_impersonation_url"/],
      [{ ...valid, token_url: undefined }, /"token_url" is missing/],
    ];
    for (const [document, message] of cases) {
      expect(() => validateExternalAccountConfig(document, 'creds.json')).toThrow(message);
    }
  });

  it('ready file with endpoint overrides', async () => {
    const path = join(directory, 'external-account.json');
    await writeFile(path, JSON.stringify(buildExternalAccountConfig({ provider: fakes.providerName, serviceAccount: SERVICE_ACCOUNT, tokenFile: '/elsewhere/token' })));

    const resolved = resolveExternalAccountConfig({ credentialsFile: path, tokenFile, stsEndpoint: fakes.stsTokenUrl, iamEndpoint: fakes.iamEndpoint });

    expect(resolved.credential_source.file).toBe(tokenFile);
    expect(resolved.token_url).toBe(fakes.stsTokenUrl);
    expect(resolved.service_account_impersonation_url).toBe(fakes.impersonationUrl(SERVICE_ACCOUNT));
    expect(() => resolveExternalAccountConfig({ credentialsFile: path, provider: fakes.providerName })).toThrow(/cannot be combined/);
    expect(() => resolveExternalAccountConfig({ credentialsFile: join(directory, 'missing.json') })).toThrow(/cannot read the GCP credentials file/);
  });
});

describe('GCP WIF exchange', () => {
  it('exchanges for a service account token', async () => {
    const credentials = source({ tokenLifetimeSeconds: 600 });
    await credentials.start();
    const token = await credentials.current();

    const minted = fakes.lookupAccessToken(token.accessToken);
    expect(minted?.serviceAccount).toBe(SERVICE_ACCOUNT);
    expect(Math.abs(token.expiration.getTime() - minted!.expiresAt.getTime())).toBeLessThan(1000);
    expect(Math.abs(token.expiration.getTime() - (Date.now() + 600_000))).toBeLessThan(5000);
    expect(credentials.state().totalRenewals).toBe(1);
    expectNoTokenIn();
    expect(logLines.join('\n')).not.toContain(token.accessToken);
  });

  it('ready credentials file exchanges', async () => {
    const path = join(directory, 'ready.json');
    await writeFile(path, JSON.stringify(configFor()));
    const credentials = source({ provider: undefined, serviceAccount: undefined, tokenFile: undefined, credentialsFile: path, stsEndpoint: undefined, iamEndpoint: undefined });

    await credentials.start();
    expect(fakes.lookupAccessToken((await credentials.current()).accessToken)?.serviceAccount).toBe(SERVICE_ACCOUNT);
  });

  it('token file is read again at each exchange', async () => {
    const credentials = source();
    await credentials.start();
    const firstId = decodeJwt(mintedTokens.at(-1)!).jti;

    // Kubelet-style rotation: a new payload directory behind the same path.
    await writeToken({ audience: fakes.audience, sub: 'system:serviceaccount:sandbox:rotated' });
    const secondId = decodeJwt(mintedTokens.at(-1)!).jti;
    await credentials.invalidate('test rotation');

    const exchanges = fakes.exchanges().slice(-2);
    expect(exchanges.map((record) => record.tokenId)).toEqual([firstId, secondId]);
    expect(exchanges[1]!.subject).toBe('system:serviceaccount:sandbox:rotated');
  });

  it('STS and IAM requests use the built-in fetch', async () => {
    const requests: string[] = [];
    const onCreate = (message: unknown): void => {
      const request = (message as { request: { origin: string; path: string } }).request;
      requests.push(`${request.origin}${request.path}`);
    };
    diagnosticsChannel.subscribe('undici:request:create', onCreate);
    try {
      await exchangeGcpAccessToken(configFor());
    } finally {
      diagnosticsChannel.unsubscribe('undici:request:create', onCreate);
    }

    expect(requests).toContain(fakes.stsTokenUrl);
    expect(requests).toContain(fakes.impersonationUrl(SERVICE_ACCOUNT));
  });

  it('STS request is reported as sent', async () => {
    const credentials = source();
    let reported = false;
    const sent = nextTokenRequestSent(credentials).then(() => {
      reported = true;
    });

    await credentials.start();
    // The request body is written before STS responds, so the report comes before the exchange ends.
    expect(reported).toBe(true);
    await sent;
  });

  it('built-in fetch unless proxy set', () => {
    expect(exchangeUsesBuiltinFetch({})).toBe(true);
    expect(exchangeUsesBuiltinFetch({ HTTPS_PROXY: '' })).toBe(true);
    for (const name of ['HTTPS_PROXY', 'https_proxy', 'HTTP_PROXY', 'http_proxy']) {
      expect(exchangeUsesBuiltinFetch({ [name]: 'http://127.0.0.1:3128' }), name).toBe(false);
    }
  });

  it('GcsStore authorizes with the exchanged token', async () => {
    let gcs: FakeGcsServer | undefined;
    let proxy: GcsAuthProxy | undefined;
    try {
      gcs = await startFakeGcs();
      proxy = await startGcsAuthProxy({ upstream: gcs.endpoint, fakes });
      await gcs.createBucket('wif-bucket');
      fakes.grantBucket({ serviceAccount: SERVICE_ACCOUNT, bucket: 'wif-bucket', role: 'roles/storage.objectAdmin' });

      const credentials = source();
      await credentials.start();
      const store = new GcsStore({ bucket: 'wif-bucket', credentials, apiEndpoint: proxy.endpoint, maxRetries: 0 });

      await store.put('hello.txt', Buffer.from('hello'));
      expect((await store.get('hello.txt')).body.toString()).toBe('hello');

      // Revoked access: the store's 401 triggers one renewal, which IAM refuses.
      fakes.removeBinding({ serviceAccount: SERVICE_ACCOUNT, member: fakes.principalSetForPool() });
      fakes.revokeAllAccessTokens();
      await expect(store.head('hello.txt')).rejects.toMatchObject({ code: 'InvalidCredentials' });
      expect(credentials.state().lastFailedStep).toBe('iam');

      // Restored access: the next renewal succeeds and requests work again.
      fakes.addBinding({ serviceAccount: SERVICE_ACCOUNT, member: fakes.principalSetForPool() });
      await credentials.invalidate('access restored');
      expect((await store.head('hello.txt')).size).toBe(5);

      // Bucket grant removed: a storage 403 with the bucket named, and the explanation of the fix.
      fakes.revokeBucket({ serviceAccount: SERVICE_ACCOUNT, bucket: 'wif-bucket', role: 'roles/storage.objectAdmin' });
      const denied = await store.put('denied.txt', Buffer.from('x')).catch((error: unknown) => error);
      expect(denied).toBeInstanceOf(AccessDeniedError);
      expect(explainBucketAccessDenied(SERVICE_ACCOUNT, 'wif-bucket', true)).toBe(
        `service account ${SERVICE_ACCOUNT} lacks roles/storage.objectAdmin on gs://wif-bucket, which reading and writing objects need. ` +
          `Grant it with: gcloud storage buckets add-iam-policy-binding gs://wif-bucket ` +
          `--member=serviceAccount:${SERVICE_ACCOUNT} --role=roles/storage.objectAdmin`,
      );
    } finally {
      await proxy?.stop();
      await gcs?.stop();
    }
  });
});

describe('GCP WIF explanations', () => {
  it('audience mismatch names both audiences', async () => {
    tokenFile = await writeToken({ audience: 'sts.amazonaws.com' });

    const error = await expectCredentialError(exchangeGcpAccessToken(configFor()), StsExchangeError);

    expect(error.code).toBe('AudienceMismatch');
    expect(error.step).toBe('sts');
    expect(error.serviceCode).toBe('invalid_grant');
    expect(error.explanation).toContain('the token has audience "sts.amazonaws.com"');
    expect(error.explanation).toContain(`expects "//iam.googleapis.com/${fakes.providerName}"`);
    expect(error.explanation).toContain('--allowed-audiences=sts.amazonaws.com');
  });

  it('untrusted issuer names the issuer', async () => {
    fakes.setTrustedIssuer('https://oidc.example.com/cluster');

    const error = await expectCredentialError(exchangeGcpAccessToken(configFor()), StsExchangeError);

    expect(error.code).toBe('TokenRejected');
    expect(error.explanation).toContain(`the token issued by "${issuer.issuerUrl}"`);
    expect(error.explanation).toContain(`--issuer-uri=${issuer.issuerUrl}`);
    expect(error.explanation).toContain('STS said: The issuer in ID Token');
  });

  it('expired token says when it expired', async () => {
    tokenFile = await writeToken({ audience: fakes.audience, issuedAt: new Date(Date.now() - 7200_000), expiresInSeconds: 600 });

    const error = await expectCredentialError(exchangeGcpAccessToken(configFor()), StsExchangeError);

    expect(error.code).toBe('TokenExpired');
    expect(error.explanation).toContain(`the token in ${tokenFile} expired at`);
  });

  it('missing workloadIdentityUser shows the binding', async () => {
    fakes.removeBinding({ serviceAccount: SERVICE_ACCOUNT, member: fakes.principalSetForPool() });

    const error = await expectCredentialError(exchangeGcpAccessToken(configFor()), IamCallError);

    expect(error.code).toBe('AccessDenied');
    expect(error.step).toBe('iam');
    expect(error.httpStatus).toBe(403);
    const poolPath = `projects/${fakes.projectNumber}/locations/global/workloadIdentityPools/${fakes.pool}`;
    expect(error.explanation).toContain(`principal://iam.googleapis.com/${poolPath}/subject/${DEFAULT_SUBJECT}`);
    expect(error.explanation).toContain(`--member="principalSet://iam.googleapis.com/${poolPath}/*"`);
    expect(error.explanation).toContain(
      `gcloud iam service-accounts add-iam-policy-binding ${SERVICE_ACCOUNT} --project=customer-project --role=roles/iam.workloadIdentityUser`,
    );
  });

  it('unknown provider points at the provider name', async () => {
    const config = configFor({ provider: fakes.providerName.replace(/providers\/.*$/, 'providers/typo-provider') });

    const error = await expectCredentialError(exchangeGcpAccessToken(config), StsExchangeError);

    expect(error.code).toBe('InvalidRequest');
    expect(error.serviceCode).toBe('invalid_target');
    expect(error.explanation).toContain('providers/typo-provider');
    expect(error.explanation).toContain('project number');
  });

  it('lifetime over the maximum names the policy', async () => {
    const error = await expectCredentialError(exchangeGcpAccessToken(configFor({ tokenLifetimeSeconds: 7200 })), IamCallError);

    expect(error.code).toBe('InvalidRequest');
    expect(error.explanation).toContain('constraints/iam.allowServiceAccountCredentialLifetimeExtension');
  });

  it('STS unavailable is retryable', async () => {
    fakes.setStsAvailability('unavailable');
    const unavailable = await expectCredentialError(exchangeGcpAccessToken(configFor()), StsExchangeError);
    expect(unavailable.code).toBe('ServiceUnavailable');
    expect(unavailable.retryable).toBe(true);

    fakes.setStsAvailability('reset');
    const reset = await expectCredentialError(exchangeGcpAccessToken(configFor()), StsExchangeError);
    expect(reset.code).toBe('EndpointUnreachable');
    expect(reset.retryable).toBe(true);
  });

  it('IAM unavailable is retryable', async () => {
    fakes.setIamAvailability('unavailable');
    const error = await expectCredentialError(exchangeGcpAccessToken(configFor()), IamCallError);
    expect(error.code).toBe('ServiceUnavailable');
    expect(error.retryable).toBe(true);
  });

  it('missing token file names the path', async () => {
    const error = await expectCredentialError(exchangeGcpAccessToken(configFor({ tokenFile: join(directory, 'no-such-token') })), TokenFileError);

    expect(error.code).toBe('TokenFileMissing');
    expect(error.explanation).toContain(join(directory, 'no-such-token'));
  });

  it('refresher recovers after STS comes back', async () => {
    fakes.setStsAvailability('unavailable');
    const credentials = source();
    await expectCredentialError(credentials.start(), StsExchangeError);
    expect(credentials.state().lastFailedStep).toBe('sts');

    fakes.setStsAvailability('up');
    // The retry is scheduled with a delay of at most 10 ms; current() either joins it or starts one.
    let token: GcpAccessToken | undefined;
    for (let attempt = 0; attempt < 50 && token === undefined; attempt++) {
      token = await credentials.current().catch(async () => {
        await new Promise((resolve) => setTimeout(resolve, 20));
        return undefined;
      });
    }
    expect(token).toBeDefined();
    expect(credentials.state().consecutiveFailures).toBe(0);
    expect(logLines.some((line) => line.includes('credential exchange failed'))).toBe(true);
    expectNoTokenIn();
  });
});
