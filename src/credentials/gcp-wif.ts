/**
 * GCP credentials through Workload Identity Federation.
 *
 * The daemon is configured either with a provider resource name, a service
 * account email and the projected token file, from which it builds the
 * standard `external_account` configuration, or with a ready
 * `external_account` JSON file (`--gcp-credentials`,
 * GOOGLE_APPLICATION_CREDENTIALS), which is validated here field by field.
 *
 * One exchange runs google-auth-library's IdentityPoolClient on that
 * configuration: it reads the `credential_source.file` (again at every
 * exchange, because each exchange uses a new client and the library's file
 * supplier reads the file inside `getAccessToken`), posts it to STS (RFC 8693
 * token exchange), and calls IAM Credentials `generateAccessToken` of the
 * service account. The `CredentialRefresher` decides when exchanges run:
 * early in the background, one at a time, with backoff after failures.
 *
 * Failures become `CredentialError`s that name the step (`token-file`, `sts`,
 * `iam`) and explain the fix with the exact member, audience or command (see
 * gcp-explain.ts). Errors of the library are not kept as `cause`, because
 * their request configuration contains the subject token; a summary with the
 * HTTP status and the service's error code and description (with the token
 * removed) takes their place.
 */

import diagnosticsChannel from 'node:diagnostics_channel';
import { readFileSync } from 'node:fs';

// The client's own module, not the package index. The index also loads every other client of
// the library (OAuth2, JWT, Compute with gcp-metadata, AWS, downscoped and more). That cost
// about 25 ms more at each start (google-auth-library 10.9, Node 24.21, shared 2-core VM,
// median of 11 runs, an estimate). The package has no exports map, so Node resolves the path.
// NOTE: a release that moves this file or adds an exports map breaks this import.
import { IdentityPoolClient } from 'google-auth-library/build/src/auth/identitypoolclient.js';

import type { Logger } from '../observability/logger.js';
import { classifyNetworkFailure, CredentialError, IamCallError, isCredentialError, redactSecret, StsExchangeError } from './errors.js';
import {
  defaultProviderAudiences,
  explainAudienceMismatch,
  explainLifetimeRejected,
  explainMissingWorkloadIdentityUser,
  explainTokenExpired,
  explainUnknownProvider,
  explainUntrustedIssuer,
  parseProviderName,
  type WorkloadIdentityProvider,
} from './gcp-explain.js';
import { CredentialRefresher, type RefresherOptions } from './refresher.js';
import { isTokenExpired, readTokenFile, type WebIdentityToken } from './token-file.js';
import type { CredentialSource, GcpAccessToken } from './types.js';

export const DEFAULT_STS_TOKEN_URL = 'https://sts.googleapis.com/v1/token';
export const DEFAULT_IAM_ENDPOINT = 'https://iamcredentials.googleapis.com';
export const DEFAULT_TOKEN_LIFETIME_SECONDS = 3600;
export const JWT_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:jwt';
const ID_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:id_token';
/** generateAccessToken accepts lifetimes up to 12 hours (with the organization policy that allows more than one hour). */
const MAX_TOKEN_LIFETIME_SECONDS = 43_200;
const SERVICE_ACCOUNT_PATTERN = /^[^@\s/]+@[^@\s/]+$/;
const IMPERSONATION_URL_PATTERN = /\/v1\/projects\/-\/serviceAccounts\/([^/:]+):generateAccessToken$/;

/** The fields of an `external_account` configuration that this daemon uses. */
export interface ExternalAccountConfig {
  type: 'external_account';
  audience: string;
  subject_token_type: string;
  token_url: string;
  service_account_impersonation_url?: string;
  service_account_impersonation?: { token_lifetime_seconds?: number };
  credential_source: { file: string; format?: { type: 'text' | 'json'; subject_token_field_name?: string } };
  universe_domain?: string;
}

export interface GcpWifBuildOptions {
  /** `projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROVIDER`. */
  provider: string;
  serviceAccount: string;
  tokenFile: string;
  /** Full STS token URL; defaults to https://sts.googleapis.com/v1/token. */
  stsEndpoint?: string;
  /** IAM Credentials root URL; defaults to https://iamcredentials.googleapis.com. */
  iamEndpoint?: string;
  tokenLifetimeSeconds?: number;
}

/** The GCP credential settings of the command line. */
export interface GcpWifConfig {
  /** A ready external_account file; when given, `provider` and `serviceAccount` must be absent. */
  credentialsFile?: string;
  provider?: string;
  serviceAccount?: string;
  /** The projected token file; overrides `credential_source.file` of a credentials file. */
  tokenFile?: string;
  stsEndpoint?: string;
  iamEndpoint?: string;
  tokenLifetimeSeconds?: number;
}

/** Refresher settings such as the clock and `renewAtFraction`; the exchange and the name are set here. */
export type GcpWifSourceOptions = Omit<Partial<RefresherOptions<GcpAccessToken>>, 'exchange' | 'name' | 'logger'> & { logger: Logger };

/** An invalid option or configuration file; the message names the option, the value and the expected form. */
export class GcpConfigurationError extends CredentialError {
  override readonly name = 'GcpConfigurationError';

  constructor(explanation: string) {
    super(explanation, { code: 'InvalidRequest', step: 'refresher', explanation });
  }
}

/** Parses and checks `--gcp-wif-provider`, naming the missing part when it is malformed. */
export function parseWorkloadIdentityProvider(value: string, optionName = '--gcp-wif-provider'): WorkloadIdentityProvider {
  const expected = 'projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROVIDER';
  const parsed = parseProviderName(value);
  if (parsed === undefined) {
    const missing = ['projects/', '/locations/global/', '/workloadIdentityPools/', '/providers/'].find((part) => !value.includes(part));
    const hint = missing === undefined ? '' : ` (it has no "${missing}")`;
    throw new GcpConfigurationError(`invalid value "${value}" for ${optionName}${hint}: expected ${expected}`);
  }
  if (!/^\d+$/.test(parsed.projectNumber)) {
    throw new GcpConfigurationError(
      `invalid value "${value}" for ${optionName}: "${parsed.projectNumber}" is not a project number; ` +
        `workload identity providers are named by the numeric project number (gcloud projects describe ${parsed.projectNumber} --format='value(projectNumber)')`,
    );
  }
  return parsed;
}

function checkUrl(value: string, optionName: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new GcpConfigurationError(`invalid URL "${value}" for ${optionName}: expected an http or https URL`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new GcpConfigurationError(`invalid URL "${value}" for ${optionName}: expected an http or https URL`);
  }
  return value;
}

function checkLifetime(value: number, optionName: string): number {
  if (!Number.isInteger(value) || value < 1 || value > MAX_TOKEN_LIFETIME_SECONDS) {
    throw new GcpConfigurationError(`invalid token lifetime ${value} for ${optionName}: expected whole seconds from 1 to ${MAX_TOKEN_LIFETIME_SECONDS}`);
  }
  return value;
}

/** Builds the standard external_account configuration from a provider, a service account and a token file. */
export function buildExternalAccountConfig(options: GcpWifBuildOptions): ExternalAccountConfig {
  const provider = parseWorkloadIdentityProvider(options.provider);
  if (!SERVICE_ACCOUNT_PATTERN.test(options.serviceAccount)) {
    throw new GcpConfigurationError(`invalid value "${options.serviceAccount}" for --gcp-service-account: expected an email such as reader@PROJECT.iam.gserviceaccount.com`);
  }
  if (options.tokenFile === '') {
    throw new GcpConfigurationError('missing --token-file: give the path of the projected service-account token');
  }

  const tokenUrl = checkUrl(options.stsEndpoint ?? DEFAULT_STS_TOKEN_URL, '--gcp-sts-endpoint');
  const iamEndpoint = checkUrl(options.iamEndpoint ?? DEFAULT_IAM_ENDPOINT, '--gcp-iam-endpoint').replace(/\/+$/, '');
  const lifetime = checkLifetime(options.tokenLifetimeSeconds ?? DEFAULT_TOKEN_LIFETIME_SECONDS, '--token-lifetime');

  return {
    type: 'external_account',
    audience: `//iam.googleapis.com/${provider.name}`,
    subject_token_type: JWT_TOKEN_TYPE,
    token_url: tokenUrl,
    service_account_impersonation_url: `${iamEndpoint}/v1/projects/-/serviceAccounts/${options.serviceAccount}:generateAccessToken`,
    service_account_impersonation: { token_lifetime_seconds: lifetime },
    credential_source: { file: options.tokenFile, format: { type: 'text' } },
  };
}

/** Checks a parsed external_account JSON document; `source` names it in errors. */
export function validateExternalAccountConfig(document: unknown, source: string): ExternalAccountConfig {
  const fail = (problem: string): never => {
    throw new GcpConfigurationError(`invalid external_account configuration ${source}: ${problem}`);
  };
  if (typeof document !== 'object' || document === null || Array.isArray(document)) fail('expected a JSON object');
  const config = document as Record<string, unknown>;

  if (config.type !== 'external_account') {
    fail(`"type" is ${JSON.stringify(config.type)}, expected "external_account" (service account keys and user credentials are not accepted)`);
  }
  if (typeof config.audience !== 'string' || parseProviderName(config.audience) === undefined || !config.audience.startsWith('//iam.googleapis.com/')) {
    fail(
      `"audience" is ${JSON.stringify(config.audience)}, expected //iam.googleapis.com/projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROVIDER ` +
        '(workforce pools are not supported)',
    );
  }
  if (config.subject_token_type !== JWT_TOKEN_TYPE && config.subject_token_type !== ID_TOKEN_TYPE) {
    fail(`"subject_token_type" is ${JSON.stringify(config.subject_token_type)}, expected "${JWT_TOKEN_TYPE}" for an OIDC token`);
  }
  if (typeof config.token_url !== 'string') fail('"token_url" is missing; expected the STS token URL, https://sts.googleapis.com/v1/token');
  checkUrl(config.token_url as string, `"token_url" of ${source}`);

  const impersonationUrl = config.service_account_impersonation_url;
  if (impersonationUrl !== undefined) {
    if (typeof impersonationUrl !== 'string' || !IMPERSONATION_URL_PATTERN.test(impersonationUrl)) {
      fail(
        `"service_account_impersonation_url" is ${JSON.stringify(impersonationUrl)}, expected ` +
          'https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/EMAIL:generateAccessToken',
      );
    }
    checkUrl(impersonationUrl as string, `"service_account_impersonation_url" of ${source}`);
  }
  const impersonation = config.service_account_impersonation as { token_lifetime_seconds?: unknown } | undefined;
  if (impersonation?.token_lifetime_seconds !== undefined) {
    checkLifetime(Number(impersonation.token_lifetime_seconds), `"service_account_impersonation.token_lifetime_seconds" of ${source}`);
  }

  const credentialSource = config.credential_source as Record<string, unknown> | undefined;
  if (typeof credentialSource !== 'object' || credentialSource === null) {
    fail('"credential_source" is missing; expected {"file": "/path/of/the/projected/token"}');
  }
  const sourceKinds = ['url', 'executable', 'environment_id', 'certificate'].filter((kind) => credentialSource![kind] !== undefined);
  if (sourceKinds.length > 0 || typeof credentialSource!.file !== 'string' || credentialSource!.file === '') {
    fail(
      `"credential_source" ${sourceKinds.length > 0 ? `uses ${sourceKinds.join(', ')}` : 'has no "file"'}; ` +
        'only a file credential source is supported, because the daemon reads the projected token from its file: use {"file": "/path/of/the/token"}',
    );
  }
  const format = credentialSource!.format as { type?: unknown; subject_token_field_name?: unknown } | undefined;
  if (format !== undefined) {
    if (format.type !== 'text' && format.type !== 'json') fail(`"credential_source.format.type" is ${JSON.stringify(format.type)}, expected "text" or "json"`);
    if (format.type === 'json' && typeof format.subject_token_field_name !== 'string') {
      fail('"credential_source.format" is json but has no "subject_token_field_name"');
    }
  }
  if (config.universe_domain !== undefined && config.universe_domain !== 'googleapis.com') {
    fail(`"universe_domain" is ${JSON.stringify(config.universe_domain)}; only googleapis.com is supported`);
  }
  return config as unknown as ExternalAccountConfig;
}

/** Reads and validates an external_account JSON file; it is small and read once at startup, so synchronously. */
export function loadExternalAccountFile(path: string): ExternalAccountConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new GcpConfigurationError(`cannot read the GCP credentials file ${path} (--gcp-credentials or GOOGLE_APPLICATION_CREDENTIALS): ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
  let document: unknown;
  try {
    document = JSON.parse(text);
  } catch (error) {
    throw new GcpConfigurationError(`the GCP credentials file ${path} is not valid JSON: ${(error as Error).message}`);
  }
  return validateExternalAccountConfig(document, path);
}

/** Resolves the options into one validated configuration, applying explicit endpoints and the token file over a file's values. */
export function resolveExternalAccountConfig(options: GcpWifConfig): ExternalAccountConfig {
  if (options.credentialsFile === undefined) {
    if (options.provider === undefined) throw new GcpConfigurationError('missing --gcp-wif-provider: give projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROVIDER');
    if (options.serviceAccount === undefined) throw new GcpConfigurationError('missing --gcp-service-account: give the email of the service account to impersonate');
    if (options.tokenFile === undefined) throw new GcpConfigurationError('missing --token-file: give the path of the projected service-account token');
    return buildExternalAccountConfig({ ...options, provider: options.provider, serviceAccount: options.serviceAccount, tokenFile: options.tokenFile });
  }

  if (options.provider !== undefined || options.serviceAccount !== undefined) {
    throw new GcpConfigurationError('--gcp-credentials cannot be combined with --gcp-wif-provider or --gcp-service-account: give either the file or the two options');
  }
  const config = loadExternalAccountFile(options.credentialsFile);
  if (options.tokenFile !== undefined) config.credential_source = { file: options.tokenFile, format: { type: 'text' } };
  if (options.stsEndpoint !== undefined) config.token_url = checkUrl(options.stsEndpoint, '--gcp-sts-endpoint');
  if (options.iamEndpoint !== undefined && config.service_account_impersonation_url !== undefined) {
    const email = IMPERSONATION_URL_PATTERN.exec(config.service_account_impersonation_url)?.[1];
    config.service_account_impersonation_url = `${checkUrl(options.iamEndpoint, '--gcp-iam-endpoint').replace(/\/+$/, '')}/v1/projects/-/serviceAccounts/${email}:generateAccessToken`;
  }
  if (options.tokenLifetimeSeconds !== undefined && config.service_account_impersonation_url !== undefined) {
    config.service_account_impersonation = { token_lifetime_seconds: checkLifetime(options.tokenLifetimeSeconds, '--token-lifetime') };
  }
  return config;
}

/** Returns the email in an impersonation URL, if any. */
export function serviceAccountOf(config: ExternalAccountConfig): string | undefined {
  const url = config.service_account_impersonation_url;
  return url === undefined ? undefined : IMPERSONATION_URL_PATTERN.exec(url)?.[1];
}

interface LibraryErrorShape {
  response?: { status?: number; data?: unknown; config?: { url?: unknown } };
  config?: { url?: unknown };
  status?: number;
  code?: unknown;
}

/** Extracts the parts of a library error that are safe to keep: no request configuration, no token. */
function summarizeLibraryError(error: unknown, token: string | undefined): { status?: number; serviceCode?: string; description?: string; summary: Error } {
  const shape = (error ?? {}) as LibraryErrorShape;
  const status = shape.response?.status ?? (typeof shape.status === 'number' ? shape.status : undefined);
  const data = shape.response?.data as Record<string, unknown> | undefined;

  let serviceCode: string | undefined;
  let description: string | undefined;
  if (data !== undefined && typeof data === 'object') {
    if (typeof data.error === 'string') {
      // STS: {"error": "invalid_grant", "error_description": "..."}
      serviceCode = data.error;
      description = typeof data.error_description === 'string' ? data.error_description : undefined;
    } else if (typeof data.error === 'object' && data.error !== null) {
      // IAM: {"error": {"code": 403, "message": "...", "status": "PERMISSION_DENIED"}}
      const inner = data.error as { status?: unknown; message?: unknown };
      serviceCode = typeof inner.status === 'string' ? inner.status : undefined;
      description = typeof inner.message === 'string' ? inner.message : undefined;
    }
  }
  if (description !== undefined) description = redactSecret(description, token);

  const networkCode = typeof shape.code === 'string' ? ` (${shape.code})` : '';
  const summary = new Error(
    status === undefined
      ? `request failed before a response arrived${networkCode}`
      : `HTTP ${status}${serviceCode === undefined ? '' : ` ${serviceCode}`}${description === undefined ? '' : `: ${description}`}`,
  );
  summary.name = 'GcpServiceError';
  return { status, serviceCode, description, summary };
}

/** Returns the step whose endpoint a library error came from, by the URL of its request. */
function failedStep(error: unknown, config: ExternalAccountConfig): 'sts' | 'iam' {
  const shape = (error ?? {}) as LibraryErrorShape;
  const url = String(shape.response?.config?.url ?? shape.config?.url ?? '');
  if (config.service_account_impersonation_url !== undefined && url.startsWith(config.service_account_impersonation_url)) return 'iam';
  return 'sts';
}

/** Turns a failure of one exchange into a CredentialError with an explanation. */
export function explainExchangeFailure(error: unknown, config: ExternalAccountConfig, token: WebIdentityToken | undefined, now: Date): CredentialError {
  if (isCredentialError(error)) return error;

  const provider = parseProviderName(config.audience)!;
  const serviceAccount = serviceAccountOf(config) ?? '(none)';
  const step = failedStep(error, config);
  const { status, serviceCode, description, summary } = summarizeLibraryError(error, token?.token);
  const quoted = description === undefined ? '' : ` (${step === 'sts' ? 'STS' : 'IAM'} said: ${description})`;

  const network = classifyNetworkFailure(error);
  if (status === undefined) {
    const endpoint = step === 'sts' ? config.token_url : config.service_account_impersonation_url!;
    const explanation = `the ${step === 'sts' ? 'STS token endpoint' : 'IAM Credentials endpoint'} ${endpoint} could not be reached: ${network?.reason ?? summary.message}; check the endpoint URL and the network path to it`;
    const options = { code: network?.code ?? 'EndpointUnreachable', retryable: true, explanation, cause: summary } as const;
    return step === 'sts' ? new StsExchangeError(explanation, endpoint, options) : new IamCallError(explanation, endpoint, options);
  }

  if (status === 429 || status >= 500) {
    const endpoint = step === 'sts' ? config.token_url : config.service_account_impersonation_url!;
    const explanation = `${step === 'sts' ? 'STS' : 'IAM Credentials'} at ${endpoint} is unavailable (HTTP ${status}); the exchange is retried with backoff${quoted}`;
    const options = { code: 'ServiceUnavailable', retryable: true, httpStatus: status, serviceCode, explanation, cause: summary } as const;
    return step === 'sts' ? new StsExchangeError(explanation, endpoint, options) : new IamCallError(explanation, endpoint, options);
  }

  if (step === 'sts') {
    const claims = token?.claims;
    let code: CredentialError['code'] = 'TokenRejected';
    let explanation: string;
    if (serviceCode === 'invalid_target') {
      code = 'InvalidRequest';
      explanation = explainUnknownProvider(provider);
    } else if (serviceCode === 'invalid_grant' && claims !== undefined && isTokenExpired(claims, now)) {
      code = 'TokenExpired';
      explanation = explainTokenExpired(claims, token!.path, now);
    } else if (serviceCode === 'invalid_grant' && claims !== undefined && !claims.audience.some((value) => defaultProviderAudiences(provider).includes(value))) {
      // The provider may list other allowed audiences; without access to its configuration, a non-default audience is the likely cause.
      code = 'AudienceMismatch';
      explanation = explainAudienceMismatch(claims, provider);
    } else if (serviceCode === 'invalid_grant' && claims !== undefined) {
      explanation = explainUntrustedIssuer(claims, provider);
    } else {
      code = 'InvalidRequest';
      explanation = `STS rejected the token exchange for provider ${provider.name} (HTTP ${status}${serviceCode === undefined ? '' : ` ${serviceCode}`})`;
    }
    return new StsExchangeError(`STS token exchange failed: ${explanation}${quoted}`, config.token_url, {
      code,
      httpStatus: status,
      serviceCode,
      explanation: `${explanation}${quoted}`,
      cause: summary,
    });
  }

  const endpoint = config.service_account_impersonation_url!;
  let code: CredentialError['code'] = 'InvalidRequest';
  let explanation: string;
  if (status === 403) {
    code = 'AccessDenied';
    explanation = explainMissingWorkloadIdentityUser(provider, serviceAccount, token?.claims.subject);
  } else if (status === 400 && serviceCode === 'INVALID_ARGUMENT') {
    explanation = explainLifetimeRejected(serviceAccount, config.service_account_impersonation?.token_lifetime_seconds);
  } else if (status === 401) {
    code = 'TokenRejected';
    explanation = `IAM Credentials rejected the federated token from STS for ${serviceAccount}; check that ${config.token_url} and ${endpoint} belong to the same environment`;
  } else {
    explanation = `generateAccessToken for ${serviceAccount} failed (HTTP ${status}${serviceCode === undefined ? '' : ` ${serviceCode}`})`;
  }
  return new IamCallError(`service account impersonation failed: ${explanation}${quoted}`, endpoint, {
    code,
    httpStatus: status,
    serviceCode,
    explanation: `${explanation}${quoted}`,
    cause: summary,
  });
}

/** Variables from which gaxios 7 takes an HTTP proxy for its requests. */
const PROXY_VARIABLES = ['HTTPS_PROXY', 'https_proxy', 'HTTP_PROXY', 'http_proxy'] as const;

/**
 * Returns whether the exchange requests go through Node's built-in fetch: yes
 * unless an HTTP proxy variable is set in `environment`.
 *
 * google-auth-library 10 sends the STS and IAM requests through gaxios 7,
 * which imports node-fetch 3 for its first request unless it is given a fetch
 * function. The built-in fetch is loaded in any case, because gaxios 7 builds
 * the headers of every request with the global `Headers`. Without node-fetch,
 * the first exchange of a process took a median of about 75 ms against about
 * 82 ms (Node 24.21, shared 2-core VM, 9 runs each, an estimate). The built-in
 * fetch also reports each written request on a diagnostics channel, which
 * `nextTokenRequestSent` uses. gaxios sends requests to a proxy through an
 * `agent`, which node-fetch honours and the built-in fetch ignores, so with a
 * proxy variable set the exchange keeps node-fetch.
 */
export function exchangeUsesBuiltinFetch(environment: NodeJS.ProcessEnv = process.env): boolean {
  return !PROXY_VARIABLES.some((name) => environment[name]);
}

/** Creates the library's client for one exchange, sending through the built-in fetch where `exchangeUsesBuiltinFetch` allows. */
function createIdentityPoolClient(config: ExternalAccountConfig): IdentityPoolClient {
  const options = { ...config, credential_source: { ...config.credential_source } };
  if (!exchangeUsesBuiltinFetch()) return new IdentityPoolClient(options);

  const client = new IdentityPoolClient({ ...options, transporterOptions: { fetchImplementation: fetch } });
  // transporterOptions reach the IAM request only, because google-auth-library 10.9 gives its
  // STS client a gaxios instance of its own, so that instance gets the same default here. A
  // library version without these fields sends its STS requests through node-fetch, which also works.
  const stsTransporter = (client as unknown as { stsCredential?: { transporter?: { defaults?: { fetchImplementation?: typeof fetch } } } }).stsCredential?.transporter;
  if (stsTransporter?.defaults !== undefined) stsTransporter.defaults.fetchImplementation = fetch;
  return client;
}

/**
 * Performs one exchange: token file, STS, then generateAccessToken when the
 * configuration impersonates a service account.
 */
export async function exchangeGcpAccessToken(config: ExternalAccountConfig, signal?: AbortSignal, now: () => Date = () => new Date()): Promise<GcpAccessToken> {
  // The file is read here as well as by the library, to report a missing or
  // malformed file clearly and to explain STS errors from the token's claims.
  const token = await readTokenFile(config.credential_source.file, signal);

  // A new client per exchange: a client caches its token, and the refresher, not the library, decides when to renew.
  const client = createIdentityPoolClient(config);
  try {
    const response = await client.getAccessToken();
    const accessToken = response.token;
    if (typeof accessToken !== 'string' || accessToken === '') {
      throw new CredentialError('the GCP exchange returned no access token', {
        code: 'InvalidResponse',
        step: config.service_account_impersonation_url === undefined ? 'sts' : 'iam',
        retryable: true,
        explanation: 'the token service answered without an access token; this is a service error and the exchange is retried',
      });
    }
    const expiry = client.credentials.expiry_date;
    // NOTE: STS always sends expires_in; the one-hour fallback only covers a response without it.
    const expiration = new Date(typeof expiry === 'number' ? expiry : now().getTime() + DEFAULT_TOKEN_LIFETIME_SECONDS * 1000);
    return { accessToken, expiration };
  } catch (error) {
    throw explainExchangeFailure(error, config, token, now());
  }
}

/** The diagnostics channel on which the built-in fetch (undici) publishes each request whose body was written to its connection. */
const BODY_SENT_CHANNEL = 'undici:request:bodySent';

/** STS token URL of each source that `createGcpWifCredentialSource` created. */
const tokenUrls = new WeakMap<CredentialSource<GcpAccessToken>, URL>();

/**
 * Resolves when the next STS request of `source` has been written to its
 * connection. The daemon waits for this before it loads the storage client,
 * which blocks the event loop, so that the first exchange is on the network
 * while the client loads. The promise stays pending when no request gets that
 * far (a missing token file). It resolves at once when the exchange does not
 * use the built-in fetch (see `exchangeUsesBuiltinFetch`), because only the
 * built-in fetch reports its requests.
 */
export function nextTokenRequestSent(source: CredentialSource<GcpAccessToken>): Promise<void> {
  const tokenUrl = tokenUrls.get(source);
  return new Promise<void>((resolve) => {
    if (tokenUrl === undefined || !exchangeUsesBuiltinFetch()) {
      resolve();
      return;
    }

    const onBodySent = (message: unknown): void => {
      const request = (message as { request?: { origin?: unknown; path?: unknown } }).request;
      if (request?.origin !== tokenUrl.origin || typeof request.path !== 'string' || request.path.split('?')[0] !== tokenUrl.pathname) return;
      diagnosticsChannel.unsubscribe(BODY_SENT_CHANNEL, onBodySent);
      resolve();
    };
    diagnosticsChannel.subscribe(BODY_SENT_CHANNEL, onBodySent);
  });
}

/**
 * Creates the mount's GCP credential source. The configuration is validated
 * here (throwing `GcpConfigurationError`); nothing is sent until `start()`
 * performs the first exchange.
 */
export function createGcpWifCredentialSource(config: GcpWifConfig, options: GcpWifSourceOptions): CredentialSource<GcpAccessToken> {
  const resolved = resolveExternalAccountConfig(config);
  const serviceAccount = serviceAccountOf(resolved);
  const clock = options.clock;
  const now = clock === undefined ? () => new Date() : () => new Date(clock.now());

  options.logger.info(
    {
      audience: resolved.audience,
      serviceAccount,
      tokenFile: resolved.credential_source.file,
      tokenUrl: resolved.token_url,
      impersonationUrl: resolved.service_account_impersonation_url,
    },
    'GCP workload identity federation configured',
  );

  const source = new CredentialRefresher<GcpAccessToken>({
    ...options,
    name: 'gcp-wif',
    exchange: (signal) => exchangeGcpAccessToken(resolved, signal, now),
    describe: (credentials) => ({ serviceAccount, expiration: credentials.expiration.toISOString() }),
  });
  tokenUrls.set(source, new URL(resolved.token_url));
  return source;
}
