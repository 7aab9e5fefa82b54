import { NoSuchBucket, NoSuchKey, S3ServiceException } from '@aws-sdk/client-s3';
import { describe, expect, it } from 'vitest';

import {
  AbortedError,
  AccessDeniedError,
  InvalidCredentialsError,
  InvalidRequestError,
  NoSuchBucketError,
  NotFoundError,
  PreconditionFailedError,
  ThrottledError,
  TransientError,
} from '../../src/store/errors.js';
import { toStoreError } from '../../src/store/s3-errors.js';

const context = { operation: 'get', bucket: 'bucket', key: 'dir/key' };

function serviceError(name: string, httpStatusCode: number, requestId = 'request-1'): S3ServiceException {
  return new S3ServiceException({ name, $fault: httpStatusCode >= 500 ? 'server' : 'client', $metadata: { httpStatusCode, requestId }, message: `${name} message` });
}

function networkError(code: string): Error {
  return Object.assign(new Error(`socket failed with ${code}`), { code });
}

describe('toStoreError', () => {
  const cases: Array<[string, unknown, abstract new (...args: never[]) => Error]> = [
    ['NoSuchKey class', new NoSuchKey({ $metadata: { httpStatusCode: 404, requestId: 'r' }, message: 'missing' }), NotFoundError],
    ['NoSuchBucket class', new NoSuchBucket({ $metadata: { httpStatusCode: 404, requestId: 'r' }, message: 'missing' }), NoSuchBucketError],
    ['HEAD 404 NotFound', serviceError('NotFound', 404), NotFoundError],
    ['NoSuchUpload', serviceError('NoSuchUpload', 404), NotFoundError],
    ['AccessDenied', serviceError('AccessDenied', 403), AccessDeniedError],
    ['HEAD 403 without code', serviceError('Forbidden', 403), AccessDeniedError],
    ['ExpiredToken', serviceError('ExpiredToken', 400), InvalidCredentialsError],
    ['InvalidAccessKeyId', serviceError('InvalidAccessKeyId', 403), InvalidCredentialsError],
    ['SignatureDoesNotMatch', serviceError('SignatureDoesNotMatch', 403), InvalidCredentialsError],
    ['InvalidToken', serviceError('InvalidToken', 400), InvalidCredentialsError],
    ['PreconditionFailed', serviceError('PreconditionFailed', 412), PreconditionFailedError],
    ['412 without code', serviceError('Unknown', 412), PreconditionFailedError],
    ['SlowDown', serviceError('SlowDown', 503), ThrottledError],
    ['429', serviceError('TooManyRequests', 429), ThrottledError],
    ['503 without code', serviceError('Unknown', 503), ThrottledError],
    ['InternalError', serviceError('InternalError', 500), TransientError],
    ['502', serviceError('BadGateway', 502), TransientError],
    ['ConditionalRequestConflict', serviceError('ConditionalRequestConflict', 409), TransientError],
    ['InvalidRange', serviceError('InvalidRange', 416), InvalidRequestError],
    ['400 other', serviceError('InvalidArgument', 400), InvalidRequestError],
    ['501 NotImplemented', serviceError('NotImplemented', 501), InvalidRequestError],
    ['ECONNRESET', networkError('ECONNRESET'), TransientError],
    ['ECONNREFUSED', networkError('ECONNREFUSED'), TransientError],
    ['cause with ETIMEDOUT', new Error('wrapped', { cause: networkError('ETIMEDOUT') }), TransientError],
    ['SDK TimeoutError', Object.assign(new Error('socket timed out'), { name: 'TimeoutError' }), TransientError],
    ['AbortError', Object.assign(new Error('aborted'), { name: 'AbortError' }), AbortedError],
  ];

  for (const [label, error, expected] of cases) {
    it(`maps ${label}`, () => {
      const mapped = toStoreError(error, context);

      expect(mapped).toBeInstanceOf(expected);
      expect(mapped.cause).toBe(error);
      expect(mapped.operation).toBe('get');
      expect(mapped.bucket).toBe('bucket');
      expect(mapped.key).toBe('dir/key');
    });
  }

  it('keeps request id, status and code', () => {
    const mapped = toStoreError(serviceError('SlowDown', 503, 'request-42'), context);

    expect(mapped.requestId).toBe('request-42');
    expect(mapped.httpStatus).toBe(503);
    expect(mapped.serviceCode).toBe('SlowDown');
    expect(mapped.message).toContain('request-42');
    expect(mapped.message).toContain('s3://bucket/dir/key');
  });

  it('status text is not a service code', () => {
    const mapped = toStoreError(serviceError('Forbidden', 403), context);

    expect(mapped.serviceCode).toBeUndefined();
  });

  it('fired signal makes any failure Aborted', () => {
    const controller = new AbortController();
    controller.abort();

    const mapped = toStoreError(networkError('ECONNRESET'), { ...context, signal: controller.signal });

    expect(mapped).toBeInstanceOf(AbortedError);
  });

  it('store errors pass through', () => {
    const original = new NotFoundError('missing', { operation: 'head', bucket: 'b' });

    expect(toStoreError(original, context)).toBe(original);
  });
});
