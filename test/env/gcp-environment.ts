/**
 * The whole GCS test environment in one call: the OIDC issuer, the STS and
 * IAM Credentials fakes, fake-gcs-server, and the authorizing proxy in front
 * of it, wired so that a service account bound to the pool's principals may
 * read and write the buckets created through `createBucket`.
 *
 * `staticTokenSource()` returns a `CredentialSource` that performs the two
 * exchanges once per call of `start()`/`invalidate()` with plain fetch calls.
 * Store tests use it so that they do not depend on the product's credential
 * code; the credential tests use the product's `GcpWifCredentials` instead.
 */

import type { CredentialSource, CredentialState, GcpAccessToken } from '../../src/credentials/types.js';
import { startFakeGcs, type FakeGcsServer } from './fake-gcs.js';
import { startGcpFakes, type GcpFakes } from './gcp-fakes.js';
import { startGcsAuthProxy, type GcsAuthProxy } from './gcs-auth-proxy.js';
import { startOidcIssuer, type OidcIssuer } from './oidc-issuer.js';

export const TEST_SERVICE_ACCOUNT = 'bucket-reader@customer-project.iam.gserviceaccount.com';

export interface GcpEnvironment {
  issuer: OidcIssuer;
  fakes: GcpFakes;
  gcs: FakeGcsServer;
  proxy: GcsAuthProxy;
  serviceAccount: string;
  /** Creates a bucket on the emulator and grants the test service account roles/storage.objectAdmin on it. */
  createBucket(name: string): Promise<void>;
  /** A credential source that exchanges a freshly minted token through the fakes. */
  staticTokenSource(): CredentialSource<GcpAccessToken>;
  stop(): Promise<void>;
}

export async function startGcpEnvironment(): Promise<GcpEnvironment> {
  const stops: Array<() => Promise<void>> = [];
  const stopAll = async (): Promise<void> => {
    for (const stop of stops.reverse()) await stop().catch(() => undefined);
  };

  try {
    const issuer = await startOidcIssuer();
    stops.push(() => issuer.stop());

    const fakes = await startGcpFakes({ issuer, serviceAccounts: [TEST_SERVICE_ACCOUNT] });
    stops.push(() => fakes.stop());
    fakes.addBinding({ serviceAccount: TEST_SERVICE_ACCOUNT, member: fakes.principalSetForPool() });

    const gcs = await startFakeGcs();
    stops.push(() => gcs.stop());

    const proxy = await startGcsAuthProxy({ upstream: gcs.endpoint, fakes });
    stops.push(() => proxy.stop());

    const exchange = async (): Promise<GcpAccessToken> => {
      const subjectToken = await issuer.mintToken({ audience: fakes.audience });
      const stsResponse = await fetch(fakes.stsTokenUrl, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({
          grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
          audience: fakes.audience,
          scope: 'https://www.googleapis.com/auth/cloud-platform',
          requested_token_type: 'urn:ietf:params:oauth:token-type:access_token',
          subject_token: subjectToken,
          subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
        }),
      });
      const federated = (await stsResponse.json()) as { access_token?: string };
      if (!stsResponse.ok || federated.access_token === undefined) throw new Error(`test STS exchange failed with HTTP ${stsResponse.status}`);

      const iamResponse = await fetch(fakes.impersonationUrl(TEST_SERVICE_ACCOUNT), {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${federated.access_token}` },
        body: JSON.stringify({ scope: ['https://www.googleapis.com/auth/cloud-platform'], lifetime: '3600s' }),
      });
      const minted = (await iamResponse.json()) as { accessToken?: string; expireTime?: string };
      if (!iamResponse.ok || minted.accessToken === undefined) throw new Error(`test generateAccessToken failed with HTTP ${iamResponse.status}`);
      return { accessToken: minted.accessToken, expiration: new Date(minted.expireTime ?? 0) };
    };

    const staticTokenSource = (): CredentialSource<GcpAccessToken> => {
      let held: Promise<GcpAccessToken> | undefined;
      const state: CredentialState = { consecutiveFailures: 0, totalRenewals: 0, totalFailures: 0 };
      const renew = (): Promise<GcpAccessToken> => {
        held = exchange();
        state.totalRenewals += 1;
        return held;
      };
      return {
        start: async () => {
          await renew();
        },
        current: () => held ?? renew(),
        invalidate: () => renew(),
        state: () => ({ ...state }),
        stop: () => undefined,
      };
    };

    return {
      issuer,
      fakes,
      gcs,
      proxy,
      serviceAccount: TEST_SERVICE_ACCOUNT,
      createBucket: async (name) => {
        await gcs.createBucket(name);
        fakes.grantBucket({ serviceAccount: TEST_SERVICE_ACCOUNT, bucket: name, role: 'roles/storage.objectAdmin' });
      },
      staticTokenSource,
      stop: stopAll,
    };
  } catch (error) {
    await stopAll();
    throw error;
  }
}
