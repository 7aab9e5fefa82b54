/**
 * Fakes of the two GCP endpoints of Workload Identity Federation: the Security
 * Token Service (`POST /v1/token`) and the IAM Credentials
 * `generateAccessToken` method. They are fakes because no emulator of these
 * services exists; everything else in the tests runs against real servers.
 *
 * They check what the real services check, in the same order, and respond
 * with the same JSON shapes:
 * - STS takes an RFC 8693 form body, verifies the subject token's RS256
 *   signature against the test issuer's JWKS, its `iss` against the issuer the
 *   provider trusts, its `aud` against the provider's allowed audiences, and
 *   its `exp`, then returns a federated access token for
 *   `principal://iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/POOL/subject/SUB`.
 * - generateAccessToken takes that federated token as a bearer token, checks
 *   that the principal (or a principalSet that contains it) holds
 *   roles/iam.workloadIdentityUser on the service account, honours `lifetime`,
 *   and mints a service-account access token.
 *
 * Every minted access token is kept in a registry with its service account
 * and expiry, so that `gcs-auth-proxy.ts` can authorize storage requests, and
 * per-bucket grants say which service account may read or write which bucket.
 *
 * Switches let tests take either service down (HTTP 503 or a reset
 * connection), revoke and restore bindings, and change bucket grants while a
 * mount is running.
 */

import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

import { createRemoteJWKSet, decodeJwt, errors as joseErrors, jwtVerify, type JWTPayload } from 'jose';

import type { OidcIssuer } from './oidc-issuer.js';

export const WORKLOAD_IDENTITY_USER_ROLE = 'roles/iam.workloadIdentityUser';
export const TOKEN_EXCHANGE_GRANT_TYPE = 'urn:ietf:params:oauth:grant-type:token-exchange';
export const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
const SUBJECT_TOKEN_TYPES = new Set(['urn:ietf:params:oauth:token-type:jwt', 'urn:ietf:params:oauth:token-type:id_token']);

/** Lifetime of federated tokens, as on GCP (expires_in 3599 or 3600). */
const FEDERATED_TOKEN_LIFETIME_SECONDS = 3600;
/** generateAccessToken rejects longer lifetimes unless an organization policy extends the limit to 12 hours. */
const DEFAULT_MAX_LIFETIME_SECONDS = 3600;

export type BucketRole = 'roles/storage.objectAdmin' | 'roles/storage.objectViewer';

/** One member of the roles/iam.workloadIdentityUser binding on a service account. */
export interface ServiceAccountBinding {
  serviceAccount: string;
  /** A `principal://...` or `principalSet://...` member. */
  member: string;
}

export interface BucketGrant {
  serviceAccount: string;
  bucket: string;
  role: BucketRole;
}

export interface GcpFakesOptions {
  issuer: OidcIssuer;
  projectNumber?: string;
  pool?: string;
  provider?: string;
  /** The issuer the provider trusts; defaults to the test issuer's URL. */
  trustedIssuer?: string;
  /** The provider's allowed audiences; empty means the provider's own resource name. */
  allowedAudiences?: string[];
  /** Service accounts that exist. */
  serviceAccounts?: string[];
  bindings?: ServiceAccountBinding[];
  bucketGrants?: BucketGrant[];
  /** Longest `lifetime` generateAccessToken accepts, in seconds; defaults to 3600. */
  maxLifetimeSeconds?: number;
  /** Clock of token expiry checks and expiry times; defaults to the system clock. */
  now?: () => Date;
}

export type Availability = 'up' | 'unavailable' | 'reset';

export interface MintedAccessToken {
  serviceAccount: string;
  expiresAt: Date;
  scopes: string[];
}

/** What STS saw in one exchange, for tests that check which token was sent. */
export interface ExchangeRecord {
  /** Outcome: `ok`, or the OAuth error code sent back. */
  outcome: string;
  subject?: string;
  /** The `jti` claim of the subject token, which distinguishes tokens of one subject. */
  tokenId?: string;
  audience?: string;
}

export interface GcpFakes {
  /** STS token endpoint, `http://127.0.0.1:PORT/v1/token`. */
  stsTokenUrl: string;
  /** IAM Credentials root, `http://127.0.0.1:PORT`; requests go to `/v1/projects/-/serviceAccounts/EMAIL:generateAccessToken`. */
  iamEndpoint: string;
  /** `projects/N/locations/global/workloadIdentityPools/POOL/providers/PROVIDER`. */
  providerName: string;
  /** `//iam.googleapis.com/` + providerName, the STS audience. */
  audience: string;
  projectNumber: string;
  pool: string;
  impersonationUrl(serviceAccount: string): string;
  /** The `principal://` member of one subject. */
  principalForSubject(subject: string): string;
  /** The `principalSet://` member of every identity in the pool. */
  principalSetForPool(): string;

  addBinding(binding: ServiceAccountBinding): void;
  removeBinding(binding: ServiceAccountBinding): void;
  grantBucket(grant: BucketGrant): void;
  revokeBucket(grant: BucketGrant): void;
  setStsAvailability(availability: Availability): void;
  setIamAvailability(availability: Availability): void;
  setTrustedIssuer(issuer: string): void;
  setAllowedAudiences(audiences: string[]): void;

  /** Returns the access token's record when the token was minted here and has not expired. */
  lookupAccessToken(token: string): MintedAccessToken | undefined;
  /** Whether the service account may read (`write` false) or write the bucket. */
  canAccessBucket(serviceAccount: string, bucket: string, write: boolean): boolean;
  /** Invalidates every minted access token, as a revoked credential would be. */
  revokeAllAccessTokens(): void;

  exchanges(): ExchangeRecord[];
  generateRequestCount(): number;
  stop(): Promise<void>;
}

interface FederatedToken {
  subject: string;
  expiresAt: Date;
}

class StsRejection extends Error {
  constructor(
    readonly status: number,
    readonly oauthError: string,
    description: string,
  ) {
    super(description);
  }
}

/** Starts the STS and IAM Credentials fakes on two free ports of 127.0.0.1. */
export async function startGcpFakes(options: GcpFakesOptions): Promise<GcpFakes> {
  const projectNumber = options.projectNumber ?? '123456789012';
  const pool = options.pool ?? 'sandbox-pool';
  const providerId = options.provider ?? 'sandbox-provider';
  const providerName = `projects/${projectNumber}/locations/global/workloadIdentityPools/${pool}/providers/${providerId}`;
  const audience = `//iam.googleapis.com/${providerName}`;
  const poolResource = `iam.googleapis.com/projects/${projectNumber}/locations/global/workloadIdentityPools/${pool}`;
  const now = options.now ?? (() => new Date());
  const maxLifetimeSeconds = options.maxLifetimeSeconds ?? DEFAULT_MAX_LIFETIME_SECONDS;

  let trustedIssuer = options.trustedIssuer ?? options.issuer.issuerUrl;
  let allowedAudiences = options.allowedAudiences ?? [];
  const serviceAccounts = new Set(options.serviceAccounts ?? []);
  const bindings: ServiceAccountBinding[] = [...(options.bindings ?? [])];
  const bucketGrants: BucketGrant[] = [...(options.bucketGrants ?? [])];
  let stsAvailability: Availability = 'up';
  let iamAvailability: Availability = 'up';

  const federatedTokens = new Map<string, FederatedToken>();
  const accessTokens = new Map<string, MintedAccessToken>();
  const exchangeRecords: ExchangeRecord[] = [];
  let generateRequests = 0;

  // Verification fetches keys from the issuer's JWKS URL, as GCP does from the
  // provider's issuer (or from its uploaded JWKS).
  const jwks = createRemoteJWKSet(new URL(options.issuer.jwksUrl));

  const acceptedAudiences = (): string[] =>
    allowedAudiences.length > 0 ? allowedAudiences : [audience, `https://iam.googleapis.com/${providerName}`];

  // ---------------------------------------------------------------------------
  // STS

  const verifySubjectToken = async (subjectToken: string): Promise<JWTPayload> => {
    let claims: JWTPayload;
    try {
      claims = decodeJwt(subjectToken);
    } catch {
      throw new StsRejection(400, 'invalid_grant', 'Unable to parse the ID Token.');
    }

    if (claims.iss !== trustedIssuer) {
      throw new StsRejection(400, 'invalid_grant', `The issuer in ID Token ${String(claims.iss)} does not match the expected ones: ${trustedIssuer}`);
    }

    try {
      await jwtVerify(subjectToken, jwks, { algorithms: ['RS256'], currentDate: now() });
    } catch (error) {
      if (error instanceof joseErrors.JWTExpired) {
        // NOTE: the wording of GCP's expired-token description was not found
        // in a public source; the fakes' callers must not depend on it.
        throw new StsRejection(400, 'invalid_grant', `ID Token expired at ${String(claims.exp)}.`);
      }
      throw new StsRejection(400, 'invalid_grant', 'Invalid ID Token signature: no key of the issuer JWKS verifies it.');
    }

    const tokenAudiences = typeof claims.aud === 'string' ? [claims.aud] : (claims.aud ?? []);
    const accepted = acceptedAudiences();
    if (!tokenAudiences.some((value) => accepted.includes(value))) {
      throw new StsRejection(400, 'invalid_grant', `The audience in ID Token [${tokenAudiences.join(', ')}] does not match the expected audience.`);
    }

    if (typeof claims.sub !== 'string' || claims.sub === '') {
      throw new StsRejection(400, 'invalid_grant', 'The ID Token has no sub claim to map to google.subject.');
    }
    // google.subject is limited to 127 bytes.
    if (Buffer.byteLength(claims.sub) > 127) {
      throw new StsRejection(400, 'invalid_grant', 'The size of mapped attribute google.subject exceeds the 127 bytes limit.');
    }
    return claims;
  };

  const handleTokenExchange = async (body: string): Promise<unknown> => {
    const form = new URLSearchParams(body);
    const record: ExchangeRecord = { outcome: 'ok', audience: form.get('audience') ?? undefined };
    exchangeRecords.push(record);

    try {
      if (form.get('grant_type') !== TOKEN_EXCHANGE_GRANT_TYPE) {
        throw new StsRejection(400, 'unsupported_grant_type', `The grant type ${String(form.get('grant_type'))} is not supported.`);
      }
      if (form.get('requested_token_type') !== ACCESS_TOKEN_TYPE) {
        throw new StsRejection(400, 'invalid_request', 'Invalid value for "requested_token_type".');
      }
      if (!SUBJECT_TOKEN_TYPES.has(form.get('subject_token_type') ?? '')) {
        throw new StsRejection(400, 'invalid_request', 'Invalid value for "subject_token_type".');
      }

      const requestedAudience = form.get('audience') ?? '';
      if (!/^\/\/iam\.googleapis\.com\/projects\/[^/]+\/locations\/global\/workloadIdentityPools\/[^/]+\/providers\/[^/]+$/.test(requestedAudience)) {
        throw new StsRejection(
          400,
          'invalid_request',
          'Invalid value for "audience". This value should be the full resource name of the Identity Provider. See https://cloud.google.com/iam/docs/reference/sts/rest/v1/TopLevel/token for the list of possible formats.',
        );
      }
      if (requestedAudience !== audience) {
        throw new StsRejection(
          400,
          'invalid_target',
          'The target service indicated by the "audience" parameters is invalid. This might either be because the pool or provider is disabled or deleted or because it doesn\'t exist.',
        );
      }

      const subjectToken = form.get('subject_token');
      if (subjectToken === null || subjectToken === '') {
        throw new StsRejection(400, 'invalid_request', 'Missing required parameter: subject_token.');
      }
      const claims = await verifySubjectToken(subjectToken);
      record.subject = claims.sub;
      record.tokenId = typeof claims.jti === 'string' ? claims.jti : undefined;

      const token = `fed.${randomBytes(24).toString('base64url')}`;
      federatedTokens.set(token, {
        subject: claims.sub!,
        expiresAt: new Date(now().getTime() + FEDERATED_TOKEN_LIFETIME_SECONDS * 1000),
      });
      return {
        access_token: token,
        issued_token_type: ACCESS_TOKEN_TYPE,
        token_type: 'Bearer',
        expires_in: FEDERATED_TOKEN_LIFETIME_SECONDS - 1,
      };
    } catch (error) {
      if (error instanceof StsRejection) record.outcome = error.oauthError;
      throw error;
    }
  };

  const stsServer = createServer((request, response) => {
    if (stsAvailability === 'reset') {
      request.socket.destroy();
      return;
    }
    if (stsAvailability === 'unavailable') {
      sendJson(response, 503, { error: 'temporarily_unavailable', error_description: 'The service is currently unavailable.' });
      return;
    }
    const path = new URL(request.url ?? '/', 'http://sts.invalid').pathname;
    if (request.method !== 'POST' || path !== '/v1/token') {
      sendJson(response, 404, { error: 'not_found', error_description: `no such method: ${request.method} ${path}` });
      return;
    }

    readBody(request)
      .then((body) => handleTokenExchange(body.toString('utf8')))
      .then((result) => sendJson(response, 200, result))
      .catch((error: unknown) => {
        if (error instanceof StsRejection) {
          sendJson(response, error.status, { error: error.oauthError, error_description: error.message });
          return;
        }
        sendJson(response, 500, { error: 'server_error', error_description: String(error) });
      });
  });

  // ---------------------------------------------------------------------------
  // IAM Credentials

  const memberHoldsBinding = (serviceAccount: string, subject: string): boolean =>
    bindings.some((binding) => {
      if (binding.serviceAccount !== serviceAccount) return false;
      return binding.member === `principal://${poolResource}/subject/${subject}` || binding.member === `principalSet://${poolResource}/*`;
    });

  const iamError = (response: ServerResponse, status: number, grpcStatus: string, message: string, details?: unknown[]): void => {
    sendJson(response, status, { error: { code: status, message, status: grpcStatus, ...(details === undefined ? {} : { details }) } });
  };

  const handleGenerateAccessToken = (request: IncomingMessage, response: ServerResponse, serviceAccount: string, body: Buffer): void => {
    generateRequests += 1;

    const authorization = request.headers.authorization ?? '';
    const bearer = /^Bearer (.+)$/i.exec(authorization)?.[1];
    const federated = bearer === undefined ? undefined : federatedTokens.get(bearer);
    if (federated === undefined || federated.expiresAt.getTime() <= now().getTime()) {
      iamError(
        response,
        401,
        'UNAUTHENTICATED',
        'Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.',
      );
      return;
    }

    let parsed: { scope?: unknown; lifetime?: unknown };
    try {
      parsed = JSON.parse(body.toString('utf8')) as typeof parsed;
    } catch {
      iamError(response, 400, 'INVALID_ARGUMENT', 'Invalid JSON payload received.');
      return;
    }
    const scopes = Array.isArray(parsed.scope) ? parsed.scope.filter((scope): scope is string => typeof scope === 'string') : [];
    if (scopes.length === 0) {
      iamError(response, 400, 'INVALID_ARGUMENT', 'Scope required.');
      return;
    }

    let lifetimeSeconds = DEFAULT_MAX_LIFETIME_SECONDS;
    if (parsed.lifetime !== undefined) {
      const match = typeof parsed.lifetime === 'string' ? /^(\d+)(?:\.\d+)?s$/.exec(parsed.lifetime) : null;
      if (match === null) {
        iamError(response, 400, 'INVALID_ARGUMENT', `Invalid value at 'lifetime' (type.googleapis.com/google.protobuf.Duration), Field 'lifetime', Illegal duration format; duration must end with 's'`);
        return;
      }
      lifetimeSeconds = Number(match[1]);
      if (lifetimeSeconds > maxLifetimeSeconds) {
        iamError(response, 400, 'INVALID_ARGUMENT', `The lifetime requested (${lifetimeSeconds}s) is more than the maximum allowed (${maxLifetimeSeconds}s).`);
        return;
      }
    }

    // GCP returns the same error for a missing service account and a missing
    // binding, so that callers cannot probe which service accounts exist.
    if (!serviceAccounts.has(serviceAccount) || !memberHoldsBinding(serviceAccount, federated.subject)) {
      iamError(response, 403, 'PERMISSION_DENIED', "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).", [
        {
          '@type': 'type.googleapis.com/google.rpc.ErrorInfo',
          reason: 'IAM_PERMISSION_DENIED',
          domain: 'iam.googleapis.com',
          metadata: { permission: 'iam.serviceAccounts.getAccessToken' },
        },
      ]);
      return;
    }

    const expiresAt = new Date(now().getTime() + lifetimeSeconds * 1000);
    const accessToken = `ya29.fake.${randomBytes(32).toString('base64url')}`;
    accessTokens.set(accessToken, { serviceAccount, expiresAt, scopes });
    // expireTime is an RFC 3339 timestamp in UTC with whole seconds, such as 2026-01-01T10:00:00Z.
    sendJson(response, 200, { accessToken, expireTime: expiresAt.toISOString().replace(/\.\d{3}Z$/, 'Z') });
  };

  const iamServer = createServer((request, response) => {
    if (iamAvailability === 'reset') {
      request.socket.destroy();
      return;
    }
    if (iamAvailability === 'unavailable') {
      iamError(response, 503, 'UNAVAILABLE', 'The service is currently unavailable.');
      return;
    }

    const path = decodeURIComponent(new URL(request.url ?? '/', 'http://iam.invalid').pathname);
    const match = /^\/v1\/projects\/-\/serviceAccounts\/([^/:]+):generateAccessToken$/.exec(path);
    if (request.method !== 'POST' || match === null) {
      iamError(response, 404, 'NOT_FOUND', `Method not found: ${request.method} ${path}`);
      return;
    }

    readBody(request)
      .then((body) => handleGenerateAccessToken(request, response, match[1]!, body))
      .catch((error: unknown) => iamError(response, 500, 'INTERNAL', String(error)));
  });

  const stsPort = await listen(stsServer);
  const iamPort = await listen(iamServer);
  const iamEndpoint = `http://127.0.0.1:${iamPort}`;

  const sameBinding = (left: ServiceAccountBinding, right: ServiceAccountBinding): boolean =>
    left.serviceAccount === right.serviceAccount && left.member === right.member;
  const sameGrant = (left: BucketGrant, right: BucketGrant): boolean =>
    left.serviceAccount === right.serviceAccount && left.bucket === right.bucket && left.role === right.role;

  return {
    stsTokenUrl: `http://127.0.0.1:${stsPort}/v1/token`,
    iamEndpoint,
    providerName,
    audience,
    projectNumber,
    pool,
    impersonationUrl: (serviceAccount) => `${iamEndpoint}/v1/projects/-/serviceAccounts/${serviceAccount}:generateAccessToken`,
    principalForSubject: (subject) => `principal://${poolResource}/subject/${subject}`,
    principalSetForPool: () => `principalSet://${poolResource}/*`,

    addBinding: (binding) => {
      if (!bindings.some((existing) => sameBinding(existing, binding))) bindings.push(binding);
    },
    removeBinding: (binding) => {
      const index = bindings.findIndex((existing) => sameBinding(existing, binding));
      if (index !== -1) bindings.splice(index, 1);
    },
    grantBucket: (grant) => {
      if (!bucketGrants.some((existing) => sameGrant(existing, grant))) bucketGrants.push(grant);
    },
    revokeBucket: (grant) => {
      const index = bucketGrants.findIndex((existing) => sameGrant(existing, grant));
      if (index !== -1) bucketGrants.splice(index, 1);
    },
    setStsAvailability: (availability) => {
      stsAvailability = availability;
    },
    setIamAvailability: (availability) => {
      iamAvailability = availability;
    },
    setTrustedIssuer: (issuer) => {
      trustedIssuer = issuer;
    },
    setAllowedAudiences: (audiences) => {
      allowedAudiences = [...audiences];
    },

    lookupAccessToken: (token) => {
      const minted = accessTokens.get(token);
      if (minted === undefined || minted.expiresAt.getTime() <= now().getTime()) return undefined;
      return minted;
    },
    canAccessBucket: (serviceAccount, bucket, write) =>
      bucketGrants.some(
        (grant) =>
          grant.serviceAccount === serviceAccount &&
          grant.bucket === bucket &&
          (grant.role === 'roles/storage.objectAdmin' || !write),
      ),
    revokeAllAccessTokens: () => accessTokens.clear(),

    exchanges: () => exchangeRecords.map((record) => ({ ...record })),
    generateRequestCount: () => generateRequests,
    stop: async () => {
      await Promise.all([closeServer(stsServer), closeServer(iamServer)]);
    },
  };
}

function sendJson(response: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  response.writeHead(status, { 'content-type': 'application/json; charset=UTF-8', 'content-length': Buffer.byteLength(text) });
  response.end(text);
}

async function readBody(request: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of request) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

async function listen(server: Server): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port: 0 }, () => resolve());
  });
  return (server.address() as AddressInfo).port;
}

async function closeServer(server: Server): Promise<void> {
  if (!server.listening) return;
  await new Promise<void>((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}
