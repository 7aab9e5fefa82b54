/**
 * AWS credentials from a web identity token: the token file is exchanged at
 * STS `AssumeRoleWithWebIdentity` for temporary credentials of a role, and a
 * `CredentialRefresher` keeps them renewed in the background.
 *
 * The S3 client gets a credential provider that only returns the refresher's
 * current credentials, so no request ever triggers its own STS call. The
 * provider is marked as already memoized: the AWS SDK for JavaScript v3
 * (`@aws-sdk/core` `resolveAwsSdkSigV4Config`) otherwise wraps a credential
 * function in its own cache that calls it again only when the credentials are
 * within five minutes of expiry, which would keep signing with credentials
 * that `invalidate()` has already replaced. With the mark, the SDK calls the
 * provider for every request (twice per S3 request with @aws-sdk/client-s3
 * 3.1178), and each call costs one resolved promise.
 */

import { hostname } from 'node:os';

import {
  AssumeRoleWithWebIdentityCommand,
  STSClient,
  STSServiceException,
  type AssumeRoleWithWebIdentityCommandOutput,
} from '@aws-sdk/client-sts';
import { UndiciHttpHandler } from '@smithy/undici-http-handler';

import { agentOptions } from '../store/undici-options.js';
import type { Logger } from '../observability/logger.js';
import { classifyNetworkFailure, CredentialError, redactSecret, StsExchangeError, type CredentialErrorCode } from './errors.js';
import { CredentialRefresher, type RefresherOptions } from './refresher.js';
import { describeTokenClaims, isTokenExpired, readTokenFile, type WebIdentityToken } from './token-file.js';
import type { AwsCredentials, CredentialSource } from './types.js';

export interface AwsWebIdentityConfig {
  roleArn: string;
  /** Path of the projected service-account token. */
  tokenFile: string;
  /** Region of the STS client; also selects the regional STS endpoint when `stsEndpoint` is not set. */
  region: string;
  /** STS endpoint URL, such as `https://sts.eu-west-1.amazonaws.com` or a MinIO server; defaults to the SDK's regional endpoint. */
  stsEndpoint?: string;
  /** Defaults to `bucketmount-<hostname>`. */
  sessionName?: string;
  /** Requested credential lifetime in seconds; the STS default applies when unset (one hour on AWS). */
  durationSeconds?: number;
  /**
   * The audience the STS expects in the token (`sts.amazonaws.com` on AWS),
   * used only to explain rejections; the token is sent whatever its audience.
   */
  expectedAudience?: string;
  /** Timeout of one STS request in milliseconds; default 10000. */
  requestTimeoutMs?: number;
}

/** Standard AWS SDK environment variables of the web identity flow. */
export interface AwsWebIdentityEnvironment {
  roleArn?: string;
  tokenFile?: string;
  sessionName?: string;
  region?: string;
}

export function readAwsWebIdentityEnvironment(environment: NodeJS.ProcessEnv = process.env): AwsWebIdentityEnvironment {
  const value = (name: string): string | undefined => {
    const text = environment[name]?.trim();
    return text === undefined || text === '' ? undefined : text;
  };
  return {
    roleArn: value('AWS_ROLE_ARN'),
    tokenFile: value('AWS_WEB_IDENTITY_TOKEN_FILE'),
    sessionName: value('AWS_ROLE_SESSION_NAME'),
    region: value('AWS_REGION') ?? value('AWS_DEFAULT_REGION'),
  };
}

/** `bucketmount-<hostname>`, shortened and cleaned to fit the role session name rules of STS. */
export function defaultSessionName(host: string = hostname()): string {
  // RoleSessionName allows 2 to 64 characters from [\w+=,.@-].
  return `bucketmount-${host}`.replace(/[^\w+=,.@-]/g, '-').slice(0, 64);
}

/**
 * Builds the exchange function: reads the token file, calls
 * `AssumeRoleWithWebIdentity`, and turns every failure into a `CredentialError`.
 */
export function createAwsWebIdentityExchange(
  config: AwsWebIdentityConfig,
  stsClient: STSClient = createStsClient(config),
): (signal: AbortSignal) => Promise<AwsCredentials> {
  const sessionName = config.sessionName ?? defaultSessionName();
  const endpoint = config.stsEndpoint ?? `the ${config.region} AWS STS endpoint`;

  return async (signal: AbortSignal): Promise<AwsCredentials> => {
    const token = await readTokenFile(config.tokenFile, signal);

    let output: AssumeRoleWithWebIdentityCommandOutput;
    try {
      output = await stsClient.send(
        new AssumeRoleWithWebIdentityCommand({
          RoleArn: config.roleArn,
          RoleSessionName: sessionName,
          WebIdentityToken: token.token,
          DurationSeconds: config.durationSeconds,
        }),
        { abortSignal: signal },
      );
    } catch (error) {
      throw explainStsFailure(error, { config, endpoint, token, now: new Date() });
    }

    const credentials = output.Credentials;
    if (
      credentials?.AccessKeyId === undefined ||
      credentials.SecretAccessKey === undefined ||
      credentials.SessionToken === undefined ||
      credentials.Expiration === undefined
    ) {
      throw new StsExchangeError(`AssumeRoleWithWebIdentity at ${endpoint} returned no complete credentials`, endpoint, {
        code: 'InvalidResponse',
        retryable: true,
        explanation: `the STS endpoint ${endpoint} answered AssumeRoleWithWebIdentity without an access key, secret, session token and expiration; check that the endpoint is an STS service`,
      });
    }

    return {
      accessKeyId: credentials.AccessKeyId,
      secretAccessKey: credentials.SecretAccessKey,
      sessionToken: credentials.SessionToken,
      expiration: credentials.Expiration,
    };
  };
}

export function createStsClient(config: AwsWebIdentityConfig): STSClient {
  const timeoutMs = config.requestTimeoutMs ?? 10_000;

  // AssumeRoleWithWebIdentity is an unsigned call, so the client needs no
  // credentials. The refresher retries with backoff, so the SDK does not.
  //
  // The settings below are the S3 client's choices (S3_CLIENT_BEHAVIOR),
  // given so that the SDK does not resolve each one through its provider
  // chain (environment variables, then the shared config files). That chain
  // creates an error for every variable that is not set, about 5 ms of a
  // mount's start in a CPU profile. They are repeated rather than imported,
  // because importing store/s3.ts loads the S3 SDK, and the first exchange
  // is sent before that SDK loads.
  return new STSClient({
    region: config.region,
    endpoint: config.stsEndpoint,
    maxAttempts: 1,
    retryMode: 'standard',
    defaultsMode: 'standard',
    useFipsEndpoint: false,
    useDualstackEndpoint: false,
    authSchemePreference: ['sigv4'],
    userAgentAppId: 'bucketmount',
    // undici, as for the S3 client's reads. The first exchange then compiles the HTTP parser that the
    // first listing uses, and node:http is not loaded before the first large upload.
    requestHandler: new UndiciHttpHandler({ dispatcher: agentOptions({ connectTimeoutMs: timeoutMs, idleTimeoutMs: timeoutMs }) }),
  });
}

/**
 * Resolves when `client` next hands a request to its HTTP handler, after the
 * token file was read and the request serialized. The daemon waits for this
 * before it loads the storage SDK, which blocks the event loop, so that the
 * first exchange is already on the network while the SDK loads. The promise
 * stays pending when no request gets that far (a missing token file).
 */
export function nextRequestDispatched(client: STSClient): Promise<void> {
  const name = 'bucketmountRequestDispatched';
  return new Promise<void>((resolve) => {
    client.middlewareStack.add(
      (next) => (args) => {
        client.middlewareStack.remove(name);
        resolve();
        return next(args);
      },
      // The last middleware before the deserialize step, which calls the HTTP handler.
      { step: 'finalizeRequest', priority: 'low', name },
    );
  });
}

/**
 * The shape of the S3 client's `credentials` option when it is a function,
 * declared here so that no transitive SDK package has to be imported.
 */
export interface AwsCredentialIdentity {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
  expiration?: Date;
}
export type AwsCredentialIdentityProvider = () => Promise<AwsCredentialIdentity>;

export type AwsRefresherOptions = Omit<RefresherOptions<AwsCredentials>, 'name' | 'exchange' | 'describe'>;

/** Creates the refresher of one mount; call `start()` on it before use. */
export function createAwsWebIdentityCredentialSource(
  config: AwsWebIdentityConfig,
  options: AwsRefresherOptions,
  stsClient?: STSClient,
): CredentialRefresher<AwsCredentials> {
  return new CredentialRefresher<AwsCredentials>({
    ...options,
    name: 'aws-web-identity',
    exchange: createAwsWebIdentityExchange(config, stsClient),
    describe: (credentials) => ({ accessKeyId: credentials.accessKeyId, roleArn: config.roleArn }),
  });
}

/**
 * Adapts a credential source to the SDK's credential provider for S3 clients.
 * The SDK calls it for each request (see the file comment); it resolves at
 * once while the credentials are valid.
 */
export function awsCredentialProvider(source: CredentialSource<AwsCredentials>): AwsCredentialIdentityProvider {
  const provider = async (): Promise<AwsCredentialIdentity> => {
    const credentials = await source.current();
    return {
      accessKeyId: credentials.accessKeyId,
      secretAccessKey: credentials.secretAccessKey,
      sessionToken: credentials.sessionToken,
      expiration: credentials.expiration,
    };
  };
  // Read by @aws-sdk/core to skip wrapping the provider in its own cache.
  return Object.assign(provider, { memoized: true });
}

interface StsFailureContext {
  config: AwsWebIdentityConfig;
  endpoint: string;
  token: WebIdentityToken;
  now: Date;
}

/** Turns an error from `AssumeRoleWithWebIdentity` into a `StsExchangeError` with an explanation. */
export function explainStsFailure(error: unknown, context: StsFailureContext): CredentialError {
  const { config, endpoint, token } = context;

  const network = classifyNetworkFailure(error);
  if (network !== undefined) {
    const explanation =
      network.code === 'EndpointUnknownHost'
        ? `cannot reach the STS endpoint ${endpoint}: ${network.reason}; check the endpoint URL and DNS`
        : network.code === 'Aborted'
          ? `the request to the STS endpoint ${endpoint} was aborted`
          : `cannot reach the STS endpoint ${endpoint}: ${network.reason}; check that the endpoint URL is right and the service is running`;
    return new StsExchangeError(`AssumeRoleWithWebIdentity failed: ${explanation}`, endpoint, {
      code: network.code,
      retryable: network.code !== 'Aborted',
      cause: error,
      explanation,
    });
  }

  if (!(error instanceof STSServiceException)) {
    const message = redactSecret((error as Error)?.message ?? String(error), token.token);
    return new StsExchangeError(`AssumeRoleWithWebIdentity at ${endpoint} failed: ${message}`, endpoint, {
      code: 'Unknown',
      retryable: true,
      cause: error,
      explanation: `the call to the STS endpoint ${endpoint} failed: ${message}`,
    });
  }

  const serviceCode = error.name;
  const httpStatus = error.$metadata.httpStatusCode;
  const serverMessage = redactSecret(error.message, token.token);
  const tokenDescription = `the token in ${token.path} (${describeTokenClaims(token.claims)})`;
  const { code, explanation, retryable } = classifyStsRejection(normalizeServiceCode(serviceCode), httpStatus, serverMessage, context, tokenDescription);

  return new StsExchangeError(
    `AssumeRoleWithWebIdentity for role ${config.roleArn} at ${endpoint} failed: ${explanation} (STS error ${serviceCode}: ${serverMessage})`,
    endpoint,
    { code, retryable, serviceCode, httpStatus, cause: error, explanation },
  );
}

/**
 * Returns the STS error code without the `Exception` suffix that the SDK's
 * modeled exception classes add (`InvalidIdentityTokenException` for the
 * wire code `InvalidIdentityToken`), so both spellings map alike.
 */
function normalizeServiceCode(name: string): string {
  return name.endsWith('Exception') ? name.slice(0, -'Exception'.length) : name;
}

interface Classification {
  code: CredentialErrorCode;
  explanation: string;
  retryable: boolean;
}

/**
 * Maps an STS error response to a code and an explanation.
 *
 * AWS STS distinguishes failures by error code. MinIO's STS returns
 * `InvalidParameterValue` for all of them (expired token, wrong audience,
 * unknown signing key, unknown role), so for that code the token's own
 * claims are checked first and then MinIO's message is matched against the
 * few texts of the MinIO version the tests run; the message is quoted in any
 * case.
 */
function classifyStsRejection(
  serviceCode: string,
  httpStatus: number | undefined,
  serverMessage: string,
  context: StsFailureContext,
  tokenDescription: string,
): Classification {
  const { config, endpoint, token, now } = context;
  const expired = isTokenExpired(token.claims, now);
  const expiredExplanation = `${tokenDescription} expired at ${token.claims.expiresAt?.toISOString() ?? 'an unknown time'}; kubelet should have replaced it, so check that the projected token volume is still being refreshed`;
  const audienceMismatch =
    config.expectedAudience !== undefined && !token.claims.audience.includes(config.expectedAudience);
  const audienceExplanation = `the STS endpoint ${endpoint} rejected ${tokenDescription} because its audience does not match what the identity provider configuration expects; set the audience of the projected token to ${config.expectedAudience ?? 'the client id configured for the OIDC provider (sts.amazonaws.com on AWS)'}`;

  if (serviceCode === 'ExpiredToken' || expired) {
    return { code: 'TokenExpired', explanation: expiredExplanation, retryable: true };
  }

  switch (serviceCode) {
    case 'InvalidIdentityToken':
      if (audienceMismatch) {
        return { code: 'AudienceMismatch', explanation: audienceExplanation, retryable: false };
      }
      return {
        code: 'TokenRejected',
        explanation: `the STS endpoint ${endpoint} rejected ${tokenDescription}; check that an OIDC provider for this issuer exists in the account, that its audience list contains the token's audience, and that the issuer's JWKS is reachable`,
        retryable: false,
      };

    case 'IDPRejectedClaim':
      return {
        code: audienceMismatch ? 'AudienceMismatch' : 'TokenRejected',
        explanation: audienceMismatch
          ? audienceExplanation
          : `the identity provider configuration at ${endpoint} rejected the claims of ${tokenDescription}; check the audience and subject conditions in the trust policy of ${config.roleArn}`,
        retryable: false,
      };

    case 'AccessDenied':
      return {
        code: 'AccessDenied',
        explanation: `the STS endpoint ${endpoint} denied assuming ${config.roleArn} with ${tokenDescription}; check that the role exists and that its trust policy allows this issuer, audience and subject (sts:AssumeRoleWithWebIdentity)`,
        retryable: false,
      };

    case 'IDPCommunicationError':
      return {
        code: 'ServiceUnavailable',
        explanation: `the STS endpoint ${endpoint} could not fetch the signing keys of the issuer ${token.claims.issuer ?? '(none)'}; check that the issuer's discovery document and JWKS are publicly reachable`,
        retryable: true,
      };

    case 'InvalidParameterValue':
    case 'ValidationError':
      return classifyInvalidParameter(serverMessage, context, tokenDescription, audienceMismatch, audienceExplanation);

    case 'MalformedPolicyDocument':
    case 'PackedPolicyTooLarge':
    case 'RegionDisabledException':
      return {
        code: 'InvalidRequest',
        explanation: `the STS endpoint ${endpoint} rejected the request for ${config.roleArn}: ${serverMessage}`,
        retryable: false,
      };
  }

  if (serviceCode === 'Throttling' || (httpStatus !== undefined && httpStatus >= 500)) {
    return {
      code: 'ServiceUnavailable',
      explanation: `the STS endpoint ${endpoint} is unavailable or throttling (HTTP ${httpStatus ?? 'unknown'}); the exchange is retried with backoff`,
      retryable: true,
    };
  }

  return {
    code: 'Unknown',
    explanation: `the STS endpoint ${endpoint} rejected the exchange for ${config.roleArn} with ${tokenDescription}`,
    retryable: httpStatus === undefined || httpStatus >= 500,
  };
}

// NOTE: these patterns match messages of the MinIO version pinned in
// test/env/install.sh. A MinIO that words them differently falls through to
// the generic `TokenRejected` explanation, which still quotes the message.
const MINIO_ROLE_MESSAGE = /RoleArn/i;
const MINIO_AUDIENCE_MESSAGE = /`(aud|azp)` claim/;
const MINIO_UNKNOWN_KEY_MESSAGE = /no public key found for kid/i;
const MINIO_DURATION_MESSAGE = /invalid token expiry/i;

function classifyInvalidParameter(
  serverMessage: string,
  context: StsFailureContext,
  tokenDescription: string,
  audienceMismatch: boolean,
  audienceExplanation: string,
): Classification {
  const { config, endpoint } = context;

  if (MINIO_ROLE_MESSAGE.test(serverMessage)) {
    return {
      code: 'RoleNotFound',
      explanation: `the STS endpoint ${endpoint} does not know the role ${config.roleArn}; check the role ARN (MinIO prints its role ARNs at startup)`,
      retryable: false,
    };
  }
  if (audienceMismatch || MINIO_AUDIENCE_MESSAGE.test(serverMessage)) {
    return { code: 'AudienceMismatch', explanation: audienceExplanation, retryable: false };
  }
  if (MINIO_UNKNOWN_KEY_MESSAGE.test(serverMessage)) {
    return {
      code: 'UnknownSigningKey',
      explanation: `the STS endpoint ${endpoint} found no public key for the key id that signed ${tokenDescription}; check that the token comes from the issuer configured at the STS endpoint`,
      retryable: false,
    };
  }
  if (MINIO_DURATION_MESSAGE.test(serverMessage)) {
    return {
      code: 'InvalidRequest',
      explanation: `the STS endpoint ${endpoint} rejected the requested duration of ${config.durationSeconds ?? '(default)'} seconds; MinIO accepts 900 seconds up to 365 days`,
      retryable: false,
    };
  }
  return {
    code: 'TokenRejected',
    explanation: `the STS endpoint ${endpoint} rejected ${tokenDescription} for ${config.roleArn}`,
    retryable: false,
  };
}
