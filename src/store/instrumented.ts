/**
 * An `ObjectStore` wrapper that counts every call for the metrics: duration,
 * outcome code, HTTP status class, calls in flight, object bytes moved and
 * multipart uploads in progress. It changes no result and no error.
 *
 * A call's outcome is `ok`, the `code` of the `StoreError` it rejected with,
 * or `unknown` for anything else (a bug, since stores reject only with
 * `StoreError`). Retries inside the SDK are part of one call here; the stores
 * report them separately through their `onRetry` hooks.
 *
 * Multipart uploads: an upload counts from a successful create until its
 * completion or abort succeeds. An abort that fails and goes to the
 * background retry keeps counting, because the upload still exists in the
 * bucket. `uploads` is changed only synchronously after each call settles.
 */

import { NotFoundError, StoreError } from './errors.js';
import { statusClassOf, type StoreMetricsRecorder, type StoreOperation } from '../observability/metrics.js';
import type {
  CompletedPart,
  CopyRequest,
  GetRequest,
  GetResult,
  ListPage,
  ListRequest,
  MultipartUploadInfo,
  ObjectInfo,
  ObjectStore,
  PutRequest,
  SignalOption,
} from './types.js';
import { bodyLength } from './types.js';

export class InstrumentedStore implements ObjectStore {
  readonly kind;
  readonly bucket;
  readonly limits;

  /** Upload ids created through this wrapper and not yet completed or aborted. */
  private readonly uploads = new Set<string>();

  constructor(
    private readonly inner: ObjectStore,
    private readonly metrics: StoreMetricsRecorder,
  ) {
    this.kind = inner.kind;
    this.bucket = inner.bucket;
    this.limits = inner.limits;
  }

  list(request: ListRequest): Promise<ListPage> {
    return this.measure('list', () => this.inner.list(request));
  }

  head(key: string, options?: SignalOption): Promise<ObjectInfo> {
    return this.measure('head', () => this.inner.head(key, options));
  }

  async get(key: string, request?: GetRequest): Promise<GetResult> {
    const result = await this.measure('get', () => this.inner.get(key, request));
    this.metrics.storeBytesTransferred('download', bodyLength(result));
    return result;
  }

  async put(key: string, body: Buffer, request?: PutRequest): Promise<ObjectInfo> {
    const info = await this.measure('put', () => this.inner.put(key, body, request));
    this.metrics.storeBytesTransferred('upload', body.length);
    return info;
  }

  async createMultipartUpload(key: string, options?: SignalOption & { contentType?: string }): Promise<string> {
    const uploadId = await this.measure('createMultipartUpload', () => this.inner.createMultipartUpload(key, options));
    this.uploads.add(uploadId);
    this.metrics.multipartUploadsChanged(1);
    return uploadId;
  }

  async uploadPart(key: string, uploadId: string, partNumber: number, body: Buffer, options?: SignalOption): Promise<CompletedPart> {
    const part = await this.measure('uploadPart', () => this.inner.uploadPart(key, uploadId, partNumber, body, options));
    this.metrics.storeBytesTransferred('upload', body.length);
    return part;
  }

  async completeMultipartUpload(key: string, uploadId: string, parts: CompletedPart[], options?: SignalOption): Promise<ObjectInfo> {
    const info = await this.measure('completeMultipartUpload', () => this.inner.completeMultipartUpload(key, uploadId, parts, options));
    this.uploadEnded(uploadId);
    return info;
  }

  async abortMultipartUpload(key: string, uploadId: string, options?: SignalOption): Promise<void> {
    try {
      await this.measure('abortMultipartUpload', () => this.inner.abortMultipartUpload(key, uploadId, options));
    } catch (error) {
      // The upload no longer exists, so it is not in progress either.
      if (error instanceof NotFoundError) this.uploadEnded(uploadId);
      throw error;
    }
    this.uploadEnded(uploadId);
  }

  listMultipartUploads(prefix: string, options?: SignalOption): Promise<MultipartUploadInfo[]> {
    return this.measure('listMultipartUploads', () => this.inner.listMultipartUploads(prefix, options));
  }

  copy(sourceKey: string, destinationKey: string, request?: CopyRequest): Promise<ObjectInfo> {
    return this.measure('copy', () => this.inner.copy(sourceKey, destinationKey, request));
  }

  delete(key: string, options?: SignalOption): Promise<void> {
    return this.measure('delete', () => this.inner.delete(key, options));
  }

  deleteMany(keys: string[], options?: SignalOption): Promise<void> {
    return this.measure('deleteMany', () => this.inner.deleteMany(keys, options));
  }

  private uploadEnded(uploadId: string): void {
    if (this.uploads.delete(uploadId)) this.metrics.multipartUploadsChanged(-1);
  }

  private async measure<T>(operation: StoreOperation, call: () => Promise<T>): Promise<T> {
    const started = performance.now();
    this.metrics.storeRequestStarted(operation);
    try {
      const result = await call();
      this.metrics.storeRequestFinished(operation, 'ok', '2xx', (performance.now() - started) / 1000);
      return result;
    } catch (error) {
      const code = error instanceof StoreError ? error.code : 'unknown';
      const statusClass = statusClassOf(error instanceof StoreError ? error.httpStatus : undefined);
      this.metrics.storeRequestFinished(operation, code, statusClass, (performance.now() - started) / 1000);
      throw error;
    }
  }
}
