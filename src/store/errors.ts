/**
 * The closed set of errors that an `ObjectStore` may reject with.
 *
 * Each backend turns its SDK's errors into one of these classes at the store
 * edge, from HTTP status codes and service error codes (never from message
 * text), and keeps the original error as `cause`. The filesystem maps them to
 * errno values in `src/fs/errno.ts`.
 */

export type StoreErrorCode =
  | 'NotFound'
  | 'AccessDenied'
  | 'PreconditionFailed'
  | 'Throttled'
  | 'Transient'
  | 'InvalidCredentials'
  | 'InvalidRequest'
  | 'NoSuchBucket'
  | 'Aborted';

export interface StoreErrorContext {
  operation: string;
  bucket: string;
  key?: string;
  requestId?: string;
  httpStatus?: number;
  /** The service's own error code, such as `SlowDown` or `AccessDenied`. */
  serviceCode?: string;
  cause?: unknown;
}

export abstract class StoreError extends Error {
  abstract override readonly name: string;
  abstract readonly code: StoreErrorCode;
  readonly operation: string;
  readonly bucket: string;
  readonly key: string | undefined;
  readonly requestId: string | undefined;
  readonly httpStatus: number | undefined;
  readonly serviceCode: string | undefined;

  constructor(message: string, context: StoreErrorContext) {
    super(message, { cause: context.cause });
    this.operation = context.operation;
    this.bucket = context.bucket;
    this.key = context.key;
    this.requestId = context.requestId;
    this.httpStatus = context.httpStatus;
    this.serviceCode = context.serviceCode;
  }

  /** Whether repeating the same request may succeed. */
  get retryable(): boolean {
    return this.code === 'Throttled' || this.code === 'Transient';
  }
}

export class NotFoundError extends StoreError {
  override readonly name = 'NotFoundError';
  readonly code = 'NotFound';
}

export class NoSuchBucketError extends StoreError {
  override readonly name = 'NoSuchBucketError';
  readonly code = 'NoSuchBucket';
}

export class AccessDeniedError extends StoreError {
  override readonly name = 'AccessDeniedError';
  readonly code = 'AccessDenied';
}

export class PreconditionFailedError extends StoreError {
  override readonly name = 'PreconditionFailedError';
  readonly code = 'PreconditionFailed';
}

export class ThrottledError extends StoreError {
  override readonly name = 'ThrottledError';
  readonly code = 'Throttled';
}

export class TransientError extends StoreError {
  override readonly name = 'TransientError';
  readonly code = 'Transient';
}

export class InvalidCredentialsError extends StoreError {
  override readonly name = 'InvalidCredentialsError';
  readonly code = 'InvalidCredentials';
}

export class InvalidRequestError extends StoreError {
  override readonly name = 'InvalidRequestError';
  readonly code = 'InvalidRequest';
}

export class AbortedError extends StoreError {
  override readonly name = 'AbortedError';
  readonly code = 'Aborted';
}

export function isStoreError(error: unknown): error is StoreError {
  return error instanceof StoreError;
}

/**
 * Codes of undici's errors after which the same request may succeed: the
 * connection closed or reset, or no bytes for the timeout. The S3 and GCS
 * stores download through undici. The AWS SDK's retry strategy retries
 * Node's socket error codes (ECONNRESET) but not these, so the S3 store
 * marks them retryable.
 */
export const UNDICI_TRANSIENT_CODES: ReadonlySet<string> = new Set([
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'UND_ERR_RES_CONTENT_LENGTH_MISMATCH',
]);
