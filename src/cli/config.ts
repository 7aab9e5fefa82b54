/**
 * Turns command-line arguments and environment variables into a validated
 * configuration.
 *
 * Precedence, highest first: the command-line option, `BUCKETMOUNT_<NAME>`,
 * the standard variable named by the option's `fallbackEnvironment`, then the
 * declared default. Every invalid value raises `UsageError`, whose message
 * names the option, the value and the fix. The CLI prints it on one line and
 * exits with status 2.
 */

import { isIP } from 'node:net';
import os from 'node:os';
import { parseArgs } from 'node:util';

import { OPTIONS, environmentVariableOf, type CommandName, type OptionDeclaration } from './options.js';

export class UsageError extends Error {
  override readonly name = 'UsageError';
  readonly code = 'EUSAGE';
}

export interface BucketLocation {
  scheme: 's3' | 'gs';
  bucket: string;
  /** Key prefix of the mounted directory: '' or ending with '/'. */
  prefix: string;
  /** The URL as the user typed it, for messages. */
  url: string;
}

export interface AwsCredentialConfig {
  kind: 'aws-web-identity';
  tokenFile: string;
  roleArn: string;
  roleSessionName: string;
  stsEndpoint?: string;
  durationSeconds?: number;
}

export interface GcpCredentialConfig {
  kind: 'gcp-wif';
  /** Either a ready external_account file, or a provider and service account with a token file. */
  credentialsFile?: string;
  provider?: string;
  serviceAccount?: string;
  tokenFile?: string;
  stsEndpoint?: string;
  iamEndpoint?: string;
  tokenLifetimeSeconds: number;
}

export interface CommonConfig {
  location: BucketLocation;
  endpoint?: string;
  region: string;
  pathStyle: boolean;
  credentials: AwsCredentialConfig | GcpCredentialConfig;
  logLevel: string;
}

export interface MountConfig extends CommonConfig {
  mountpoint: string;
  readOnly: boolean;
  uid: number;
  gid: number;
  fileMode: number;
  dirMode: number;
  allowOther: boolean;
  metadataTtlSeconds: number;
  refreshFraction: number;
  blockSize: number;
  maxReadahead: number;
  /** Explicit --memory-limit in bytes; undefined lets the mount derive it from the container limit. */
  memoryLimit: number | undefined;
  partSize: number;
  uploadConcurrency: number;
  spillDirectory?: string;
  requestTimeoutSeconds: number;
  shutdownTimeoutSeconds: number;
  /** Incomplete multipart uploads older than this are aborted at start. */
  staleUploadAgeSeconds: number;
  /** Port of the metrics and health endpoint; 0 when it is off. */
  metricsPort: number;
  metricsAddress: string;
  /** Unix socket of a helper that sends a mounted /dev/fuse descriptor; the mount point is then only shown in messages. */
  fuseFdSocket?: string;
  fuseFdTimeoutSeconds: number;
}

export type CheckConfig = CommonConfig;

type RawValues = Map<string, string | boolean>;
/** The environment variable each value came from; absent for command-line values and defaults. */
type ValueOrigins = Map<string, string>;

/** Parses the arguments after the command name into positionals and raw option values. */
function parseCommandLine(command: CommandName, argv: string[], environment: NodeJS.ProcessEnv): { positionals: string[]; values: RawValues; origins: ValueOrigins } {
  const declarations = OPTIONS.filter((option) => option.commands.includes(command));
  const parseOptions: Record<string, { type: 'string' | 'boolean' }> = {};
  for (const option of declarations) {
    parseOptions[option.name] = { type: option.type === 'boolean' ? 'boolean' : 'string' };
  }

  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: parseOptions, allowPositionals: true, strict: true });
  } catch (error) {
    throw new UsageError(describeParseError(error as NodeJS.ErrnoException, command));
  }

  const values: RawValues = new Map();
  const origins: ValueOrigins = new Map();
  for (const option of declarations) {
    const fromCommandLine = (parsed.values as Record<string, string | boolean | undefined>)[option.name];
    const fromEnvironment = environment[environmentVariableOf(option.name)];
    const fromFallback = option.fallbackEnvironment ? environment[option.fallbackEnvironment] : undefined;

    if (fromCommandLine !== undefined) {
      values.set(option.name, fromCommandLine);
    } else if (fromEnvironment !== undefined && fromEnvironment !== '') {
      values.set(option.name, option.type === 'boolean' ? parseBooleanVariable(option, fromEnvironment) : fromEnvironment);
      origins.set(option.name, environmentVariableOf(option.name));
    } else if (fromFallback !== undefined && fromFallback !== '') {
      values.set(option.name, fromFallback);
      origins.set(option.name, option.fallbackEnvironment as string);
    } else if (option.defaultValue !== undefined) {
      values.set(option.name, option.defaultValue);
    }
  }

  return { positionals: parsed.positionals, values, origins };
}

/** Rewrites node:util parseArgs errors, which name no fix, in the CLI's own form. */
function describeParseError(error: NodeJS.ErrnoException, command: CommandName): string {
  const option = /'(-{1,2}[^' ]+)/.exec(error.message)?.[1] ?? 'an option';
  const help = `run "bucketmount ${command} --help" for the list of options`;

  switch (error.code) {
    case 'ERR_PARSE_ARGS_UNKNOWN_OPTION':
      return `unknown option ${option}: ${help}`;
    case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE':
      if (/does not take an argument/.test(error.message)) return `${option} takes no value: give it alone to turn it on`;
      if (/ambiguous/.test(error.message)) return `missing value for ${option}: a value that starts with "-" must be written as ${option}=VALUE`;
      return `missing value for ${option}: write ${option} VALUE, ${help}`;
    default:
      return `${error.message.split('\n')[0]}: ${help}`;
  }
}

/**
 * Names the environment variable in a value error when the value came from
 * one, so that an operator who set BUCKETMOUNT_METADATA_TTL is not told to
 * fix a --metadata-ttl they never typed.
 */
function withValueOrigins<T>(origins: ValueOrigins, build: () => T): T {
  try {
    return build();
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    const rewritten = error.message.replace(/for --([a-z0-9-]+):/, (match, name: string) => {
      const origin = origins.get(name);
      return origin === undefined ? match : `for ${origin} (option --${name}):`;
    });
    throw new UsageError(rewritten, { cause: error });
  }
}

function parseBooleanVariable(option: OptionDeclaration, text: string): boolean {
  const normalized = text.trim().toLowerCase();
  if (['1', 'true', 'yes', 'on'].includes(normalized)) return true;
  if (['0', 'false', 'no', 'off'].includes(normalized)) return false;
  throw new UsageError(`invalid value "${text}" for ${environmentVariableOf(option.name)}: use true or false`);
}

const SIZE_UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1024,
  kb: 1000,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1000 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1000 ** 3,
  gib: 1024 ** 3,
  t: 1024 ** 4,
  tb: 1000 ** 4,
  tib: 1024 ** 4,
};

/** Parses sizes such as `8MiB`, `512k` or `1048576` into bytes. */
export function parseSize(optionName: string, text: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  const unit = match?.[2]?.toLowerCase() ?? '';
  const multiplier = SIZE_UNITS[unit];
  if (!match || multiplier === undefined) {
    throw new UsageError(`invalid size "${text}" for --${optionName}: use a number of bytes with an optional unit such as 512KiB, 8MiB or 1GiB`);
  }
  return Math.round(Number(match[1]) * multiplier);
}

/** Parses durations such as `90`, `90s`, `15m` or `1h` into seconds. */
export function parseDuration(optionName: string, text: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(s|m|h)?\s*$/.exec(text);
  if (!match) {
    throw new UsageError(`invalid duration "${text}" for --${optionName}: use a number of seconds, optionally with s, m or h, such as 90, 15m or 1h`);
  }
  const secondsPerUnit: Record<string, number> = { h: 3600, m: 60, s: 1 };
  return Number(match[1]) * (secondsPerUnit[match[2] ?? 's'] ?? 1);
}

function parseInteger(optionName: string, text: string, minimum: number, maximum: number): number {
  if (!/^\s*\d+\s*$/.test(text) || Number(text) < minimum || Number(text) > maximum) {
    throw new UsageError(`invalid value "${text}" for --${optionName}: use a whole number from ${minimum} to ${maximum}`);
  }
  return Number(text);
}

function parseMode(optionName: string, text: string): number {
  if (!/^0?[0-7]{1,4}$/.test(text.trim())) {
    throw new UsageError(`invalid mode "${text}" for --${optionName}: use octal permission bits such as 0644 or 0755`);
  }
  return parseInt(text.trim(), 8);
}

function parseAddress(optionName: string, text: string): string {
  const address = text.trim();
  if (isIP(address) === 0) {
    throw new UsageError(`invalid address "${text}" for --${optionName}: use an IP address such as 127.0.0.1, 0.0.0.0 or ::`);
  }
  return address;
}

function parseUrlOption(optionName: string, text: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new UsageError(`invalid URL "${text}" for --${optionName}: use an absolute http:// or https:// URL such as https://s3.example.com`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new UsageError(`invalid URL "${text}" for --${optionName}: the scheme must be http or https, not ${url.protocol.replace(':', '')}`);
  }
  return text.replace(/\/+$/, '');
}

// S3 bucket names: 3 to 63 lowercase letters, digits, dots and hyphens.
const S3_BUCKET = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;
// GCS also allows underscores, and names with dots of up to 222 characters.
const GCS_BUCKET = /^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$/;

/** Parses `s3://BUCKET[/PREFIX]` or `gs://BUCKET[/PREFIX]`. */
export function parseBucketUrl(text: string): BucketLocation {
  const match = /^(s3|gs):\/\/([^/]*)(?:\/(.*))?$/.exec(text);
  if (!match) {
    throw new UsageError(`invalid bucket URL "${text}": use s3://BUCKET[/PREFIX] or gs://BUCKET[/PREFIX]`);
  }

  const scheme = match[1] as 's3' | 'gs';
  const bucket = match[2] ?? '';
  const pattern = scheme === 's3' ? S3_BUCKET : GCS_BUCKET;
  if (!pattern.test(bucket) || bucket.includes('..')) {
    throw new UsageError(
      `invalid bucket name "${bucket}" in "${text}": bucket names are 3 to 63 lowercase letters, digits, dots and hyphens` +
        (scheme === 'gs' ? ' (GCS also allows underscores)' : ''),
    );
  }

  const rawPrefix = (match[3] ?? '').replace(/\/+$/, '');
  if (rawPrefix !== '') {
    const segments = rawPrefix.split('/');
    const invalid = segments.find((segment) => segment === '' || segment === '.' || segment === '..' || segment.includes('\0'));
    if (invalid !== undefined) {
      throw new UsageError(`invalid prefix "${rawPrefix}" in "${text}": a prefix cannot contain empty, "." or ".." segments`);
    }
  }

  return { scheme, bucket, prefix: rawPrefix === '' ? '' : `${rawPrefix}/`, url: text };
}

function requireValue(values: RawValues, name: string, fix: string): string {
  const value = values.get(name);
  if (typeof value !== 'string' || value === '') {
    throw new UsageError(`missing --${name}: ${fix}`);
  }
  return value;
}

function optionalString(values: RawValues, name: string): string | undefined {
  const value = values.get(name);
  return typeof value === 'string' && value !== '' ? value : undefined;
}

function optionalUrl(values: RawValues, name: string): string | undefined {
  const value = optionalString(values, name);
  return value === undefined ? undefined : parseUrlOption(name, value);
}

// The region field is empty on AWS and holds the region on MinIO (arn:minio:iam:REGION::role/ID).
const ROLE_ARN = /^arn:[a-z0-9-]+:iam:[a-z0-9-]*:\d*:role\/[\w+=,.@\/-]+$/;
const GCP_PROVIDER = /^projects\/(\d+)\/locations\/global\/workloadIdentityPools\/([a-z0-9-]{4,32})\/providers\/([a-z0-9-]{4,32})$/;
const SERVICE_ACCOUNT_EMAIL = /^[a-z][a-z0-9-]{4,28}[a-z0-9]@[a-z0-9-]+\.iam\.gserviceaccount\.com$/;

function buildAwsCredentials(values: RawValues): AwsCredentialConfig {
  const tokenFile = requireValue(values, 'token-file', 'give the path of the projected service-account token with --token-file or AWS_WEB_IDENTITY_TOKEN_FILE');
  const roleArn = requireValue(values, 'role-arn', 'give the ARN of the role to assume with --role-arn or AWS_ROLE_ARN, such as arn:aws:iam::123456789012:role/sandbox-data');
  if (!ROLE_ARN.test(roleArn)) {
    throw new UsageError(`invalid role ARN "${roleArn}" for --role-arn: use the form arn:aws:iam::ACCOUNT:role/NAME`);
  }

  const sessionName = optionalString(values, 'role-session-name') ?? `bucketmount-${os.hostname()}`.slice(0, 64);
  if (!/^[\w+=,.@-]{2,64}$/.test(sessionName)) {
    throw new UsageError(`invalid session name "${sessionName}" for --role-session-name: use 2 to 64 letters, digits or +=,.@_- characters`);
  }

  const duration = optionalString(values, 'credential-duration');
  const durationSeconds = duration === undefined ? undefined : parseDuration('credential-duration', duration);
  if (durationSeconds !== undefined && (durationSeconds < 900 || durationSeconds > 43_200)) {
    throw new UsageError(`invalid value "${duration}" for --credential-duration: AWS STS accepts 900 to 43200 seconds`);
  }

  return {
    kind: 'aws-web-identity',
    tokenFile,
    roleArn,
    roleSessionName: sessionName,
    stsEndpoint: optionalUrl(values, 'sts-endpoint'),
    durationSeconds,
  };
}

function buildGcpCredentials(values: RawValues, environment: NodeJS.ProcessEnv): GcpCredentialConfig {
  const provider = optionalString(values, 'gcp-wif-provider');
  const serviceAccount = optionalString(values, 'gcp-service-account');
  const lifetimeText = values.get('token-lifetime') as string;
  const tokenLifetimeSeconds = parseDuration('token-lifetime', lifetimeText);
  // Below 30 s the renewal at 80 % of the lifetime would leave too little room for the exchange itself.
  if (tokenLifetimeSeconds < 30 || tokenLifetimeSeconds > 43_200) {
    throw new UsageError(`invalid value "${lifetimeText}" for --token-lifetime: use 30 to 43200 seconds (GCP allows up to 43200 for service accounts with an extended lifetime policy, 3600 otherwise)`);
  }

  const common = {
    kind: 'gcp-wif' as const,
    stsEndpoint: optionalUrl(values, 'gcp-sts-endpoint'),
    iamEndpoint: optionalUrl(values, 'gcp-iam-endpoint'),
    tokenLifetimeSeconds,
  };

  if (provider !== undefined || serviceAccount !== undefined) {
    if (provider === undefined) {
      throw new UsageError('missing --gcp-wif-provider: give the provider as projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROVIDER');
    }
    if (!GCP_PROVIDER.test(provider)) {
      throw new UsageError(
        `invalid provider "${provider}" for --gcp-wif-provider: use projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROVIDER, with the project number, not its id`,
      );
    }
    if (serviceAccount === undefined) {
      throw new UsageError('missing --gcp-service-account: give the email of the service account to impersonate, such as reader@PROJECT.iam.gserviceaccount.com');
    }
    if (!SERVICE_ACCOUNT_EMAIL.test(serviceAccount)) {
      throw new UsageError(`invalid service account "${serviceAccount}" for --gcp-service-account: use an email such as reader@PROJECT.iam.gserviceaccount.com`);
    }
    const tokenFile = requireValue(values, 'token-file', 'give the path of the projected service-account token with --token-file');
    return { ...common, provider, serviceAccount, tokenFile };
  }

  const credentialsFile = optionalString(values, 'gcp-credentials') ?? environment.GOOGLE_APPLICATION_CREDENTIALS;
  if (credentialsFile === undefined) {
    throw new UsageError('missing GCP credentials: give --gcp-wif-provider, --gcp-service-account and --token-file, or --gcp-credentials FILE with an external_account configuration');
  }
  return { ...common, credentialsFile, tokenFile: optionalString(values, 'token-file') };
}

function buildCommon(location: BucketLocation, values: RawValues, environment: NodeJS.ProcessEnv): CommonConfig {
  const endpoint = optionalUrl(values, 'endpoint');
  const logLevel = values.get('log-level') as string;
  const levelOption = OPTIONS.find((option) => option.name === 'log-level');
  if (!levelOption?.choices?.includes(logLevel)) {
    throw new UsageError(`invalid value "${logLevel}" for --log-level: use one of ${levelOption?.choices?.join(', ')}`);
  }

  const credentials = location.scheme === 's3' ? buildAwsCredentials(values) : buildGcpCredentials(values, environment);
  const pathStyle = values.get('path-style') === true || endpoint !== undefined;

  return { location, endpoint, region: values.get('region') as string, pathStyle, credentials, logLevel };
}

export function parseCheckArguments(argv: string[], environment: NodeJS.ProcessEnv = process.env): CheckConfig {
  const { positionals, values, origins } = parseCommandLine('check', argv, environment);
  if (positionals.length !== 1) {
    throw new UsageError(`expected one bucket URL, got ${positionals.length} arguments: run "bucketmount check s3://BUCKET[/PREFIX] [options]"`);
  }
  return withValueOrigins(origins, () => buildCommon(parseBucketUrl(positionals[0] as string), values, environment));
}

export function parseMountArguments(argv: string[], environment: NodeJS.ProcessEnv = process.env): MountConfig {
  const { positionals, values, origins } = parseCommandLine('mount', argv, environment);
  if (positionals.length !== 2) {
    throw new UsageError(`expected a bucket URL and a mount point, got ${positionals.length} arguments: run "bucketmount mount s3://BUCKET[/PREFIX] MOUNTPOINT [options]"`);
  }
  const location = parseBucketUrl(positionals[0] as string);

  // Invalid values are reported before missing credential options, so one fix at a time works.
  const mountValues = withValueOrigins(origins, () => parseMountValues(values));
  const common = withValueOrigins(origins, () => buildCommon(location, values, environment));
  return { ...common, mountpoint: positionals[1] as string, ...mountValues };
}

/** Parses the options only `mount` takes. */
function parseMountValues(values: RawValues): Omit<MountConfig, keyof CommonConfig | 'mountpoint'> {
  const get = (name: string): string => values.get(name) as string;

  const refreshFraction = Number(get('refresh-fraction'));
  if (!Number.isFinite(refreshFraction) || refreshFraction < 0.1 || refreshFraction > 0.95) {
    throw new UsageError(`invalid value "${get('refresh-fraction')}" for --refresh-fraction: use a number from 0.1 to 0.95, such as 0.8`);
  }

  const blockSize = parseSize('block-size', get('block-size'));
  if (blockSize < 64 * 1024 || blockSize > 256 * 1024 * 1024) {
    throw new UsageError(`invalid value "${get('block-size')}" for --block-size: use 64KiB to 256MiB`);
  }
  const partSize = parseSize('part-size', get('part-size'));
  if (partSize < 5 * 1024 * 1024 || partSize > 5 * 1024 ** 3) {
    throw new UsageError(`invalid value "${get('part-size')}" for --part-size: multipart parts must be 5MiB to 5GiB`);
  }

  const uidText = values.get('uid');
  const gidText = values.get('gid');

  return {
    readOnly: values.get('read-only') === true,
    uid: typeof uidText === 'string' ? parseInteger('uid', uidText, 0, 2 ** 32 - 2) : process.getuid?.() ?? 0,
    gid: typeof gidText === 'string' ? parseInteger('gid', gidText, 0, 2 ** 32 - 2) : process.getgid?.() ?? 0,
    fileMode: parseMode('file-mode', get('file-mode')),
    dirMode: parseMode('dir-mode', get('dir-mode')),
    allowOther: values.get('allow-other') === true,
    metadataTtlSeconds: parseDuration('metadata-ttl', get('metadata-ttl')),
    refreshFraction,
    blockSize,
    maxReadahead: parseSize('max-readahead', get('max-readahead')),
    memoryLimit: optionalString(values, 'memory-limit') === undefined ? undefined : parseSize('memory-limit', get('memory-limit')),
    partSize,
    uploadConcurrency: parseInteger('upload-concurrency', get('upload-concurrency'), 1, 64),
    spillDirectory: optionalString(values, 'spill-dir'),
    requestTimeoutSeconds: parseDuration('request-timeout', get('request-timeout')),
    shutdownTimeoutSeconds: parseDuration('shutdown-timeout', get('shutdown-timeout')),
    staleUploadAgeSeconds: parseDuration('stale-upload-age', get('stale-upload-age')),
    metricsPort: optionalString(values, 'metrics-port') === undefined ? 0 : parseInteger('metrics-port', get('metrics-port'), 0, 65_535),
    metricsAddress: parseAddress('metrics-address', get('metrics-address')),
    fuseFdSocket: optionalString(values, 'fuse-fd-socket'),
    fuseFdTimeoutSeconds: parseDuration('fuse-fd-timeout', get('fuse-fd-timeout')),
  };
}
