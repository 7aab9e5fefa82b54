/**
 * The edge where AWS SDK errors become `StoreError`s.
 *
 * `toStoreError` decides from the service error code (the SDK error `name`,
 * which is the `<Code>` of the S3 error document), then from the HTTP status,
 * then from Node.js network error codes, and never from message text. HEAD
 * responses have no body, so for them only the status is known: a HEAD 403 is
 * `AccessDeniedError` even when the credentials were the problem, and a HEAD
 * 404 is `NotFoundError` even when the bucket is missing.
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

export interface S3ErrorContext {
  operation: string;
  bucket: string;
  key?: string;
  /** The caller's signal: when it has fired, any failure is reported as `AbortedError`. */
  signal?: AbortSignal;
}

type StoreErrorConstructor = new (message: string, context: StoreErrorContext) => StoreError;

/** Service error codes whose meaning does not depend on the HTTP status. */
const ERROR_CLASS_BY_SERVICE_CODE: ReadonlyMap<string, StoreErrorConstructor> = new Map<string, StoreErrorConstructor>([
  ['NoSuchKey', NotFoundError],
  ['NotFound', NotFoundError],
  ['NoSuchUpload', NotFoundError],
  ['NoSuchBucket', NoSuchBucketError],

  ['AccessDenied', AccessDeniedError],
  ['AllAccessDisabled', AccessDeniedError],
  ['AccountProblem', AccessDeniedError],

  ['ExpiredToken', InvalidCredentialsError],
  ['ExpiredTokenException', InvalidCredentialsError],
  ['InvalidAccessKeyId', InvalidCredentialsError],
  ['InvalidClientTokenId', InvalidCredentialsError],
  ['InvalidToken', InvalidCredentialsError],
  ['SignatureDoesNotMatch', InvalidCredentialsError],
  ['TokenRefreshRequired', InvalidCredentialsError],

  ['PreconditionFailed', PreconditionFailedError],

  ['SlowDown', ThrottledError],
  ['Throttling', ThrottledError],
  ['ThrottlingException', ThrottledError],
  ['TooManyRequests', ThrottledError],
  ['TooManyRequestsException', ThrottledError],
  ['RequestLimitExceeded', ThrottledError],
  ['ServiceUnavailable', ThrottledError],

  ['InternalError', TransientError],
  ['RequestTimeout', TransientError],
  // The SDK corrects its clock offset from the response and retries, so a repeat is worth a retry too.
  ['RequestTimeTooSkewed', TransientError],
  // S3 asks the client to retry a conditional write that raced with another one (HTTP 409).
  ['ConditionalRequestConflict', TransientError],
  ['OperationAborted', TransientError],

  ['InvalidRange', InvalidRequestError],
  ['InvalidObjectState', InvalidRequestError],
  ['EntityTooSmall', InvalidRequestError],
  ['EntityTooLarge', InvalidRequestError],
  ['InvalidPart', InvalidRequestError],
  ['InvalidPartOrder', InvalidRequestError],
  ['NotImplemented', InvalidRequestError],
]);

/** Node.js socket and DNS error codes after which the same request may succeed. */
const NETWORK_ERROR_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ERR_STREAM_PREMATURE_CLOSE',
  ...UNDICI_TRANSIENT_CODES,
]);

/** SDK error names that are HTTP status texts, not S3 error codes (bodiless HEAD errors get these). */
const STATUS_TEXT_NAMES = new Set(['Forbidden', 'BadRequest', 'Unknown', 'Error', 'ServiceException', 'S3ServiceException']);

interface ErrorFacts {
  name: string | undefined;
  serviceCode: string | undefined;
  httpStatus: number | undefined;
  requestId: string | undefined;
  nodeCode: string | undefined;
  serviceMessage: string | undefined;
}

/** A failure of the credentials provider, raised before a request is signed. */
export class CredentialsUnavailableError extends Error {
  override readonly name = 'CredentialsUnavailableError';

  constructor(cause: unknown) {
    super('the credentials provider failed', { cause });
  }
}

/** Converts any failure of an S3 SDK call into a `StoreError`. A `StoreError` passes through unchanged. */
export function toStoreError(error: unknown, context: S3ErrorContext): StoreError {
  if (error instanceof StoreError) return error;

  const facts = factsOf(error);
  const storeContext: StoreErrorContext = {
    operation: context.operation,
    bucket: context.bucket,
    key: context.key,
    requestId: facts.requestId,
    httpStatus: facts.httpStatus,
    serviceCode: facts.serviceCode,
    cause: error,
  };
  const target = context.key === undefined ? `bucket ${context.bucket}` : `s3://${context.bucket}/${context.key}`;
  const detail = describeFacts(facts);

  if (facts.name === 'AbortError' || context.signal?.aborted === true) {
    return new AbortedError(`S3 ${context.operation} of ${target} was aborted`, storeContext);
  }
  if (error instanceof CredentialsUnavailableError) {
    const reason = error.cause instanceof Error ? error.cause.message : String(error.cause);
    return new InvalidCredentialsError(`S3 ${context.operation} of ${target} was not sent because no valid credentials could be obtained: ${reason}`, storeContext);
  }

  const errorClass = classify(facts);
  return new errorClass(messageFor(errorClass, context.operation, target, detail), storeContext);
}

/** Wraps a failure that happened after the SDK returned, such as a body that ended early, as a `TransientError`. */
export function responseBodyError(error: unknown, context: S3ErrorContext, requestId: string | undefined): StoreError {
  const target = context.key === undefined ? `bucket ${context.bucket}` : `s3://${context.bucket}/${context.key}`;
  const storeContext: StoreErrorContext = { operation: context.operation, bucket: context.bucket, key: context.key, requestId, cause: error };
  if (context.signal?.aborted === true) {
    return new AbortedError(`S3 ${context.operation} of ${target} was aborted while reading the response body`, storeContext);
  }
  const reason = error instanceof Error ? error.message : String(error);
  return new TransientError(`S3 ${context.operation} of ${target} failed while reading the response body (request id ${requestId ?? 'unknown'}): ${reason}`, storeContext);
}

function classify(facts: ErrorFacts): StoreErrorConstructor {
  if (facts.serviceCode !== undefined) {
    const byCode = ERROR_CLASS_BY_SERVICE_CODE.get(facts.serviceCode);
    if (byCode !== undefined) return byCode;
  }

  const status = facts.httpStatus;
  if (status !== undefined) {
    if (status === 404) return NotFoundError;
    if (status === 403 || status === 401) return AccessDeniedError;
    if (status === 412) return PreconditionFailedError;
    if (status === 429 || status === 503) return ThrottledError;
    if (status === 501) return InvalidRequestError;
    if (status >= 500) return TransientError;
    if (status >= 400) return InvalidRequestError;
  }

  if (facts.nodeCode !== undefined && NETWORK_ERROR_CODES.has(facts.nodeCode)) return TransientError;
  if (facts.name === 'TimeoutError') return TransientError;

  // Anything else happened between sending and parsing, such as an XML body cut short:
  // repeating the request is the useful reaction.
  return TransientError;
}

function messageFor(errorClass: StoreErrorConstructor, operation: string, target: string, detail: string): string {
  switch (errorClass) {
    case NotFoundError:
      return `S3 ${operation}: ${target} not found (${detail})`;
    case NoSuchBucketError:
      return `S3 ${operation}: bucket of ${target} does not exist (${detail}); check the bucket name, region and endpoint`;
    case AccessDeniedError:
      return `S3 ${operation} of ${target} was denied (${detail}); check that the role's policy allows this action on the bucket`;
    case InvalidCredentialsError:
      return `S3 ${operation} of ${target} was rejected because the credentials are invalid or expired (${detail})`;
    case PreconditionFailedError:
      return `S3 ${operation} of ${target} failed its precondition: the object changed or already exists (${detail})`;
    case ThrottledError:
      return `S3 ${operation} of ${target} was throttled (${detail}); retry with backoff`;
    case InvalidRequestError:
      return `S3 rejected ${operation} of ${target} as invalid (${detail})`;
    default:
      return `S3 ${operation} of ${target} failed with a transient error (${detail}); retrying may succeed`;
  }
}

function describeFacts(facts: ErrorFacts): string {
  const parts: string[] = [];
  if (facts.httpStatus !== undefined) parts.push(`HTTP ${facts.httpStatus}`);
  if (facts.serviceCode !== undefined) parts.push(facts.serviceCode);
  else if (facts.nodeCode !== undefined) parts.push(facts.nodeCode);
  else if (facts.name !== undefined) parts.push(facts.name);
  if (facts.serviceMessage !== undefined && facts.serviceMessage !== '' && facts.serviceMessage !== 'UnknownError') parts.push(facts.serviceMessage);
  parts.push(`request id ${facts.requestId ?? 'unknown'}`);
  return parts.join(', ');
}

function factsOf(error: unknown): ErrorFacts {
  const record = (typeof error === 'object' && error !== null ? error : {}) as Record<string, unknown>;
  const metadata = (record.$metadata ?? {}) as { httpStatusCode?: unknown; requestId?: unknown };
  const response = (record.$response ?? {}) as { statusCode?: unknown; headers?: Record<string, unknown> };

  const name = typeof record.name === 'string' ? record.name : undefined;
  const declaredCode = typeof record.Code === 'string' ? record.Code : name;
  const httpStatus = numberOrUndefined(metadata.httpStatusCode) ?? numberOrUndefined(response.statusCode);
  // A name such as 'Error' or 'TypeError' from a non-SDK error is not a service code.
  const isServiceError = httpStatus !== undefined || '$fault' in record;
  const serviceCode = isServiceError && declaredCode !== undefined && !STATUS_TEXT_NAMES.has(declaredCode) && !/^\d+$/.test(declaredCode) ? declaredCode : undefined;

  const headerRequestId = response.headers?.['x-amz-request-id'];
  const requestId = stringOrUndefined(metadata.requestId) ?? stringOrUndefined(headerRequestId);

  return {
    name,
    serviceCode,
    httpStatus,
    requestId,
    nodeCode: nodeErrorCode(error),
    serviceMessage: isServiceError && typeof record.message === 'string' ? record.message : undefined,
  };
}

/** Returns the Node.js error code of the error or of the first cause that has one. */
function nodeErrorCode(error: unknown): string | undefined {
  let current: unknown = error;
  for (let depth = 0; depth < 5 && typeof current === 'object' && current !== null; depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string') return code;
    current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}

function numberOrUndefined(value: unknown): number | undefined {
  return typeof value === 'number' && Number.isFinite(value) ? value : undefined;
}

function stringOrUndefined(value: unknown): string | undefined {
  return typeof value === 'string' && value !== '' ? value : undefined;
}
