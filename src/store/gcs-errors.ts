/**
 * The one place where errors of the GCS JSON API become `StoreError`s.
 *
 * The decision uses the HTTP status and the first `errors[].reason` of the
 * JSON error body, or the Node.js error code of a failed connection, and
 * never the message text. The original error stays as `cause`, and the
 * `x-guploader-uploadid` response header, the request id that GCS support
 * requests, becomes `requestId`.
 */

import {
  AbortedError,
  AccessDeniedError,
  InvalidCredentialsError,
  InvalidRequestError,
  NoSuchBucketError,
  NotFoundError,
  PreconditionFailedError,
  StoreError,
  ThrottledError,
  TransientError,
  UNDICI_TRANSIENT_CODES,
  type StoreErrorContext,
} from './errors.js';

/** Raised by the store's auth adapter when no valid access token can be obtained. */
export class AccessTokenUnavailableError extends Error {
  override readonly name = 'AccessTokenUnavailableError';
}

/** Operation, bucket and key of a failed request; `bucketLevel` marks requests whose 404 means the bucket is missing. */
export interface GcsErrorContext {
  operation: string;
  bucket: string;
  key?: string;
  bucketLevel?: boolean;
}

/** Reasons GCS gives with 403 when a rate limit, not a permission, refused the request. */
const RATE_LIMIT_REASONS = new Set(['rateLimitExceeded', 'userRateLimitExceeded']);

/** Connection failures after which the same request may succeed. */
const TRANSIENT_NETWORK_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'ESOCKETTIMEDOUT',
  'EAI_AGAIN',
  'ENOTFOUND',
  'EHOSTUNREACH',
  'ENETUNREACH',
  ...UNDICI_TRANSIENT_CODES,
]);

interface HttpErrorShape {
  code?: unknown;
  errors?: Array<{ reason?: unknown }>;
  response?: { headers?: unknown; statusCode?: unknown };
  type?: unknown;
}

function headerOf(headers: unknown, name: string): string | undefined {
  if (headers === null || typeof headers !== 'object') return undefined;
  if (typeof (headers as { get?: unknown }).get === 'function') {
    return (headers as { get(name: string): string | null }).get(name) ?? undefined;
  }
  const value = (headers as Record<string, unknown>)[name];
  if (Array.isArray(value)) return typeof value[0] === 'string' ? value[0] : undefined;
  return typeof value === 'string' ? value : undefined;
}

/** Returns the HTTP status of a GCS API error, or undefined when no response arrived. */
export function httpStatusOf(error: unknown): number | undefined {
  const shape = error as HttpErrorShape | undefined;
  if (typeof shape?.code === 'number') return shape.code;
  if (typeof shape?.response?.statusCode === 'number') return shape.response.statusCode;
  return undefined;
}

/** Turns any rejection of a GCS request into a `StoreError`. */
export function storeErrorFromGcs(error: unknown, context: GcsErrorContext): StoreError {
  if (error instanceof StoreError) return error;

  const shape = (error ?? {}) as HttpErrorShape;
  const status = httpStatusOf(error);
  const reason = typeof shape.errors?.[0]?.reason === 'string' ? shape.errors[0].reason : undefined;
  const requestId = headerOf(shape.response?.headers, 'x-guploader-uploadid');
  const base: StoreErrorContext = {
    operation: context.operation,
    bucket: context.bucket,
    key: context.key,
    requestId,
    httpStatus: status,
    serviceCode: reason,
    cause: error,
  };
  const target = context.key === undefined ? `bucket ${context.bucket}` : `object ${context.key} in bucket ${context.bucket}`;

  if (error instanceof AccessTokenUnavailableError) {
    return new InvalidCredentialsError(`${context.operation} of ${target} has no valid access token: ${error.message}`, base);
  }
  if ((error as Error | undefined)?.name === 'AbortError') {
    return new AbortedError(`${context.operation} of ${target} was aborted`, base);
  }

  if (status === undefined) {
    const networkCode = typeof shape.code === 'string' ? shape.code : undefined;
    const message = `${context.operation} of ${target} failed before GCS sent a response (${networkCode ?? (error as Error | undefined)?.name ?? 'unknown error'})`;
    if (networkCode !== undefined && TRANSIENT_NETWORK_CODES.has(networkCode)) {
      return new TransientError(`${message}; the request may be retried`, { ...base, serviceCode: networkCode });
    }
    // node-fetch marks failed connections with type 'system'; everything else is unknown and also treated as transient.
    return new TransientError(message, { ...base, serviceCode: networkCode });
  }

  switch (status) {
    case 304:
    case 412:
      return new PreconditionFailedError(`${context.operation} of ${target} failed a precondition: the object changed or already exists (HTTP ${status})`, base);
    case 401:
      return new InvalidCredentialsError(`GCS rejected the access token for ${context.operation} of ${target} (HTTP 401): the credentials are invalid or expired`, base);
    case 403:
      if (reason !== undefined && RATE_LIMIT_REASONS.has(reason)) {
        return new ThrottledError(`GCS throttled ${context.operation} of ${target} (HTTP 403 ${reason})`, base);
      }
      return new AccessDeniedError(
        `GCS denied ${context.operation} of ${target} (HTTP 403${reason === undefined ? '' : ` ${reason}`}): grant the service account roles/storage.objectAdmin (or roles/storage.objectViewer for reads) on gs://${context.bucket}`,
        base,
      );
    case 404:
      if (context.bucketLevel === true) {
        return new NoSuchBucketError(`bucket ${context.bucket} does not exist (HTTP 404): check the bucket name`, base);
      }
      return new NotFoundError(`${target} not found (HTTP 404)`, base);
    case 408:
      return new TransientError(`GCS timed out ${context.operation} of ${target} (HTTP 408)`, base);
    case 429:
      return new ThrottledError(`GCS throttled ${context.operation} of ${target} (HTTP 429)`, base);
    case 416:
      return new InvalidRequestError(`the byte range of ${context.operation} of ${target} is not satisfiable (HTTP 416)`, { ...base, serviceCode: reason ?? 'InvalidRange' });
    default:
      if (status >= 500) {
        return new TransientError(`GCS failed ${context.operation} of ${target} (HTTP ${status})`, base);
      }
      return new InvalidRequestError(`GCS rejected ${context.operation} of ${target} as invalid (HTTP ${status}${reason === undefined ? '' : ` ${reason}`})`, base);
  }
}
