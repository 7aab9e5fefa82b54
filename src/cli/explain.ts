/**
 * Plain-language explanations of failures for operators, used by `check`
 * and by `mount` before it mounts.
 *
 * Credential errors carry their own explanation. Store errors are explained
 * here from their typed code and the bucket location, because only the CLI
 * knows which URL, endpoint and identity the operator configured.
 */

import { isCredentialError } from '../credentials/errors.js';
import { explainBucketAccessDenied } from '../credentials/gcp-explain.js';
import { StoreError } from '../store/errors.js';
import type { CommonConfig } from './config.js';

function identityOf(config: CommonConfig): string {
  const credentials = config.credentials;
  if (credentials.kind === 'aws-web-identity') return `role ${credentials.roleArn}`;
  if (credentials.serviceAccount !== undefined) return `service account ${credentials.serviceAccount}`;
  return `the identity in ${credentials.credentialsFile}`;
}

function endpointOf(config: CommonConfig): string {
  if (config.endpoint !== undefined) return config.endpoint;
  return config.location.scheme === 's3' ? `the AWS S3 endpoint of region ${config.region}` : 'the GCS endpoint';
}

/** Names the network failure behind a transient store error, if there is one. */
function networkCodeOf(error: unknown): string | undefined {
  let current: unknown = error;
  for (let depth = 0; depth < 6 && current !== undefined && current !== null; depth += 1) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string' && /^E[A-Z_]+$/.test(code) && code !== 'EUSAGE') return code;
    const nested = (current as { errors?: unknown[] }).errors;
    if (Array.isArray(nested) && nested.length > 0) {
      current = nested[0];
      continue;
    }
    current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}

/** Explains a GCS 403: the role to grant on the bucket, with the gcloud command when the service account is known. */
function explainGcsAccessDenied(error: StoreError, config: CommonConfig): string {
  const bucket = config.location.bucket;
  const credentials = config.credentials;
  if (credentials.kind !== 'gcp-wif' || credentials.serviceAccount === undefined) {
    return `${identityOf(config)} is not allowed to ${error.operation} in bucket "${bucket}": grant it roles/storage.objectAdmin (or roles/storage.objectViewer for read-only mounts) on gs://${bucket}`;
  }
  // `check` writes a test object, so only a read-only mount can do with the viewer role.
  const write = !('readOnly' in config && config.readOnly === true);
  return `the ${error.operation} request to bucket "${bucket}" was denied: ${explainBucketAccessDenied(credentials.serviceAccount, bucket, write)}`;
}

export function explainStoreError(error: StoreError, config: CommonConfig): string {
  const bucket = config.location.bucket;
  const url = config.location.url;
  const identity = identityOf(config);

  switch (error.code) {
    case 'NoSuchBucket':
      return `bucket "${bucket}" does not exist at ${endpointOf(config)}: check the bucket name in ${url}${config.location.scheme === 's3' ? ' and the --region' : ''}`;
    case 'NotFound':
      return `${error.operation} of ${error.key ?? bucket} returned not found: bucket "${bucket}" may not exist at ${endpointOf(config)}`;
    case 'AccessDenied':
      return config.location.scheme === 's3'
        ? `${identity} is not allowed to ${error.operation} in bucket "${bucket}": grant it s3:ListBucket on arn:aws:s3:::${bucket} and s3:GetObject, s3:PutObject, s3:DeleteObject on arn:aws:s3:::${bucket}/*`
        : explainGcsAccessDenied(error, config);
    case 'InvalidCredentials':
      return `${endpointOf(config)} rejected the credentials of ${identity} (${error.serviceCode ?? 'invalid credentials'}): check that --endpoint is the storage service that trusts this identity`;
    case 'Transient': {
      const network = networkCodeOf(error);
      if (network !== undefined) return `cannot reach ${endpointOf(config)} (${network}): check --endpoint and the network path to it`;
      return `${endpointOf(config)} failed to ${error.operation} (HTTP ${error.httpStatus ?? 'error'}${error.requestId ? `, request id ${error.requestId}` : ''}): retry later`;
    }
    case 'Throttled':
      return `${endpointOf(config)} is throttling requests to bucket "${bucket}" (HTTP ${error.httpStatus ?? 503}): retry later`;
    case 'PreconditionFailed':
      return `an object in bucket "${bucket}" changed during ${error.operation}: retry`;
    case 'InvalidRequest':
      return `${endpointOf(config)} rejected the ${error.operation} request as invalid (${error.serviceCode ?? `HTTP ${error.httpStatus}`}): ${error.message}`;
    case 'Aborted':
      return `${error.operation} was cancelled`;
    default: {
      const unhandled: never = error.code;
      return `${String(unhandled)}: ${error.message}`;
    }
  }
}

/** Explains any failure in one line: credential and store errors by their type, others by their message. */
export function explainFailure(error: unknown, config: CommonConfig): string {
  if (isCredentialError(error)) return error.explanation;
  if (error instanceof StoreError) return explainStoreError(error, config);
  if (error instanceof Error) return error.message;
  return String(error);
}
